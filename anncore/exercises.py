"""Exercises in the notebooks: the reader writes the code, a check says in plain words whether it is right, and a
hidden reference solution follows.

The convention every notebook follows (``tests/test_exercises.py`` holds them to it):

1. a code cell tagged ``exercise`` defines the function the reader writes; its body ends in
   ``raise NotImplementedError`` where the reader's code goes;
2. the next code cell, tagged ``solution``, redefines it with the reference solution; its input and its output are
   hidden (cell metadata ``jupyter.source_hidden`` and ``jupyter.outputs_hidden``), so a reader who wants to try first
   sees neither;
3. a later cell calls :func:`check` with a test comparing the function with ``anncore``; it prints ``correct`` or what
   is wrong, and never raises, so a reader's first attempt does not stop the notebook.

CI runs the notebooks as committed, solutions in place (each check prints ``correct``, which nbval compares).
``make exercises`` (``python -m anncore exercises``) writes the student copies: the solution cells removed and every
output cleared, into a git-ignored folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat

from anncore.errors import MissingInput

EXERCISE, SOLUTION = "exercise", "solution"


def check(name: str, test: Callable[[], None]) -> bool:
    """Run ``test`` (assertions comparing the reader's function with ``anncore``) and say how it went: ``correct``,
    ``not written yet`` (it raised ``NotImplementedError``) or ``not yet`` with the failed assertion's message."""
    try:
        test()
    except NotImplementedError:
        print(f"{name}: not written yet — fill in the exercise cell above, then run this cell again")
        return False
    except AssertionError as err:
        print(f"{name}: not yet — {err}")
        return False
    except Exception as err:  # a reader's code may fail any way; say how, do not stop the notebook
        print(f"{name}: not yet — it raised {type(err).__name__}: {err}")
        return False
    print(f"{name}: correct")
    return True


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` without its solution cells and with every output and execution count cleared."""
    copy = nbformat.from_dict(notebook)
    copy.cells = [cell for cell in copy.cells if SOLUTION not in tags(cell)]
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return copy


def write_student_copies(notebooks_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """A student copy of every ``NN_slug.ipynb`` in ``notebooks_dir``, written to ``out_dir``; returns the files."""
    notebooks = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise MissingInput(f"no notebooks named NN_slug.ipynb under {notebooks_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nbformat.write(student_copy(nbformat.read(path, as_version=4)), out / path.name)
        written.append(out / path.name)
    return written
