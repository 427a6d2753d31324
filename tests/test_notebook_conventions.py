"""The committed notebooks keep the course's conventions: a header saying what the learner builds, a papermill
``parameters`` cell followed by the setup cell, one figure style and image format, Further reading at the end, run
metadata stripped, no machine paths in outputs, and at most 1 MB each."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import matplotlib as mpl
import nbformat
import pytest

from anncore.course.style import COURSE_RC, IMAGE_FORMAT, use_course_style

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NUMBERED = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 1_000_000
#: Absolute paths of the machine that ran the notebooks (the checkout, the home and the temporary folder), which
#: must never reach a committed output: a notebook speaks of paths relative to itself.
MACHINE_PATHS = tuple(
    sorted({str(NOTEBOOKS.parent), str(Path.home()), tempfile.gettempdir()} - {"/", ""}, key=len, reverse=True)
)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def convention_problems(nb: nbformat.NotebookNode, name: str, size: int) -> list[str]:
    """What keeps notebook ``nb`` (``size`` bytes on disk) from the course's conventions, one line each."""
    problems = []
    header = nb.cells[0].source if nb.cells and nb.cells[0].cell_type == "markdown" else ""
    for part in ("# ", "**Learning goals**", "**This notebook**"):
        if part not in header:
            problems.append(f"{name}: the first cell lacks {part!r}")
    if not nb.cells or "## Further reading" not in nb.cells[-1].source:
        problems.append(f"{name}: the last cell is not '## Further reading'")
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{name}: {len(tagged)} cells tagged 'parameters' (expected 1)")
    elif not name.startswith("00"):
        setup = next((c for c in nb.cells[tagged[0] + 1 :] if c.cell_type == "code"), None)
        if setup is None or "use_course_style()" not in setup.source:
            problems.append(f"{name}: the cell after the parameters does not call use_course_style()")
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            problems.append(f"{name}: run metadata {key!r} was not stripped")
    for number, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            images = [kind for kind in output.get("data", {}) if kind.startswith("image/")]
            if any(kind != f"image/{IMAGE_FORMAT}" for kind in images):
                problems.append(f"{name}: cell {number} holds {images} (one format: image/{IMAGE_FORMAT})")
            text = output.get("text", "") + "".join(
                value for kind, value in output.get("data", {}).items() if kind.startswith("text/")
            )
            if found := next((path for path in MACHINE_PATHS if path in text), None):
                problems.append(f"{name}: cell {number}'s output names a machine path ({found}...)")
    if size > MAX_BYTES:
        problems.append(f"{name}: {size / 1e6:.2f} MB (at most {MAX_BYTES / 1e6:.0f} MB)")
    return problems


@pytest.mark.parametrize("path", NUMBERED, ids=lambda p: p.stem)
def test_committed_notebook_keeps_the_conventions(path: Path) -> None:
    assert convention_problems(_read(path), path.name, path.stat().st_size) == []


def test_the_convention_check_can_fail() -> None:
    nb = _read(NUMBERED[1])
    nb.cells[0].source = "no header"
    nb.cells[-1].source = "the end"
    nb.metadata["papermill"] = {}
    nb.cells[2].source = nb.cells[2].source.replace("use_course_style()", "pass")
    nb.cells[2].outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": ""}),
        nbformat.v4.new_output("stream", text=f"wrote {Path.home()}/runs/x\n"),
    ]
    problems = "\n".join(convention_problems(nb, "01_x.ipynb", 2_000_000))
    for expected in (
        "lacks '**Learning goals**'",
        "Further reading",
        "use_course_style",
        "'papermill'",
        "image/png",
        f"machine path ({Path.home()}",
        "2.00 MB",
    ):
        assert expected in problems


def test_course_style_sets_the_rc_parameters() -> None:
    with mpl.rc_context():
        mpl.rcParams["image.cmap"] = "viridis"
        use_course_style()
        for key, value in COURSE_RC.items():
            assert mpl.rcParams[key] == value, key


def test_each_notebooks_run_time_is_the_readmes() -> None:
    """The run time a notebook's header states is the one in the README's table (one measurement, two places)."""
    readme = (NOTEBOOKS.parent / "README.md").read_text()
    for path in NUMBERED:
        row = re.search(rf"^\| `{path.stem}` \| [^|]+ \| ([^|]+) \| ([^|]+) \|$", readme, re.M)
        assert row is not None, f"README's notebook table has no row for {path.stem}"
        defaults, course = (cell.strip() for cell in row.groups())
        expected = f"*run time* {defaults} with its defaults, {course} in `make course`"
        assert expected in _read(path).cells[0].source, f"{path.name}: the header should say {expected!r}"
