# nbgrader settings for the kit's Rust (evcxr) notebooks.
#
# A course folder made by `./kit homework release` loads this file from its own
# nbgrader_config.py (`load_subconfig`), so `nbgrader ...` run there grades Rust:
#   - solution regions are marked with Rust comments, `// BEGIN SOLUTION` … `// END SOLUTION`,
#     and become `todo!("your code here")` in the student version (it compiles wherever an
#     expression may stand: a function's body, an `impl` method's body);
#   - hidden tests sit between `// BEGIN HIDDEN TESTS` and `// END HIDDEN TESTS` in test cells;
#   - cells tagged `answer-key` (what the teacher's run found) are left out of the student version;
#   - autograding executes with selfsup_nbgrader.RustExecute, which makes a panic or an `Err`
#     returned by `?` cost the cell's points (evcxr reports both only on stderr, late), and points
#     the `:dep selfsup` line at this kit.
import os
import sys

from nbconvert.preprocessors import TagRemovePreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    IgnorePattern,
    IncludeHeaderFooter,
    InstantiateTests,
    LimitOutput,
    LockCells,
    SaveAutoGrades,
    SaveCells,
)
from nbconvert.preprocessors import ClearMetadataPreprocessor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from selfsup_nbgrader import ANSWER_KEY_TAG, RustExecute, scale_timeout  # noqa: E402

c = get_config()  # noqa: F821 (defined by traitlets when it loads this file)

c.ClearSolutions.begin_solution_delimeter = "// BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "// END SOLUTION"
c.ClearSolutions.code_stub = {"rust": 'todo!("your code here")'}
c.ClearSolutions.text_stub = "*(write your answer here)*"
c.ClearHiddenTests.begin_test_delimeter = "// BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "// END HIDDEN TESTS"
c.TagRemovePreprocessor.remove_cell_tags = {ANSWER_KEY_TAG}
c.TagRemovePreprocessor.enabled = True

# nbgrader's own list, with the answer key removed after the checksums of the graded cells.
c.GenerateAssignment.preprocessors = [
    IncludeHeaderFooter,
    InstantiateTests,
    LockCells,
    ClearSolutions,
    ClearOutput,
    CheckCellMetadata,
    ComputeChecksums,
    SaveCells,
    ClearHiddenTests,
    ClearMarkScheme,
    TagRemovePreprocessor,
    ComputeChecksums,
    CheckCellMetadata,
]

c.Autograde.autograde_preprocessors = [
    RustExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# The first cell compiles the kit inside the kernel (minutes when the build folder is cold) and
# training cells run for as long as the scale asks.
c.RustExecute.timeout = scale_timeout()
c.RustExecute.startup_timeout = 300
c.Execute.timeout = scale_timeout()
c.Execute.startup_timeout = 300
# Training prints progress; keep what a grader needs to read.
c.LimitOutput.max_lines = 2000
