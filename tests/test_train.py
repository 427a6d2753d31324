"""Training: the optimiser and schedule, exact resume after SIGKILL, non-finite loss, DDP on 2 CPU processes.

Everything runs on a tiny synthetic set (4 train / 2 val images at 64x128) with the small backbone on 32x64 crops.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from train_cli import flags

from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.config import ConfigError, TrainConfig, load_config
from anncore.engine.distributed import sync_batchnorm
from anncore.engine.losses import SegmentationLoss
from anncore.engine.runlog import RUN_FILES, clear_run
from anncore.engine.train import (
    NonFiniteLossError,
    _poly,
    amp_dtype,
    build_optimizer,
    train,
)
from anncore.models.checkpoint import load_checkpoint, save_checkpoint
from anncore.models.loading import load_model
from anncore.models.network import ANN

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses: see one_thread
TINY = dict(backbone="small", batch_size=2, crop=[32, 64], workers=0, device="cpu", ohem_min_kept=50, log_every=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("synthetic"), train=4, val=2, height=64, width=128)


def cli(out, data_root, **settings):
    """The ``python -m anncore train`` command line for a tiny run."""
    return [sys.executable, "-m", "anncore", "train", *flags(data_root=data_root, out=out, **{**TINY, **settings})]


# --------------------------------------------------------------------------------------------------------- config
def test_recipe_options_optimiser_warmup_scale_and_synthetic_set():
    model = nn.Conv2d(1, 1, 1)
    assert isinstance(build_optimizer(model, TrainConfig()), torch.optim.SGD)
    adam = build_optimizer(model, TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0.0))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 1e-3
    schedule = _poly(10, 1.0, warmup=4)
    assert [schedule(i) for i in (0, 1, 3, 4)] == pytest.approx([0.25 * 1.0, 0.5 * 0.9, 1.0 * 0.7, 0.6])
    assert _poly(10, 0.9)(0) == 1.0  # no warm-up: the official poly from the first iteration
    with pytest.raises(ConfigError, match="scale_range"):
        TrainConfig(scale_range=[2.0, 1.0])
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")


def test_amp_dtype_choice():
    assert amp_dtype(False, torch.device("cpu")) is None
    assert amp_dtype(True, torch.device("cpu")) is torch.bfloat16
    assert amp_dtype(True, torch.device("mps")) is torch.float16


def test_sync_batchnorm_only_for_several_gpu_processes():
    model, converted = sync_batchnorm(ANN(19, "small", "ann"), 2, torch.device("cuda"))  # conversion needs no GPU
    assert converted and not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) > 10
    model, converted = sync_batchnorm(ANN(19, "small", "ann"), 2, torch.device("cpu"))
    assert not converted and not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


# -------------------------------------------------------------------------------------------------- runs and files
def run_to_completion(out, data_root, **settings):
    result = subprocess.run(
        cli(out, data_root, **settings), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_sigkill_at_any_moment_then_resume_gives_bitwise_the_same_weights(tmp_path, data_root):
    """A real ``kill -9`` of ``python -m anncore train`` mid-run, then ``--resume``: the final weights, optimiser
    state and metrics equal those of an uninterrupted run with the same seed (CPU, workers=0)."""
    settings = dict(iters=16, checkpoint_every=1, val_every=5, head="ann", seed=7)
    run_to_completion(tmp_path / "straight", data_root, **settings)

    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(out, data_root, **settings), cwd=REPO, env=ENV, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until a few checkpoints exist, then kill without warning
        log = out / "log.jsonl"
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"train"' in line) >= 6:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = load_checkpoint(out / "checkpoint.pt")["iteration"]
    assert 0 < killed_at < 16
    assert not (out / "metrics.json").exists()

    resumed = run_to_completion(out, data_root, resume=True, **settings)
    assert f"resuming {out / 'checkpoint.pt'} at iteration {killed_at}" in resumed.stderr
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 16
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    again = json.loads((out / "metrics.json").read_text())
    assert again["final_miou"] == straight["final_miou"] and again["resumed_from"] == killed_at
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "train"] == list(range(1, 17))  # no duplicate after resume


def test_outputs_of_a_run(tmp_path, data_root):
    out = tmp_path / "run"
    metrics = train(load_config(None, data_root=str(data_root), out=str(out), iters=4, val_every=2, **TINY))
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "log.jsonl", "metrics.json"]
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("final_miou", "best_miou", "iou_per_class", "images_per_s", "peak_memory_gib", "wall_time_s", "config"):
        assert key in saved, key
    assert len(saved["iou_per_class"]) == 19 and saved["iou_per_class"]["road"] == metrics["iou_per_class"]["road"]
    assert saved["best_miou"] == max(r["miou"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
                                     if r["kind"] == "val")  # fmt: skip
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    assert lrs == pytest.approx([0.01 * (1 - i / 4) ** 0.9 for i in range(4)])  # official poly, per iteration
    assert load_config(out / "config.yaml") == load_config(None, data_root=str(data_root), out=str(out), iters=4,
                                                           val_every=2, **TINY)  # fmt: skip
    model = load_model(out / "checkpoint.pt")
    assert model.config["backbone"] == "small" and not model.training
    finished = train(
        load_config(None, data_root=str(data_root), out=str(out), iters=4, val_every=2, resume=True, **TINY)
    )
    assert finished == saved  # resuming a finished run trains nothing and keeps its measured metrics
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(load_config(None, data_root=str(data_root), out=str(out), iters=4, **TINY))
    with pytest.raises(ConfigError, match=r"different configuration .*momentum: 0\.9 -> 0\.8"):
        train(load_config(None, data_root=str(data_root), out=str(out), iters=4, momentum=0.8, resume=True, **TINY))


def test_non_finite_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(tmp_path, data_root, monkeypatch):
    forward, calls = SegmentationLoss.forward, []

    def poisoned(self, outputs, target):
        total, parts = forward(self, outputs, target)
        calls.append(1)
        return (total * float("nan"), parts) if len(calls) == 3 else (total, parts)

    monkeypatch.setattr(SegmentationLoss, "forward", poisoned)
    out = tmp_path / "nan"
    config = load_config(None, data_root=str(data_root), out=str(out), iters=5, checkpoint_every=1, **TINY)
    with pytest.raises(NonFiniteLossError, match=r"at iteration 3 of 5.*checkpoint\.pt holds iteration 2; --resume"):
        train(config)
    kept = load_checkpoint(out / "checkpoint.pt")
    assert kept["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["kind"] == "error"
    monkeypatch.setattr(SegmentationLoss, "forward", forward)  # the cause fixed, the run continues
    assert train(load_config(None, **{**vars(config), "resume": True}))["resumed_from"] == 2


def test_ddp_with_gloo_on_two_cpu_processes(tmp_path, data_root):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "anncore",
               *cli(out, data_root, iters=3, val_every=2, checkpoint_every=1)[3:]]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["sync_batchnorm"] is False  # CPU: PyTorch's SyncBN needs GPUs
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "log.jsonl", "metrics.json"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["iter"]) for r in records] == [
        ("train", 1), ("train", 2), ("val", 2), ("train", 3), ("val", 3)
    ]  # fmt: skip  # rank 0 alone writes
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["iteration"] == 3 and len(checkpoint["rng"]) == 2  # every rank's RNG state
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    progress = [line.split(",")[0] for line in result.stdout.splitlines() if line.startswith("ann/small: ")]
    assert progress == [f"ann/small: iteration {i}/3 ({100 * i / 3:.0f}%)" for i in (1, 2, 3)]  # once per job
    assert sum(line.startswith("data: ") for line in result.stdout.splitlines()) == 1


def test_under_torchrun_the_resume_notices_and_warnings_come_once(tmp_path, data_root):
    """A 1-process run resumed by 2 processes: the resume notices and the warning about the process count (raised
    on every rank) are said once, by rank 0."""
    out = tmp_path / "grown"
    train(load_config(None, data_root=str(data_root), out=str(out), iters=2, val_every=0, **TINY))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "anncore",
               *cli(out, data_root, iters=3, val_every=0, resume=True)[3:]]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for said in ("--resume with changed settings (iters: 2 -> 3)", "resuming a 1-process run with 2 processes",
                 f"resuming {out / 'checkpoint.pt'} at iteration 2 of 3"):  # fmt: skip
        assert result.stderr.count(said) == 1, (said, result.stderr[-3000:])
    assert result.stdout.count("ann/small: iteration 3/3") == 1


def test_resume_may_change_lr_and_iters_and_the_schedule_follows(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    train(load_config(None, data_root=str(data_root), out=str(out), iters=4, **TINY))
    train(load_config(None, data_root=str(data_root), out=str(out), iters=6, lr=0.02, resume=True, **TINY))
    assert "--resume with changed settings (iters: 4 -> 6, lr: 0.01 -> 0.02" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    lrs = {r["iter"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[4] == pytest.approx(0.01 * (1 - 3 / 4) ** 0.9)  # before: the old schedule
    assert [lrs[5], lrs[6]] == pytest.approx([0.02 * (1 - 4 / 6) ** 0.9, 0.02 * (1 - 5 / 6) ** 0.9])  # the new one


def test_ctrl_c_says_where_the_work_is_and_exits_130(tmp_path, data_root):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        cli(out, data_root, iters=500, checkpoint_every=1, val_every=0), cwd=REPO, env=ENV, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not (out / "checkpoint.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at iteration" in err and "--resume continues" in err and "Traceback" not in err
    assert 0 < load_checkpoint(out / "checkpoint.pt")["iteration"] < 500


class _CtrlCWhilePickled:
    """Pickles as ``0`` and presses Ctrl-C on its own process while ``torch.save`` is half way through the file."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (int, (0,))


def test_a_ctrl_c_during_a_checkpoint_write_lands_once_the_file_is_complete(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"iteration": 3, "bomb": _CtrlCWhilePickled()}, path)
    assert torch.load(path, weights_only=False)["iteration"] == 3  # written whole, then interrupted
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failed_checkpoint_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"iteration": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickle's error type for a lambda differs across versions
        save_checkpoint({"iteration": 2, "unpicklable": lambda: None}, path)
    assert load_checkpoint(path)["iteration"] == 1 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_clear_run_deletes_only_run_files(tmp_path: Path) -> None:
    for name in (*RUN_FILES, "notes.txt"):
        (tmp_path / name).write_text("x")
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    clear_run(tmp_path / "missing")  # nothing to delete is fine
