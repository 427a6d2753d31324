"""The notebooks' exercises as a learner meets them (anncore/course/exercises.py).

- The committed notebooks hold the reader's stub and no solution; each exercise has a check cell of the form
  ``name = check("label", test_name, name, solutions.name)``, whose committed output says "not written yet" and that
  the reference solution passes. nbval re-executes every notebook as committed, so CI proves that a stub attempt
  leaves the notebook running to its end on the reference solution, and that every reference passes its check.
- ``test_wrong_and_right_attempts`` runs each notebook in a kernel up to its last check and, after each check, judges
  typical wrong attempts (each must get the message naming its mistake) and the reference (``correct``).
"""

import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from anncore.__main__ import main
from anncore.course import solutions
from anncore.course.exercises import EXERCISE, ReferenceSolutionFailed, check

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Exercises each notebook holds: two in 01-03, one in every other notebook up to 09.
REQUIRED = {"01": 2, "02": 2, "03": 2, "04": 1, "05": 1, "06": 1, "07": 1, "08": 1, "09": 1}

#: Typical wrong attempts per exercise: (the wrong function's source, what the check must say about it).
MISTAKES: dict[str, list[tuple[str, str]]] = {
    "build_nonlocal": [
        (
            """
import copy
def build_nonlocal(in_channels, out_channels, key_channels, value_channels):
    block = solutions.build_nonlocal(in_channels, out_channels, key_channels, value_channels)
    block.attention.f_query = copy.deepcopy(block.attention.f_key)
    return block
""",
            "must be the very module attention.f_key, not a copy",
        ),
        (
            """
def build_nonlocal(in_channels, out_channels, key_channels, value_channels):
    block = solutions.build_nonlocal(in_channels, out_channels, key_channels, value_channels)
    torch.nn.init.normal_(block.attention.W.weight)
    return block
""",
            "W's weight and bias must both start at zero",
        ),
    ],
    "attention_row": [
        (
            "def attention_row(q_i, k):\n    return torch.softmax(k @ q_i, dim=-1)",
            "softmax over the keys of q.k / sqrt(Ck)",
        )
    ],
    "pyramid": [
        (
            "def pyramid(x, sizes=(1, 3, 6, 8)):\n"
            "    return torch.cat([F.adaptive_avg_pool2d(x, n).transpose(2, 3).flatten(2) for n in sizes], dim=2)",
            "same numbers in another order",
        ),
        (
            "def pyramid(x, sizes=(1, 3, 6, 8)):\n"
            "    return torch.cat([F.adaptive_avg_pool2d(x, n).flatten(2) for n in (1, 3, 6, 8)], dim=2)",
            "use the sizes you are given",
        ),
    ],
    "apnb_from_scratch": [
        (
            """
def apnb_from_scratch(x, block):
    b, _, h, w = x.shape
    key_map = block.attention.f_key(x)
    query, key = key_map.flatten(2).transpose(1, 2), pyramid(key_map)
    value = pyramid(block.attention.f_value(x)).transpose(1, 2)
    a = torch.softmax(query @ key, dim=-1)
    o = block.attention.W((a @ value).transpose(1, 2).reshape(b, -1, h, w))
    return block.fuse(torch.cat([o, x], dim=1)), a
""",
            "attention differs: pool keys (not queries); scale 1/sqrt(Ck)",
        ),
        (
            """
def apnb_from_scratch(x, block):
    b, _, h, w = x.shape
    key_map = block.attention.f_key(x)
    query, key = key_map.flatten(2).transpose(1, 2), pyramid(key_map)
    value = pyramid(block.attention.f_value(x)).transpose(1, 2)
    a = torch.softmax(query @ key / key.shape[1] ** 0.5, dim=-1)
    o = block.attention.W((a @ value).transpose(1, 2).reshape(b, -1, h, w))
    return block.fuse(torch.cat([x, o], dim=1)), a
""",
            "attention right, output wrong",
        ),
    ],
    "apnb_pixel_weight": [
        (
            """
def apnb_pixel_weight(anchor_weights, row, col, height, width):
    weight, offset = 0.0, 0
    for n in DEFAULT_POOL_SIZES:
        for i, (r0, r1) in enumerate(cell_bounds(height, n)):
            for j, (c0, c1) in enumerate(cell_bounds(width, n)):
                if r0 <= row < r1 and c0 <= col < c1:
                    weight += anchor_weights[offset + i * n + j].item()
        offset += n * n
    return weight
""",
            "a_j divided by the cell's pixel count",
        )
    ],
    "afnb_from_scratch": [
        (
            """
def afnb_from_scratch(low, high, block):
    out, a = solutions.afnb_from_scratch(low, high, block)
    return torch.relu(out), a
""",
            "AFNB's fusion ends in BN, with no ReLU",
        )
    ],
    "afnb_parameters": [
        (
            """
def afnb_parameters(low_in, high_in, out, key, value):
    return solutions.afnb_parameters(low_in, high_in, out, key, value) + 2 * (2 * key + out)
""",
            "running mean and variance are buffers, not parameters",
        ),
        (
            """
def afnb_parameters(low_in, high_in, out, key, value):
    return solutions.afnb_parameters(low_in, high_in, out, key, value) - high_in * out
""",
            "reads the concatenation [O; Y_h]",
        ),
    ],
    "attention_core_cost": [
        (
            """
def attention_core_cost(batch, n, s, key_channels, value_channels, dtype=torch.float32):
    flops, size = solutions.attention_core_cost(batch, n, s, key_channels, value_channels, dtype)
    return flops // 2, size
""",
            "2 FLOPs per multiply-add",
        )
    ],
    "to_train_ids": [
        (
            "def to_train_ids(label_ids):\n    return np.asarray(label_ids).astype(np.uint8)",
            "wrong train ids for label ids",
        )
    ],
    "ann_logits": [
        (
            """
def ann_logits(model, images):
    grid = model.head(*model.backbone(images))
    return torch.nn.functional.interpolate(grid, size=images.shape[-2:], mode="bilinear", align_corners=False)
""",
            "the upsampling uses align_corners=False",
        ),
        (
            """
def ann_logits(model, images):
    low, high = model.backbone(images)
    x = model.head.bottleneck(high)
    return torch.nn.functional.interpolate(
        model.head.cls(x), size=images.shape[-2:], mode="bilinear", align_corners=model.align_corners
    )
""",
            "check the order of the blocks",
        ),
    ],
    "poly_lr": [
        (
            "def poly_lr(it, lr, iters, power, warmup=0):\n    return lr * (1 - (it + 1) / iters) ** power",
            "with it counted from 0",
        ),
        (
            "def poly_lr(it, lr, iters, power, warmup=0):\n"
            "    return lr * (1 - it / iters) ** power * (it / warmup if it < warmup else 1)",
            "during the warm-up the poly value is scaled by (it + 1) / warmup",
        ),
    ],
    "miou_from_confusion": [
        (
            """
def miou_from_confusion(confusion):
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    return float(np.mean(tp / np.maximum(union, 1)))
""",
            "averaged over the classes whose union is not empty",
        )
    ],
    "weight_on_region": [
        (
            """
def weight_on_region(pixel_map, mask):
    return float((pixel_map.double().cpu().numpy() * mask[4::8, 4::8]).sum())
""",
            "weigh each cell by the share of its 8x8 image block",
        )
    ],
}


def load(number: str) -> nbformat.NotebookNode:
    return nbformat.read(next(NOTEBOOKS.glob(f"{number}_*.ipynb")), as_version=4)


def tagged(cell: dict, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def defined(source: str) -> list[str]:
    return [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]


def check_calls(source: str) -> list[tuple[str, str, str]]:
    """(label, test name, function name) of every ``name = check("label", test, name, solutions.name)``."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if isinstance(call.func, ast.Name) and call.func.id == "check" and len(call.args) == 4:
                label, test, attempt, reference = call.args
                target = node.targets[0]
                assert isinstance(label, ast.Constant) and isinstance(test, ast.Name) and isinstance(target, ast.Name)
                assert isinstance(attempt, ast.Name) and attempt.id == target.id, ast.unparse(node)
                assert ast.unparse(reference) == f"solutions.{target.id}", ast.unparse(node)
                found.append((label.value, test.id, target.id))
    return found


def exercises_of(notebook: nbformat.NotebookNode) -> list[tuple[int, str, int, str, str]]:
    """(exercise cell, function, check cell, label, test name) of each exercise, in order."""
    found = []
    for i, cell in enumerate(notebook.cells):
        if tagged(cell, EXERCISE):
            (name,) = defined(cell.source)
            checks = [
                (j, label, test)
                for j, later in enumerate(notebook.cells[i + 1 :], i + 1)
                if later.cell_type == "code"
                for label, test, function in check_calls(later.source)
                if function == name
            ]
            assert len(checks) == 1, f"{name}: expected one check cell, found {len(checks)}"
            found.append((i, name, *checks[0]))
    return found


@pytest.mark.parametrize("number", sorted(REQUIRED))
def test_each_exercise_is_a_stub_with_a_check_and_no_solution_in_sight(number):
    notebook = load(number)
    assert not any(tagged(cell, "solution") for cell in notebook.cells), "a solution cell is in the notebook"
    exercises = exercises_of(notebook)
    assert len(exercises) >= REQUIRED[number], f"notebook {number}: {len(exercises)} exercises"
    for i, name, j, label, _ in exercises:
        assert "raise NotImplementedError" in notebook.cells[i].source, f"{number}, cell {i}: committed as a stub"
        assert callable(getattr(solutions, name, None)), f"anncore.course.solutions has no reference {name}"
        assert name in MISTAKES, f"{name}: no wrong attempt in MISTAKES to prove its check names the mistake"
        said = "".join(out.get("text", "") for out in notebook.cells[j].outputs if out.output_type == "stream")
        assert f"{label}: not written yet" in said and f"solutions.{name}), which passes" in said, (number, said)


def test_check_judges_the_attempt_and_hands_on_a_working_function(capsys):
    def test_sum(add):
        assert add(1, 1) == 2, "1 + 1 is 2"

    def reference(a, b):
        return a + b

    def unwritten(a, b):
        raise NotImplementedError

    def wrong(a, b):
        return a - b

    assert check("sum", test_sum, reference, reference) is reference
    assert "sum: correct" in capsys.readouterr().out
    assert check("sum", test_sum, unwritten, reference) is reference
    out = capsys.readouterr().out
    assert "sum: not written yet" in out and "reference solution" in out
    assert check("sum", test_sum, wrong, reference) is reference
    assert "sum: not yet — 1 + 1 is 2" in capsys.readouterr().out
    assert check("sum", test_sum, lambda a, b: [][a], reference) is reference
    assert "IndexError" in capsys.readouterr().out
    with pytest.raises(ReferenceSolutionFailed, match="reference solution fails"):
        check("sum", test_sum, unwritten, wrong)


def _probe_cells(name: str, label: str, test: str) -> list[nbformat.NotebookNode]:
    """Cells judging each known mistake and the reference, then leaving ``name`` bound to the reference."""
    cells = []
    for source, _ in MISTAKES[name]:
        check_it = f"_ = check({label!r}, {test}, {name}, solutions.{name})"
        cells.append(nbformat.v4.new_code_cell(f"{source.strip()}\n\n{check_it}"))
    cells.append(nbformat.v4.new_code_cell(f"{name} = check({label!r}, {test}, solutions.{name}, solutions.{name})"))
    return cells


@pytest.mark.parametrize("number", sorted(REQUIRED))
def test_wrong_and_right_attempts(number):
    notebook = load(number)
    exercises = exercises_of(notebook)
    probes: dict[int, list] = {j: _probe_cells(name, label, test) for _, name, j, label, test in exercises}
    cells, judged = [], []
    for j, cell in enumerate(notebook.cells[: max(probes) + 1]):
        cells.append(cell)
        if j in probes:
            judged.append((j, len(cells), probes[j]))
            cells.extend(probes[j])
    run = nbformat.from_dict({**notebook, "cells": cells})
    NotebookClient(run, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for (_, name, _, label, _), (_, start, added) in zip(exercises, judged, strict=True):
        said = [
            "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")
            for cell in run.cells[start : start + len(added)]
        ]
        for (_, message), out in zip(MISTAKES[name], said, strict=False):
            assert f"{label}: not yet —" in out and message in out, f"{name}: {message!r} not in {out!r}"
        assert f"{label}: correct" in said[-1], said[-1]


def test_exercise_copies_are_blank_and_never_overwrite_the_readers_work(tmp_path, capsys):
    assert main(["exercises", "--notebooks", str(NOTEBOOKS), "--out", str(tmp_path)]) == 0
    copies = sorted(tmp_path.glob("*.ipynb"))
    assert len(copies) == len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))) and "blank copies" in capsys.readouterr().out
    for copy in copies:
        notebook = json.loads(copy.read_text())
        assert all(not cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code")
    mine = copies[1]
    mine.write_text(mine.read_text().replace("raise NotImplementedError", "return None  # my attempt"))
    assert main(["exercises", "--notebooks", str(NOTEBOOKS), "--out", str(tmp_path)]) == 0
    assert "my attempt" in mine.read_text() and "kept as they were" in capsys.readouterr().out
