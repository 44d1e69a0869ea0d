"""nbgrader for the kit's Rust notebooks: the preprocessors that `scripts/nbgrader_config.py` installs.

Why a preprocessor: nbgrader grades a test cell by its outputs — an `error` output (or, since
nbgrader 0.9, text on stderr) scores zero. The evcxr kernel reports a compile error as an
`error` output, but a panic (a failed `assert!`, a `todo!()` of an unsolved exercise) and an
`Err` returned through `?` come only as text on the cell's stderr, and evcxr relays that text on
its own thread: it can reach Jupyter after the cell has been reported finished, where nbclient,
which nbgrader's Execute preprocessor is built on, drops it. A failed check would then keep its
points. `RustExecute` fixes that where it arises, in the execution:

* after every exercise and test cell it asks the kernel to print a marker on stderr and reads the
  kernel's output until the marker comes back, so every line the cell wrote to stderr is filed
  under that cell (the kernel writes a cell's stderr before it runs the next request, and relays
  it in order); other cells get a short wait instead (as `run_notebooks.py` does);
* any text a code cell wrote to stderr becomes an `error` output as well (ename `RustPanic` for a
  panic, `RustError` otherwise), so every nbgrader version, and the feedback, sees a failure;
* the kit's first cell `:dep selfsup = { path = ".." }` names the crate relative to the
  notebook; nbgrader runs notebooks in its own folders, so while it executes that cell the path
  is the kit's absolute path (the saved source keeps the original line).

`answer-key` is the cell tag of the answer key (what the teacher's run found, after each written
question): `generate_assignment` removes those cells with nbconvert's TagRemovePreprocessor.
"""
import asyncio
import os
import queue
import re
import uuid

import nbformat
from nbclient.exceptions import CellExecutionComplete
from jupyter_core.utils import run_sync
from nbclient.util import ensure_async
from nbgrader.preprocessors import Execute

KIT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSWER_KEY_TAG = "answer-key"
LATE_WAIT_S = 0.4
FLUSH_TIMEOUT_S = 120
DEP_LINE = re.compile(r'^(\s*:dep\s+selfsup\s*=\s*\{\s*path\s*=\s*)"([^"]*)"', re.M)


def scale_timeout():
    """Seconds one cell may run: SELFSUP_CELL_TIMEOUT, else 1800 at the small scales and no limit
    at `demo` and `full` (a training cell there can take hours)."""
    if os.environ.get("SELFSUP_CELL_TIMEOUT"):
        return int(os.environ["SELFSUP_CELL_TIMEOUT"])
    return 1800 if os.environ.get("SELFSUP_SCALE", "smoke") in ("smoke", "lesson") else None


def is_graded_or_exercise(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and (meta.get("grade") or meta.get("solution"))


class RustExecute(Execute):
    """nbgrader's Execute for the evcxr kernel: failures on stderr count (see the module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cells_by_msg = {}
        self._flush_owner = {}

    def on_cell_executed(self, **kwargs):
        """evcxr answers a compile error with an error reply that lacks `ename`, `evalue` and
        `traceback` (the protocol requires them); nbgrader's Execute then stops the whole notebook
        with a KeyError. Fill them in from the cell's error output first."""
        content = kwargs["execute_reply"]["content"]
        if content.get("status") == "error" and "ename" not in content:
            first = next((o for o in kwargs["cell"].outputs if o.get("output_type") == "error"), None)
            content["ename"] = first.get("ename", "Error") if first else "Error"
            content["evalue"] = first.get("evalue", "") if first else "the cell failed"
            content["traceback"] = first.get("traceback", []) if first else []
        return super().on_cell_executed(**kwargs)

    # ---- late output, as scripts/run_notebooks.py
    def _file(self, msg, cell):
        content = msg["content"]
        if msg["msg_type"] == "stream":
            cell.outputs.append(nbformat.v4.new_output("stream", name=content["name"], text=content["text"]))
        elif msg["msg_type"] == "error":
            cell.outputs.append(nbformat.v4.new_output(
                "error", ename=content.get("ename", ""), evalue=content.get("evalue", ""),
                traceback=content.get("traceback", [])))
        elif msg["msg_type"] == "display_data":
            cell.outputs.append(nbformat.v4.new_output("display_data", data=content.get("data", {})))

    def _file_late(self, msg):
        parent = msg["parent_header"].get("msg_id")
        target = self._cells_by_msg.get(parent) or self._flush_owner.get(parent)
        if target is not None and msg["msg_type"] in ("stream", "error", "display_data"):
            self._file(msg, target[0])

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        self._cells_by_msg[parent_msg_id] = (cell, cell_index)
        while True:
            msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=None))
            if msg["parent_header"].get("msg_id") == parent_msg_id:
                try:
                    self.process_message(msg, cell, cell_index)
                except CellExecutionComplete:
                    return
            else:
                self._file_late(msg)

    async def _flush(self, cell, cell_index):
        """Runs `eprintln!(marker)` and files everything before the marker under `cell`."""
        marker = f"selfsup-flush-{uuid.uuid4().hex}"
        msg_id = self.kc.execute(f'eprintln!("{marker}");', silent=False, store_history=False)
        self._flush_owner[msg_id] = (cell, cell_index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT_S
        seen_marker = idle = False
        while not (seen_marker and idle) and loop.time() < deadline:
            try:
                msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=1))
            except queue.Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent == msg_id:
                if msg["msg_type"] == "stream" and marker in msg["content"].get("text", ""):
                    seen_marker = True
                    rest = msg["content"]["text"].replace(marker + "\n", "").replace(marker, "")
                    if rest.strip():
                        msg["content"]["text"] = rest
                        self._file(msg, cell)
                elif msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                    idle = True
                elif msg["msg_type"] == "stream":
                    self._file(msg, cell)
            else:
                self._file_late(msg)
        # the flush request's reply on the shell channel
        while True:
            try:
                reply = await ensure_async(self.kc.shell_channel.get_msg(timeout=5))
            except queue.Empty:
                break
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self._flush_owner.pop(msg_id, None)

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        original = cell.source
        if cell.cell_type == "code":
            cell.source = DEP_LINE.sub(lambda m: self._absolute_dep(m), cell.source)
        try:
            result = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        finally:
            cell.source = original
        if cell.cell_type == "code" and self.kc is not None:
            if is_graded_or_exercise(cell):
                await self._flush(cell, cell_index)
            else:
                await asyncio.sleep(LATE_WAIT_S)
                while True:
                    try:
                        msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=0.05))
                    except queue.Empty:
                        break
                    self._file_late(msg)
            mark_stderr_as_error(cell)
        return result

    # nbclient binds execute_cell to its own async_execute_cell; nbconvert's preprocess_cell calls it
    execute_cell = run_sync(async_execute_cell)

    def _absolute_dep(self, m):
        if os.path.isabs(m.group(2)):
            return m.group(0)
        return f'{m.group(1)}"{os.environ.get("SELFSUP_ROOT", KIT_ROOT)}"'


def mark_stderr_as_error(cell):
    """Adds an `error` output to a code cell that wrote to stderr (a panic or a `?` error)."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stderr")
    if not text.strip() or any(o.get("output_type") == "error" for o in cell.outputs):
        return
    lines = [l for l in text.strip().splitlines() if l.strip()]
    panic = next((i for i, l in enumerate(lines) if "panicked at" in l), None)
    if panic is not None:
        ename, evalue = "RustPanic", " ".join(lines[panic:panic + 2])
    else:
        ename, evalue = "RustError", lines[0]
    cell.outputs.append(nbformat.v4.new_output("error", ename=ename, evalue=evalue[:2000], traceback=lines[:50]))
