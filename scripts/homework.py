#!/usr/bin/env python3
"""The teacher's side of the kit's notebook homework: release, autograde, scores, and the test.

    ./kit homework release  [NOTEBOOK ...]          student versions into <course>/release/
    ./kit homework autograde NOTEBOOK [--student ID] grade <course>/submitted/<ID>/<assignment>/
    ./kit homework scores   [NOTEBOOK]               every student's points per check
    ./kit homework test                              the grading test (part of ./kit test)

The course folder is nbgrader's (source/, release/, submitted/, autograded/, gradebook.db):
$SELFSUP_COURSE, else <kit>/course. Each notebook is its own assignment, named after the file
(03_stl10_homework). Autograding runs the Rust kernel at the scale SELFSUP_SCALE names, else smoke:
the graded checks do not depend on the scale, only the training cells' run time does.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_NOTEBOOKS = ["03_stl10_homework"]
EXERCISE_NOTEBOOKS = ["01_moco_v2_seminar", "03_stl10_homework", "04_barlow_twins_label_fractions", "05_moco_code_reading"]


def say(msg):
    print(f"\033[1mselfsup:\033[0m {msg}", file=sys.stderr, flush=True)


def assignment_of(name):
    return os.path.splitext(os.path.basename(name))[0]


def notebook_path(name):
    stem = assignment_of(name)
    path = os.path.join(ROOT, "notebooks", stem + ".ipynb")
    if not os.path.isfile(path):
        sys.exit(f"selfsup: error: no notebook notebooks/{stem}.ipynb (the exercises are in: {', '.join(EXERCISE_NOTEBOOKS)})")
    return path


def make_course(course):
    """A course folder whose nbgrader_config.py loads the kit's settings."""
    os.makedirs(os.path.join(course, "source"), exist_ok=True)
    with open(os.path.join(course, "nbgrader_config.py"), "w") as f:
        f.write("# Made by ./kit homework: the selfsup kit's settings for Rust notebooks.\n"
                "c = get_config()\n"
                f"load_subconfig({os.path.join(HERE, 'nbgrader_config.py')!r})\n"
                f"c.CourseDirectory.root = {os.path.abspath(course)!r}\n")


def nbgrader(course, *args, check=True):
    bindir = os.path.dirname(sys.executable)  # the venv's: nbgrader runs `alembic` from PATH
    # SELFSUP_PREPARED_RUNS empty: a submission trains its own runs, never loads the ones a teacher
    # prepared with the solution for class (the kernel would otherwise look in the cache).
    env = dict(os.environ, SELFSUP_ROOT=ROOT, SELFSUP_PREPARED_RUNS="", PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    cmd = [os.path.join(bindir, "nbgrader"), *args]
    r = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-8000:])
        sys.exit(f"selfsup: error: `nbgrader {' '.join(args)}` failed (exit {r.returncode}); its log is above")
    return r


def release(course, names, source_override=None):
    """Copies each notebook into source/<assignment>/ and runs nbgrader generate_assignment."""
    make_course(course)
    out = []
    for name in names:
        a = assignment_of(name)
        src_dir = os.path.join(course, "source", a)
        os.makedirs(src_dir, exist_ok=True)
        shutil.copy(source_override or notebook_path(name), os.path.join(src_dir, a + ".ipynb"))
        nbgrader(course, "generate_assignment", a, "--force", "--create")
        out.append(os.path.join(course, "release", a, a + ".ipynb"))
    return out


def autograde(course, name, student=None):
    a = assignment_of(name)
    args = ["autograde", a, "--force", "--create"]
    if student:
        args.append(f"--student={student}")
    nbgrader(course, *args)
    return scores(course, a)


def scores(course, assignment):
    """{student: {cell: (score, max)}} from the gradebook."""
    sys.path.insert(0, HERE)
    from nbgrader.api import Gradebook
    result = {}
    with Gradebook(f"sqlite:///{os.path.join(course, 'gradebook.db')}") as gb:
        for sub in gb.assignment_submissions(assignment):
            cells = {}
            for nb in sub.notebooks:
                for g in nb.grades:
                    cells[g.name] = (g.score, g.max_score)
            result[sub.student_id] = cells
    return result


def print_scores(table):
    for student, cells in sorted(table.items()):
        got = sum(s for s, _ in cells.values() if s is not None)
        total = sum(m for _, m in cells.values())
        print(f"{student}: {got:g} / {total:g}")
        for name, (s, m) in sorted(cells.items()):
            print(f"  {name}: {'ungraded' if s is None else f'{s:g}'} / {m:g}")


# ------------------------------------------------------------------------------------- the test

def graded_cells(nb):
    return {c.metadata.nbgrader["grade_id"]: c for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}


def exercise_checks(nb):
    """The grade ids of the automatic checks (code test cells)."""
    return sorted(gid for gid, c in graded_cells(nb).items() if not c.metadata.nbgrader.get("solution"))


def submit(course, student, assignment, nb_path):
    d = os.path.join(course, "submitted", student, assignment)
    os.makedirs(d, exist_ok=True)
    shutil.copy(nb_path, os.path.join(d, assignment + ".ipynb"))
    with open(os.path.join(d, "timestamp.txt"), "w") as f:
        f.write("2026-01-01 00:00:00.000000 UTC")


def break_nt_xent(nb):
    """The source notebook with NT-Xent's self-similarity left unmasked (a classic mistake)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "nt_xent_solution":
            before = c.source
            c.source = re.sub(r"let logits = sim\.masked_fill\(&self_mask, f64::NEG_INFINITY\);",
                              "let logits = sim; // self-similarity left in", c.source)
            assert c.source != before, "the NT-Xent solution no longer has the masking line this test edits"
    return nb


def test(keep=False):
    """The grading test of notebook 03 at the current scale (smoke by default); exits 1 on failure."""
    os.environ.setdefault("SELFSUP_SCALE", "smoke")
    name = "03_stl10_homework"
    src = nbformat.read(notebook_path(name), as_version=4)
    checks = exercise_checks(src)
    failures = []

    def expect(ok, what):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            failures.append(what)

    course = tempfile.mkdtemp(prefix="selfsup-course-")
    t0 = time.time()
    print(f"homework test: course folder {course}, scale {os.environ['SELFSUP_SCALE']}, checks {checks}", flush=True)
    if not checks:
        print("homework test: FAILED (the notebook has no graded checks)")
        sys.exit(1)

    # 1. release
    (released,) = release(course, [name])
    student = nbformat.read(released, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    src_text = "\n".join(c.source for c in src.cells)
    expect("BEGIN SOLUTION" not in text and "END SOLUTION" not in text, "release: no solution markers left")
    expect("HIDDEN TESTS" not in text, "release: no hidden tests left")
    for c in src.cells:  # every line of a solution region is gone
        if c.cell_type == "code" and "// BEGIN SOLUTION" in c.source:
            region = re.findall(r"// BEGIN SOLUTION\n(.*?)\n\s*// END SOLUTION", c.source, re.S)
            for body in region:
                for line in body.splitlines():
                    if line.strip() and len(line.strip()) > 12:
                        if line.strip() in text and src_text.count(line.strip()) == 1:
                            expect(False, f"release: solution line still there: {line.strip()[:60]}")
    stubbed = [c for c in student.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
    expect(stubbed and all('todo!("your code here")' in c.source for c in stubbed),
           f"release: the {len(stubbed)} exercise cells hold the stub todo!(\"your code here\")")
    expect(not any("answer-key" in c.metadata.get("tags", []) for c in student.cells), "release: no answer-key cells")

    # 2. the source notebook as a submission: full points
    submit(course, "teacher", name, os.path.join(course, "source", name, name + ".ipynb"))
    # 3. the released, unsolved notebook: zero on every check, and it runs to the end
    submit(course, "unsolved", name, released)
    # 4. a wrong NT-Xent: exactly that check's points lost
    wrong = os.path.join(course, "wrong.ipynb")
    nbformat.write(break_nt_xent(src), wrong)
    submit(course, "wrong_nt_xent", name, wrong)
    for who in ("teacher", "unsolved", "wrong_nt_xent"):
        t = time.time()
        nbgrader(course, "autograde", name, f"--student={who}", "--force", "--create")
        print(f"  autograded {who} in {time.time() - t:.0f} s", flush=True)
    table = scores(course, name)
    auto = lambda who: {k: v for k, v in table.get(who, {}).items() if k in checks}

    full = auto("teacher")
    expect(full and all(s == m for s, m in full.values()),
           "source notebook: full points on every check " + str({k: s for k, (s, _) in full.items()}))
    zero = auto("unsolved")
    expect(zero and all(s == 0 for s, _ in zero.values()),
           "unsolved notebook: zero on every check " + str({k: s for k, (s, _) in zero.items()}))
    graded = nbformat.read(os.path.join(course, "autograded", "unsolved", name, name + ".ipynb"), as_version=4)
    unexecuted = [i for i, c in enumerate(graded.cells) if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None]
    expect(not unexecuted, f"unsolved notebook: every code cell ran (not run: {unexecuted})")
    wrong_scores = auto("wrong_nt_xent")
    lost = sorted(k for k, (s, m) in wrong_scores.items() if s != m)
    expect(lost == [c for c in checks if c.startswith("nt_xent")],
           f"wrong NT-Xent: lost exactly the NT-Xent checks' points (lost: {lost})")

    took = time.time() - t0
    if failures:
        print(f"homework test: FAILED ({len(failures)} of the expectations above) in {took:.0f} s; course folder kept: {course}")
        sys.exit(1)
    print(f"homework test: passed in {took:.0f} s")
    if not keep:
        shutil.rmtree(course, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("release", help="student versions into <course>/release/")
    r.add_argument("notebooks", nargs="*", default=DEFAULT_NOTEBOOKS)
    g = sub.add_parser("autograde", help="grade <course>/submitted/*/<assignment>/")
    g.add_argument("notebook", nargs="?", default=DEFAULT_NOTEBOOKS[0])
    g.add_argument("--student")
    s = sub.add_parser("scores", help="points per student and check")
    s.add_argument("notebook", nargs="?", default=DEFAULT_NOTEBOOKS[0])
    t = sub.add_parser("test", help="the grading test")
    t.add_argument("--keep", action="store_true", help="keep the temporary course folder")
    args = ap.parse_args()
    course = os.path.abspath(os.environ.get("SELFSUP_COURSE", os.path.join(ROOT, "course")))
    if args.cmd == "release":
        for path in release(course, args.notebooks):
            say(f"student version: {path}")
        say(f"hand these out; collect submissions into {course}/submitted/<student>/<assignment>/<assignment>.ipynb")
    elif args.cmd == "autograde":
        # The graded checks do not depend on the scale; the training cells do, and a lesson-sized
        # run per submission would take a class period each. So grading runs at smoke unless told.
        os.environ.setdefault("SELFSUP_SCALE", "smoke")
        say(f"grading at scale {os.environ['SELFSUP_SCALE']} (set SELFSUP_SCALE to grade at another; the checks are the same)")
        if not os.path.isdir(os.path.join(course, "source", assignment_of(args.notebook))):
            release(course, [args.notebook])
        print_scores(autograde(course, args.notebook, args.student))
        say(f"graded notebooks with feedback: {course}/autograded/; `nbgrader generate_feedback` in {course} makes HTML")
    elif args.cmd == "scores":
        print_scores(scores(course, assignment_of(args.notebook)))
    else:
        test(args.keep)


if __name__ == "__main__":
    main()
