"""The notebooks' exercises follow one convention (anncore/exercises.py): an `exercise` cell the reader fills, the
next cell its `solution` with input and output hidden, then a check that calls `check(...)` on the function; and the
student copies `make exercises` writes hold no solution and no output."""

import ast
import json
from pathlib import Path

import pytest

from anncore.__main__ import main
from anncore.exercises import SOLUTION, check, student_copy

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Exercises each notebook must hold (issue: two in 01-03, one in every other notebook up to 09).
REQUIRED = {"01": 2, "02": 2, "03": 2, "04": 1, "05": 1, "06": 1, "07": 1, "08": 1, "09": 1}


def cells(number: str) -> list[dict]:
    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    return json.loads(path.read_text())["cells"]


def tagged(cell: dict, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def defined(source: str) -> list[str]:
    return [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]


@pytest.mark.parametrize("number", sorted(REQUIRED))
def test_each_exercise_has_a_hidden_solution_and_a_check(number):
    notebook = cells(number)
    exercises = [i for i, cell in enumerate(notebook) if tagged(cell, "exercise")]
    assert len(exercises) >= REQUIRED[number], f"notebook {number}: {len(exercises)} exercises"
    for i in exercises:
        exercise, solution = "".join(notebook[i]["source"]), notebook[i + 1]
        names = defined(exercise)
        assert names and "raise NotImplementedError" in exercise, f"{number}, cell {i}: a function to write"
        assert tagged(solution, "solution") and set(names) <= set(defined("".join(solution["source"]))), (number, i)
        hidden = solution.get("metadata", {}).get("jupyter", {})
        assert hidden.get("source_hidden") and hidden.get("outputs_hidden"), f"{number}, cell {i + 1}: not hidden"
        later = ["".join(c["source"]) for c in notebook[i + 2 :] if c["cell_type"] == "code"]
        checks = [src for src in later if "check(" in src and any(name in src for name in names)]
        assert checks, f"{number}: no check(...) cell uses {names}"


def test_check_says_what_happened(capsys):
    def unwritten():
        raise NotImplementedError

    def wrong():
        assert 1 + 1 == 3, "the sum is 2, not 3"

    assert check("sum", lambda: None) and "sum: correct" in capsys.readouterr().out
    assert not check("sum", unwritten) and "not written yet" in capsys.readouterr().out
    assert not check("sum", wrong) and "not yet — the sum is 2, not 3" in capsys.readouterr().out
    assert not check("sum", lambda: [][1]) and "IndexError" in capsys.readouterr().out


def test_student_copies_hold_no_solution_and_no_output(tmp_path, capsys):
    assert main(["exercises", "--notebooks", str(NOTEBOOKS), "--out", str(tmp_path)]) == 0
    copies = sorted(tmp_path.glob("*.ipynb"))
    assert (
        len(copies) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))) and "student copies" in capsys.readouterr().out
    )
    for copy in copies:
        notebook = json.loads(copy.read_text())
        assert not any(tagged(cell, SOLUTION) for cell in notebook["cells"])
        assert all(not cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code")
    original = json.loads(next(NOTEBOOKS.glob("01_*.ipynb")).read_text())
    kept = [c for c in original["cells"] if not tagged(c, SOLUTION)]
    assert [c["source"] for c in student_copy(original).cells] == [c["source"] for c in kept]
