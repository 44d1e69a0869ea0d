#!/usr/bin/env python3
"""Execute notebooks through the "Rust (selfsup)" kernel and fail on any error.

Used by `./kit test` (every notebook) and `./kit open --headless` (the getting-started one).

evcxr does not always report failures the way Jupyter expects: a compile error arrives as an
`error` output, but a panic or an `Err` returned by `?` shows up only as text on the cell's
stderr (for `?`, just the error's message) while the cell still counts as executed. So besides
`error` outputs this fails on any text a cell writes to stderr (the kit prints progress and
results on stdout), scans stdout for the markers of a crash, and checks that every code cell ran.

Notebooks write their own scale (01: `lesson`); this runner sets SELFSUP_SCALE, which overrides it,
to `--scale` (default: SELFSUP_SCALE if set, else `smoke`, the tests' scale), so a test run never
trains at a lesson's size by accident. `--runs DIR` sets SELFSUP_RUNS (where the notebooks keep
their run folders; default: runs/ next to each notebook, and not the runs `./kit prepare` trained).

Each notebook's line gives two times: the wall time of this runner (the kernel's start included, and
LATE_WAIT_S after every cell, which Jupyter does not wait) and the sum of its cells' own times, which is
what Run All costs in Jupyter with the kernel already started.

A notebook may ask for key figures in its metadata: {"selfsup": {"min_images": 3}} fails the
run if fewer image outputs come out.

`--trains-nothing` checks ./kit prepare's promise: run over a runs folder that a first pass (or
./kit prepare) filled, a notebook must load every finished run and write nothing there. Every file
under the runs folder is compared (size and modification time) before and after each notebook;
a run the notebook restarts on purpose is named, with the reason, in its metadata:
{"selfsup": {"rewrites": {"run_b": "why"}}}.
"""
import argparse
import asyncio
import datetime as dt
import queue
import os
import re
import sys
import time

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async

# evcxr relays a cell's stderr (where a `?` error's message goes) on its own thread, so the text
# can reach Jupyter after the cell has already been reported finished. nbclient drops such late
# messages; this client keeps them and files them under the cell they belong to.
LATE_WAIT_S = 0.4


class Client(NotebookClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cells_by_msg = {}

    def _file_late(self, msg):
        target = self._cells_by_msg.get(msg["parent_header"].get("msg_id"))
        if target is None or msg["msg_type"] not in ("stream", "error", "display_data"):
            return
        cell, _ = target
        content = msg["content"]
        if msg["msg_type"] == "stream":
            cell.outputs.append(nbformat.v4.new_output("stream", name=content["name"], text=content["text"]))
        elif msg["msg_type"] == "error":
            cell.outputs.append(nbformat.v4.new_output("error", ename=content.get("ename", ""),
                                                       evalue=content.get("evalue", ""), traceback=content.get("traceback", [])))
        else:
            cell.outputs.append(nbformat.v4.new_output("display_data", data=content.get("data", {})))

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

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        result = await super().async_execute_cell(cell, cell_index, *args, **kwargs)
        if cell.cell_type == "code" and self.kc is not None:
            await asyncio.sleep(LATE_WAIT_S)
            while True:
                try:
                    msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=0.05))
                except queue.Empty:
                    break
                self._file_late(msg)
        return result

# Text that only appears when something went wrong in a Rust cell.
ERROR_PATTERNS = [
    re.compile(r"panicked at"),
    re.compile(r"^Error: ", re.M),
    re.compile(r"^error(\[E\d{4}\])?: ", re.M),
    re.compile(r"Child process terminated"),
    re.compile(r"Subprocess terminated"),
    re.compile(r"selfsup: could not display"),
    re.compile(r"^selfsup: error", re.M),
]


def seconds(cell):
    """Wall time of one executed cell from nbclient's timing metadata."""
    ex = cell.get("metadata", {}).get("execution", {})
    start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def problems_of(nb):
    """Every sign of failure in an executed notebook, as (cell index, message)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.source.strip() and cell.get("execution_count") is None:
            found.append((i, "cell was not executed"))
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                text = f"{out.get('ename', '')}: {out.get('evalue', '')}"
                found.append((i, text.strip() or "error output"))
            elif out.output_type == "stream" and out.name == "stderr" and out.text.strip():
                found.append((i, "stderr: " + out.text.strip()[:600]))
            elif out.output_type == "stream":
                for pat in ERROR_PATTERNS:
                    m = pat.search(out.text)
                    if m:
                        line = out.text[max(0, m.start() - 200): m.end() + 300].strip()
                        found.append((i, f"{out.name}: {line}"))
                        break
    return found


def count_images(nb):
    return sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type in ("display_data", "execute_result") and "image/png" in out.get("data", {})
    )


def snapshot(root):
    """Every file under `root`: relative path -> (size, modification time in ns)."""
    files = {}
    for folder, _, names in os.walk(root):
        for n in names:
            full = os.path.join(folder, n)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # removed while walking (a temporary file)
                continue
            files[os.path.relpath(full, root)] = (st.st_size, st.st_mtime_ns)
    return files


def written(before, after, rewrites):
    """Paths created, changed or removed between two snapshots, except under the runs the
    notebook restarts on purpose (`rewrites`: run folder names inside the notebook's folder)."""
    paths = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    # A run folder's `.lock` is opened by every reader and writer of the run: not a write of results.
    paths = [p for p in paths if os.path.basename(p) != ".lock"]
    return [p for p in paths if not (len(p.split(os.sep)) > 1 and p.split(os.sep)[1] in rewrites)]


def run(path, kernel, out_dir, timeout, warm=False, unchanged=None):
    nb = nbformat.read(path, as_version=4)
    name = os.path.basename(path)
    if warm:  # only the first code cell, the `:dep selfsup` line: it compiles tch and the crate
        nb.cells = [next(c for c in nb.cells if c.cell_type == "code")]
    client = Client(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        startup_timeout=300,
        allow_errors=True,
        record_timing=True,
        resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
    )
    before = snapshot(unchanged) if unchanged else None
    t0 = time.time()
    crash = None
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        sys.exit(f"selfsup: error: the Jupyter kernel '{kernel}' is not installed in this Python environment; "
                 "run ./kit open or ./kit test, which install it into the kit's venv")
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError, RuntimeError) as e:
        crash = f"{type(e).__name__}: {str(e)[:2000]}"
    elapsed = time.time() - t0
    if warm:
        problems = problems_of(nb) + ([(-1, crash)] if crash else [])
        print(f"the kernel compiled the crate ({name}'s first cell) in {elapsed:.0f} s"
              + (": FAILED" if problems else ""), flush=True)
        for i, msg in problems:
            print(f"  {msg}", flush=True)
        return not problems
    os.makedirs(out_dir, exist_ok=True)
    nbformat.write(nb, os.path.join(out_dir, name))

    problems = problems_of(nb)
    if crash:
        problems.append((-1, crash))
    want = nb.metadata.get("selfsup", {}).get("min_images", 0)
    images = count_images(nb)
    if images < want:
        problems.append((-1, f"{images} image outputs, the notebook's metadata asks for at least {want}"))
    if unchanged:
        rewrites = nb.metadata.get("selfsup", {}).get("rewrites", {})
        changed = written(before, snapshot(unchanged), rewrites)
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            problems.append((-1, f"wrote {len(changed)} file(s) in the runs folder, which a run over finished runs "
                                 f"must only read (a training cell trained again?): {shown}"))

    times = [seconds(c) for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    times = [t for t in times if t is not None]
    first = f"{times[0]:.1f} s" if times else "n/a"
    slowest_rest = f"{max(times[1:]):.1f} s" if len(times) > 1 else "n/a"
    status = "FAILED" if problems else "passed"
    # The cells' own time is what Run All costs in Jupyter; the wall time adds the kernel's start and
    # this runner's LATE_WAIT_S after every cell.
    print(
        f"{name}: {status} in {elapsed:.1f} s (its {len(times)} cells {sum(times):.1f} s; first cell {first}, "
        f"slowest other cell {slowest_rest}), "
        f"{images} images -> {os.path.join(out_dir, name)}",
        flush=True,
    )
    for i, msg in problems:
        where = f"cell {i}" if i >= 0 else "notebook"
        print(f"  {where}: {msg}", flush=True)
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--kernel", default="selfsup-rust")
    ap.add_argument("--out", default="notebooks/out")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("SELFSUP_CELL_TIMEOUT", "1800")),
                    help="seconds one cell may run (default 1800, env SELFSUP_CELL_TIMEOUT)")
    ap.add_argument("--scale", choices=["smoke", "lesson", "demo", "full"],
                    default=os.environ.get("SELFSUP_SCALE", "").strip().lower() or "smoke",
                    help="the scale every notebook runs at (default: $SELFSUP_SCALE, else smoke)")
    ap.add_argument("--runs", help="folder for the notebooks' runs (SELFSUP_RUNS; default runs/ next to each notebook)")
    ap.add_argument("--trains-nothing", action="store_true",
                    help="fail a notebook that writes anything in the --runs folder (every run there is finished)")
    ap.add_argument("--warm", action="store_true",
                    help="run only the first code cell (`:dep selfsup`), so the kernel's warm build folder "
                         "holds tch and the crate before a person opens a notebook; writes no output")
    args = ap.parse_args()
    if args.trains_nothing and not args.runs:
        ap.error("--trains-nothing needs --runs: the folder of finished runs to check")
    os.environ["SELFSUP_SCALE"] = args.scale  # the kernel inherits this process's environment
    if args.runs:
        os.environ["SELFSUP_RUNS"] = os.path.abspath(args.runs)
    else:  # runs/ next to each notebook, never the runs ./kit prepare trained into the cache
        os.environ.pop("SELFSUP_RUNS", None)
        os.environ["SELFSUP_PREPARED_RUNS"] = ""
    if args.warm:
        sys.exit(0 if all(run(p, args.kernel, args.out, args.timeout, warm=True) for p in args.notebooks) else 1)
    print(f"scale {args.scale}; runs in {os.environ.get('SELFSUP_RUNS', 'runs/ next to each notebook')}", flush=True)
    passed = failed = 0
    for path in sorted(args.notebooks):
        if run(path, args.kernel, args.out, args.timeout, unchanged=os.environ["SELFSUP_RUNS"] if args.trains_nothing else None):
            passed += 1
        else:
            failed += 1
    print(f"notebooks: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
