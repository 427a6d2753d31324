"""Exercises in the notebooks: the reader writes a function, a check says in plain words whether it is right, and the
notebook goes on whatever the answer.

The convention every notebook follows (``tests/test_exercises.py`` holds them to it):

1. a code cell tagged ``exercise`` defines the function the reader writes; as committed its body ends in
   ``raise NotImplementedError`` where the reader's code goes, and the notebook never shows a solution;
2. a later cell defines a test of that function, written as ``def test_name(name): ...`` so that it judges whatever
   function it is given, and calls ``name = check("label", test_name, name, solutions.name)``.

:func:`check` runs the test on the reader's function and prints ``correct``, ``not written yet`` or ``not yet`` with
the failed assertion's message, which names the mistake. While the reader's function is missing or wrong it runs the
same test on the reference solution in :mod:`anncore.course.solutions`, so that every run of a notebook (CI's included)
proves the reference, and returns it, so the cells after the exercise keep working; it says so. *Run All* therefore
never replaces the reader's attempt: the attempt is the only definition in the notebook.

``make exercises`` (``python -m anncore exercises``) copies the notebooks, outputs cleared, into a folder the reader
owns, so that updating the repository never touches the answers written there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import nbformat

from anncore.errors import MissingInput

EXERCISE = "exercise"
Solution = TypeVar("Solution", bound=Callable[..., object])


class ReferenceSolutionFailed(AssertionError):
    """The course's own reference solution fails its exercise's test: a bug in the course, not in the reader's code."""


def _verdict(test: Callable[[Solution], None], function: Solution) -> str | None:
    """None when ``test(function)`` passes, else what went wrong, in words."""
    try:
        test(function)
    except NotImplementedError:
        return "not written yet — fill in the exercise cell above, then run it and this cell again"
    except AssertionError as err:
        return f"not yet — {err}"
    except Exception as err:  # a reader's code may fail any way; say how, do not stop the notebook
        return f"not yet — it raised {type(err).__name__}: {err}"
    return None


def check(name: str, test: Callable[[Solution], None], attempt: Solution, reference: Solution) -> Solution:
    """Judge the reader's ``attempt`` with ``test`` and print the verdict; returns the function the cells below use.

    That is ``attempt`` when it passes. Otherwise ``reference`` (from :mod:`anncore.course.solutions`) must pass the
    same test, else :class:`ReferenceSolutionFailed` is raised: the check itself is wrong, and the notebook stops there.
    """
    problem = _verdict(test, attempt)
    if problem is None:
        print(f"{name}: correct — the cells below use your {attempt.__name__}")
        return attempt
    print(f"{name}: {problem}")
    if (broken := _verdict(test, reference)) is not None:
        raise ReferenceSolutionFailed(f"{name}: the course's reference solution fails this check too ({broken})")
    where = f"{reference.__module__}.{reference.__name__}"
    print(f"  until yours passes, the cells below use the reference solution ({where}), which passes this check")
    return reference


def blank_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` with every output and execution count cleared: a copy to work the exercises in."""
    copy = nbformat.from_dict(notebook)
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return copy


def write_exercise_copies(notebooks_dir: str | Path, out_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """A blank copy of every ``NN_slug.ipynb`` in ``notebooks_dir`` in ``out_dir``; a copy already there holds the
    reader's work and is kept as it is. Returns (written, kept)."""
    notebooks = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise MissingInput(f"no notebooks named NN_slug.ipynb under {notebooks_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for path in notebooks:
        target = out / path.name
        if target.exists():
            kept.append(target)
            continue
        nbformat.write(blank_copy(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written, kept
