"""Progress of the long commands and the data record of a run (issue 22, items 2 and 4).

Progress: the one rule of :mod:`anncore.progress` (a bar on a terminal, plain lines otherwise, at its rate), a headless
``train`` that prints a line every ``log_every`` iterations, and ``evaluate``, ``cue`` and ``check-data`` printing
plain lines off a terminal (pytest's captured stdout is not one). The data record: ``config.yaml``, ``metrics.json``
and the checkpoint name the folder read, its image counts and fingerprint; ``--resume`` refuses other data unless
``--allow-other-data``; a checkpoint written before the record resumes. Under torchrun, once per job:
``tests/test_train.py::test_ddp_with_gloo_on_two_cpu_processes``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from anncore import progress as progress_module
from anncore.__main__ import main
from anncore.data import CityscapesSegmentation
from anncore.data.cityscapes import data_record
from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.config import load_config
from anncore.engine.train import train
from anncore.errors import BadInput
from anncore.models.checkpoint import load_checkpoint, save_checkpoint
from anncore.progress import Progress, progress

TINY = dict(backbone="small", batch_size=2, crop=[32, 64], workers=0, device="cpu", ohem_min_kept=50, val_every=0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("synthetic"), train=4, val=2, height=64, width=128)


@pytest.fixture(scope="module")
def other_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another set of the same make-up (one more training scene): other data behind a data root."""
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("other"), train=5, val=2, height=64, width=128)


class FakeClock:
    """A clock that advances by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def plain_lines(text: str, desc: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{desc}: ")]


# ---------------------------------------------------------------------------------------------------- the rule
def test_plain_lines_come_at_tenths_of_slow_work_and_once_for_fast_work(capsys: pytest.CaptureFixture[str]) -> None:
    slow = Progress(100, "slow", "image", clock=FakeClock(2.0))  # 2 s per read: a tenth of the work is ~40 s
    for _ in range(100):
        slow.update()
    lines = plain_lines(capsys.readouterr().out, "slow")
    assert 9 <= len(lines) <= 12, lines  # about one per tenth, never one per image
    assert lines[0].startswith("slow: image 10/100 (10%)") and "ETA" in lines[0] and "s/image" in lines[0]
    assert lines[-1].startswith("slow: image 100/100 (100%)") and "done in" in lines[-1]
    fast = Progress(100, "fast", "image", clock=FakeClock(0.001))
    for _ in range(100):
        fast.update()
    lines = plain_lines(capsys.readouterr().out, "fast")
    assert [line.split(",")[0] for line in lines] == ["fast: image 100/100 (100%)"]  # one closing line


def test_a_long_silence_is_broken_and_every_n_items_is_exact(capsys: pytest.CaptureFixture[str]) -> None:
    stuck = Progress(1000, "stuck", "scene", clock=FakeClock(40.0))  # >= 40 s per item: a line each (30 s rule)
    for _ in range(3):
        stuck.update()
    assert len(plain_lines(capsys.readouterr().out, "stuck")) == 3
    counted = Progress(7, "counted", "iteration", every=3, clock=FakeClock(0.001))
    for _ in range(7):
        counted.update(1, {"loss": "1.0"})
    lines = plain_lines(capsys.readouterr().out, "counted")
    assert [re.search(r"iteration (\d+)/7", line)[1] for line in lines] == ["3", "6", "7"]  # type: ignore[index]
    assert all("loss 1.0" in line for line in lines)


def test_a_terminal_gets_a_bar_and_a_disabled_progress_says_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = Progress(5, "quiet", enabled=False)
    for _ in range(5):
        quiet.update()
    quiet.write("a message")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    assert list(progress(range(3), 3, "bar")) == [0, 1, 2]
    captured = capsys.readouterr()
    assert not plain_lines(captured.out, "bar") and "bar: 100%" in captured.err  # tqdm's bar, on stderr


# ---------------------------------------------------------------------------------------------------- commands
def test_headless_train_prints_a_line_every_log_every_iterations(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(load_config(None, data_root=str(data_root), out=str(tmp_path / "run"), iters=5, log_every=2, **TINY))
    lines = plain_lines(capsys.readouterr().out, "ann/small")
    assert [re.search(r"iteration (\d+)/5", line)[1] for line in lines] == ["2", "4", "5"]  # type: ignore[index]
    for field in ("loss ", "lr ", "images/s ", "s/iteration"):
        assert all(field in line for line in lines), field
    assert "ETA" in lines[0] and "done in" in lines[-1]


def test_evaluate_cue_and_check_data_print_plain_progress_lines_off_a_terminal(
    data_root: Path, small_model_file, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(small_model_file("ann"))
    argv = ["evaluate", "--checkpoint", checkpoint, "--data-root", str(data_root), "--out", str(tmp_path)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert plain_lines(capsys.readouterr().out, "evaluate")[-1].startswith("evaluate: image 2/2 (100%)")
    assert main(["cue", "--checkpoint", checkpoint, "--scenes", "2", "--size", "32", "64", "--device", "cpu"]) == 0
    assert plain_lines(capsys.readouterr().out, "board-swap test")[-1].startswith("board-swap test: scene 2/2")
    assert main(["check-data", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert plain_lines(out, "checking train")[-1].startswith("checking train: image 4/4 (100%)")
    assert plain_lines(out, "checking val")[-1].startswith("checking val: image 2/2 (100%)")


# ------------------------------------------------------------------------------------------------- data record
def test_a_run_records_the_folder_it_read_from_the_environment(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(data_root))
    out = tmp_path / "run"
    train(load_config(None, data_root="", out=str(out), iters=1, **TINY))
    expected = {"root": str(data_root.resolve()), "train_images": 4, "val_images": 2}
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["data_root"] == "" and {k: recorded["data"][k] for k in expected} == expected
    assert re.fullmatch(r"[0-9a-f]{16}", recorded["data"]["fingerprint"])
    assert json.loads((out / "metrics.json").read_text())["data"] == recorded["data"]
    assert load_checkpoint(out / "checkpoint.pt")["data"] == recorded["data"]
    shown = os.path.relpath(data_root.resolve())  # the start line: relative to the working directory, nearby
    assert f"data: {shown} (4 train + 2 val images, fingerprint {recorded['data']['fingerprint']})" in (
        capsys.readouterr().out
    )
    assert load_config(out / "config.yaml") == load_config(None, data_root="", out=str(out), iters=1, **TINY)


def test_the_fingerprint_follows_the_files_not_the_folder(data_root: Path, other_root: Path, tmp_path: Path) -> None:
    def fingerprint(root: Path) -> str:
        return data_record(root, [CityscapesSegmentation(root, s) for s in ("train", "val")])["fingerprint"]

    moved = shutil.copytree(data_root, tmp_path / "moved")
    assert fingerprint(moved) == fingerprint(data_root) != fingerprint(other_root)
    label = next((moved / "gtFine" / "val").glob("*/*_labelTrainIds.png"))
    label.write_bytes(label.read_bytes() + b"\0")  # a file repaired (or damaged) in place: the same file list
    assert fingerprint(moved) == fingerprint(data_root)
    image = next((moved / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))
    stem = image.name.removesuffix("_leftImg8bit.png")
    for path in [image, *(moved / "gtFine" / "val").glob(f"*/{stem}_gtFine_*")]:
        path.unlink()  # a frame fewer: another file list
    assert fingerprint(moved) != fingerprint(data_root)


def test_resume_on_other_data_is_refused_unless_allowed(
    data_root: Path, other_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    run = dict(out=str(out), **TINY)
    train(load_config(None, data_root=str(data_root), iters=2, **run))
    started = yaml.safe_load((out / "config.yaml").read_text())["data"]
    with pytest.raises(BadInput, match="--resume would read other data") as refused:
        train(load_config(None, data_root=str(other_root), iters=3, resume=True, **run))
    message = str(refused.value)
    assert str(other_root.resolve()) in message and str(data_root.resolve()) in message
    assert started["fingerprint"] in message and "--allow-other-data" in message and "\n" not in message
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 2  # nothing trained
    moved = shutil.copytree(data_root, tmp_path / "moved")
    assert train(load_config(None, data_root=str(moved), iters=3, resume=True, **run))["resumed_from"] == 2
    capsys.readouterr()
    allowed = train(load_config(None, data_root=str(other_root), iters=4, resume=True, allow_other_data=True, **run))
    assert allowed["resumed_from"] == 3 and allowed["data"]["train_images"] == 5  # the run now records the new data
    assert "--resume on other data (--allow-other-data)" in capsys.readouterr().err


def test_a_checkpoint_written_before_the_data_record_resumes(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "old"
    run = dict(data_root=str(data_root), out=str(out), **TINY)
    train(load_config(None, iters=2, **run))
    state = load_checkpoint(out / "checkpoint.pt")
    del state["data"]  # as checkpoints were written before runs recorded their data
    save_checkpoint(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert train(load_config(None, iters=3, resume=True, **run))["resumed_from"] == 2
    notices = [line for line in capsys.readouterr().err.splitlines() if "before runs recorded their data" in line]
    assert len(notices) == 1 and "not checked" in notices[0]
    assert load_checkpoint(out / "checkpoint.pt")["data"]["train_images"] == 4


def test_the_start_line_names_the_data_relative_to_the_working_directory(tmp_path, monkeypatch):
    from anncore.data.cityscapes import describe_data

    record = {"root": str(tmp_path / "data" / "set"), "train_images": 4, "val_images": 2, "fingerprint": "ab"}
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert describe_data(record, relative=True) == "../data/set (4 train + 2 val images, fingerprint ab)"
    assert describe_data(record).startswith(str(tmp_path))  # errors and the record keep the absolute root
    far = tmp_path / "a" / "b" / "c"
    far.mkdir(parents=True)
    monkeypatch.chdir(far)
    assert describe_data(record, relative=True).startswith(str(tmp_path))  # far away: absolute
