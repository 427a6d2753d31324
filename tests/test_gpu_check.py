"""``python -m anncore gpu-check``: the dry run on the CPU (every step in its own subprocess, strict JSON, a summary),
time limits and the budget, bad arguments, the CUDA requirement, and the wrapper script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anncore.__main__ import gpu_check_module, main

gpucheck = gpu_check_module()
LIMITS_S, NO_CUDA, STEPS = gpucheck.LIMITS_S, gpucheck.NO_CUDA, gpucheck.STEPS
compare_states, run_check, run_step, step_limit = (
    gpucheck.compare_states,
    gpucheck.run_check,
    gpucheck.run_step,
    gpucheck.step_limit,
)

REPO = Path(__file__).resolve().parents[1]


def strict_json(path: Path):
    """``path`` parsed as strict JSON: a ``NaN`` / ``Infinity`` token is an error."""

    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def papermill_importable() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in gpucheck.NOTEBOOK_RUNNER)


@pytest.mark.slow
def test_dry_run_runs_every_step_writes_strict_json_and_prints_the_summary(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "anncore", "gpu-check", "--dry-run", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = strict_json(out / "summary.json")
    assert [row["step"] for row in summary["steps"]] == list(STEPS)
    assert summary["dry_run"] is True and summary["not_selected"] == []
    expected_notebooks = "ok" if papermill_importable() else "skipped"
    for row in summary["steps"]:
        document = strict_json(out / f"{row['step']}.json")
        assert document["status"] == row["status"] and document["step"] == row["step"]
        want = expected_notebooks if row["step"] == "notebooks" else "ok"
        assert row["status"] == want, (row, (out / "logs" / f"{row['step']}.log").read_text()[-2000:])
        assert document["headline"] and document["seconds"] <= document["limit_s"]
    for path in (out / "bench").glob("*.json"):
        strict_json(path)
    assert sorted(p.name.split("-")[0] for p in (out / "bench").glob("*.json")) == ["paper", "sweep"]
    if expected_notebooks == "ok":
        assert (out / "notebooks" / "00_setup.ipynb").is_file()
    # figures the GPU run is for, in their dry-run form
    env_doc = strict_json(out / "env.json")
    assert env_doc["sdpa_backends"]["channels"] == 256 and env_doc["sdpa_backends"]["float32"]["math"] is True
    assert env_doc["matmul"]["bfloat16"]["tflops_best"] > 0
    assert strict_json(out / "paper.json")["ratios"]
    resume = strict_json(out / "resume.json")
    assert resume["killed"]["signal"] == "SIGKILL" and resume["comparison"]["bitwise_identical"] is True  # CPU
    ddp = strict_json(out / "ddp.json")
    assert ddp["torchrun"]["metrics"]["world_size"] == 1 and ddp["process_group"]["all_reduce_ok"] is True
    assert {r["head"] for r in strict_json(out / "ann-inference.json")["results"]} == {"ann", "nl"}
    # the one-screen summary
    printed = result.stdout[result.stdout.index("gpu-check summary") :]
    assert len(printed.splitlines()) <= 25
    for name in STEPS:
        assert any(line.startswith(name) for line in printed.splitlines()), name
    assert f"{len(STEPS)} ok" in printed or "skipped: notebooks" in printed


def test_a_step_past_its_limit_is_killed_and_the_next_one_still_runs(tmp_path, capsys):
    status = run_check(tmp_path, 540, dry_run=True, only=["env", "paper"], limits_s={"env": 1.0})
    assert status == 1
    summary = strict_json(tmp_path / "summary.json")
    assert [(row["step"], row["status"]) for row in summary["steps"]] == [("env", "timeout"), ("paper", "ok")]
    assert "1 s limit" in strict_json(tmp_path / "env.json")["error"]
    assert summary["not_selected"] == [name for name in STEPS if name not in ("env", "paper")]
    printed = capsys.readouterr().out
    assert "timeout" in printed and "not selected (--only)" in printed


def test_limits_fit_the_budget_and_unused_time_goes_to_later_steps():
    bases = [LIMITS_S[name] for name in STEPS]
    left, limits = 540.0 - gpucheck.RESERVE_S, []
    for index, base in enumerate(bases):
        limits.append(step_limit(base, left, sum(bases[index:])))
        left -= limits[-1]  # every step uses its whole limit: the worst case
    assert sum(limits) <= 540 - gpucheck.RESERVE_S + 1e-6 and all(
        lim <= b for lim, b in zip(limits, bases, strict=True)
    )
    first = step_limit(bases[0], 535, sum(bases))
    assert first < bases[0]  # scaled down: 790 s of limits in a 540 s budget
    assert step_limit(bases[-1], 535 - 10, bases[-1]) == bases[-1]  # the earlier steps finished early: full limit
    assert step_limit(40, 0, 100) == 0.0


def test_bad_arguments_name_what_is_wrong(tmp_path, capsys):
    assert main(["gpu-check", "--out", str(tmp_path), "--dry-run", "--only", "env", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "--only" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for budget in ("0", "-5"):
        assert main(["gpu-check", "--out", str(tmp_path), "--dry-run", "--budget-s", budget]) == 2
        err = capsys.readouterr().err
        assert "--budget-s must be a positive number" in err and budget in err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_to_use_dry_run(tmp_path, capsys):
    assert main(["gpu-check", "--out", str(tmp_path)]) == 2
    assert NO_CUDA in capsys.readouterr().err


def test_notebooks_step_is_skipped_saying_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(gpucheck, "NOTEBOOK_RUNNER", ("papermill", "no_such_runner_module"))
    assert run_step("notebooks", tmp_path, 60, dry_run=True, work=tmp_path / "work") == 0
    document = strict_json(tmp_path / "notebooks.json")
    assert document["status"] == "skipped"
    assert "no_such_runner_module" in document["error"] and "make gpu-wheels" in document["error"]


def test_compare_states_counts_equal_tensors_and_the_largest_difference():
    a = {"w": torch.ones(3), "b": torch.zeros(2), "n": torch.tensor(4)}
    b = {"w": torch.ones(3), "b": torch.tensor([0.0, 0.25]), "n": torch.tensor(4)}
    result = compare_states(a, b)
    assert (result["tensors"], result["bitwise_equal"], result["different"]) == (3, 2, 1)
    assert result["max_abs_diff"] == 0.25 and result["max_abs_diff_tensor"] == "b"


def test_wrapper_script_sets_the_path_and_notes_an_empty_wheel_folder(tmp_path):
    empty = tmp_path / "wheels"
    empty.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "ANNCORE_WHEELS": str(empty), "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--only", "env", "--out", str(tmp_path / "o")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "holds no .whl files" in result.stderr
    assert strict_json(tmp_path / "o" / "env.json")["status"] == "ok"
