#!/usr/bin/env python3
"""What the notebooks found at one scale, as a Markdown section, from the executed notebooks.

`./kit prepare` executes the lesson notebooks into `<cache>/runs/executed-<scale>/` and then runs this
script, which writes `report.md` there; with `--results RESULTS.md` it also replaces the section between
the markers `<!-- notebooks-report:<scale>:start -->` and `<!-- notebooks-report:<scale>:end -->` in that
file. Nothing here is typed by hand: for every notebook it takes

- the wall time of Run All (the sum of the cells' execution times that nbclient recorded) and the date,
- how many training cells loaded a finished run instead of training it,
- the lines the configuration cell printed (the data and the device, with bf16 on or off),
- everything the cells marked `{"selfsup": {"report": true}}` in their metadata printed on stdout:
  the notebook's verdicts (two-standard-error rule) and numbers, the activation-energy shares,

and, once for the section, the machine (CPU model, cores, native bf16) this script runs on, which is the
machine that executed the notebooks when `./kit prepare` calls it.
"""
import argparse
import datetime as dt
import glob
import os
import re
import sys

import nbformat

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_notebooks import problems_of, seconds  # noqa: E402


def machine():
    model, flags = "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags.split()]
    bf16 = f"native bf16 ({', '.join(native)})" if native else "no native bf16 (the notebooks train in float32)"
    return f"{os.cpu_count()} logical cores, {model}, {bf16}"


# Lines a training cell prints while it runs (progress bars, epoch summaries, checkpoint notes) and
# the machine's own paths: not findings.
NOISE = re.compile(r"█|^epoch \d+/\d+|^finished \d+ steps|checkpoint in |^runs in |^resuming |^max_steps reached")


def all_stdout(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def stdout_of(cell):
    text = all_stdout(cell)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip() and not NOISE.search(line))


def report_cells(name):
    """The ids of the cells marked for the report in the repository's copy of the notebook (the
    executed copy carries the marks it had when it ran; a mark added since counts too)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks", name + ".ipynb")
    if not os.path.exists(path):
        return set()
    nb = nbformat.read(path, as_version=4)
    return {c.get("id") for c in nb.cells if c.get("metadata", {}).get("selfsup", {}).get("report")}


def started_at(nb):
    for cell in nb.cells:
        stamp = cell.get("metadata", {}).get("execution", {}).get("iopub.execute_input")
        if stamp:
            return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None


def section(paths, scale, missing):
    """The Markdown section; appends to `missing` what is wrong (errors, silent verdict cells)."""
    lines = [f"Written by `scripts/lesson_report.py` from the notebooks executed at `{scale}` "
             f"(`./kit prepare --scale {scale}`) on: {machine()}. \"Finished runs loaded\" counts the training "
             "cells that found their run already trained and loaded it (a notebook may load a run it trained "
             "earlier in the same Run All, as 01's FAST-mode cell does; after `./kit prepare` every run loads).", ""]
    lines.append("| notebook | Run All | finished runs loaded | date (UTC) | errors |")
    lines.append("|---|---|---|---|---|")
    bodies = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        name = os.path.basename(path).removesuffix(".ipynb")
        times = [seconds(c) for c in nb.cells if c.cell_type == "code"]
        total = sum(t for t in times if t is not None)
        when = started_at(nb)
        problems = problems_of(nb)
        loaded = sum(text.count("finished run loaded") for c in nb.cells if c.cell_type == "code"
                     for text in [all_stdout(c)])
        lines.append(f"| `{name}` | {total / 60:.1f} min | {loaded} | {when:%Y-%m-%d %H:%M} | "
                     f"{len(problems) if problems else 'none'} |" if when else
                     f"| `{name}` | not executed | — | — | — |")
        body = [f"### `{name}`", ""]
        config = next((c for c in nb.cells if c.cell_type == "code" and "Scale::choose" in c.source), None)
        printed = [stdout_of(config)] if config is not None else []
        marked = report_cells(name)
        printed += [stdout_of(c) for c in nb.cells if c.cell_type == "code" and (
            c.get("id") in marked or c.get("metadata", {}).get("selfsup", {}).get("report"))]
        text = "\n".join(p for p in printed if p)
        if marked and not any(stdout_of(c) for c in nb.cells if c.get("id") in marked):
            missing.append(f"{name}: the cells marked for the report printed nothing")
        missing.extend(f"{name}: {msg[:200]}" for _, msg in problems)
        body += ["```text", text or "(the marked cells printed nothing)", "```", ""]
        if problems:
            body += [f"Errors: {len(problems)}; the first: {problems[0][1][:300]}", ""]
        bodies.append("\n".join(body))
    return "\n".join(lines) + "\n\n" + "\n".join(bodies)


def replace_between(path, scale, text):
    start, end = f"<!-- notebooks-report:{scale}:start -->", f"<!-- notebooks-report:{scale}:end -->"
    with open(path) as f:
        doc = f.read()
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in doc and end in doc:
        doc = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + f"\n\n## The notebooks at `{scale}` scale, as executed\n\n{block}\n"
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="the folder of executed notebooks (<cache>/runs/executed-<scale>)")
    ap.add_argument("--scale", default="lesson")
    ap.add_argument("--results", help="also write the section into this Markdown file (RESULTS.md)")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when a notebook has an error or its verdict cells printed nothing (./kit test)")
    args = ap.parse_args()
    paths = sorted(glob.glob(os.path.join(args.folder, "0*.ipynb")))
    if not paths:
        sys.exit(f"selfsup: error: no executed notebooks in {args.folder}; run ./kit prepare --scale {args.scale} first")
    missing = []
    text = section(paths, args.scale, missing)
    out = os.path.join(args.folder, "report.md")
    with open(out, "w") as f:
        f.write(text)
    print(f"the {args.scale} report of {len(paths)} notebook(s): {out}", flush=True)
    if args.results:
        replace_between(args.results, args.scale, text)
        print(f"written into {args.results}", flush=True)
    for line in missing:
        print(f"  {line}", flush=True)
    if args.check and missing:
        sys.exit(1)


if __name__ == "__main__":
    main()
