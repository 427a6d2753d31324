"""Faults from outside the code, each provoked for real and checked for what the user is left with: a disk that fills
while a checkpoint or a JSON file is written (the previous file survives, no temporary is left, the error names the
file), a second run into an output folder in use (refused with the holder's pid, then fine once it is released), a
validation file that only fails after the last iteration (the final checkpoint is already on disk, and ``--resume``
finishes the run without training again), corrupt data found up front (every bad file listed at once) or in a
DataLoader worker (still one line naming the file), library bugs (they keep their traceback, and ``--debug`` shows
it for a user's error too), ``--pretrained imagenet`` without network, Ctrl-C in the course (a summary of what ran is
written), a read-only ``--out`` and SIGTERM in training (preemption: a checkpoint of the iterations done, one line,
exit 143, workers stopped, and the resumed run equals an uninterrupted one bitwise). Every fault but the real SIGTERM
to a training process group is simulated in-process (patched ``open``/``write_text``, a held lock, truncated PNGs, a
fake papermill, a signal to this process), so nothing touches the network or starts a Jupyter kernel."""

from __future__ import annotations

import builtins
import errno
import gc
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
import torch
import torchvision.models._api
from PIL import Image
from torch.utils.data import DataLoader
from train_cli import flags

import anncore.__main__
import anncore.course.runner
import anncore.engine.train
import anncore.models.checkpoint
from anncore.__main__ import _one_line, main
from anncore.data import CityscapesSegmentation
from anncore.data.cityscapes import check_data
from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.config import load_config
from anncore.engine.train import train
from anncore.errors import BadInput, OutputInUse, UserError
from anncore.files import write_json
from anncore.models.checkpoint import load_checkpoint, save_checkpoint
from anncore.outputs import LOCK_NAME, output_lock

RECIPE = (
    "data_root: synthetic\nsynthetic_size: [64, 128]\nsynthetic_scenes: [4, 2]\nbackbone: small\niters: 1\n"
    "batch_size: 2\ncrop: [64, 128]\nohem_min_kept: 100\nphotometric: false\nworkers: 0\ndevice: cpu\n"
)
TINY = dict(
    backbone="small", batch_size=2, crop=[64, 128], workers=0, device="cpu", ohem_min_kept=100, photometric=False
)
ENOSPC = "No space left on device"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture
def tiny_set(tmp_path: Path) -> Path:
    """A fresh 4 train + 2 val synthetic set of this test's own, free to corrupt."""
    return write_synthetic_cityscapes(tmp_path / "data", train=4, val=2, height=64, width=128)


def corrupt(path: Path) -> bytes:
    """Cut ``path`` to its first 200 bytes (PNG header intact, pixels gone: only decoding finds it); returns the
    original bytes."""
    original = path.read_bytes()
    assert len(original) > 400, path
    path.write_bytes(original[:200])
    return original


def one_line(stderr: str) -> str:
    """The single line ``stderr`` holds, checked to be one and free of a traceback."""
    assert "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


def error_line(stderr: str) -> str:
    """The command line's error in ``stderr`` of a run that trained (tqdm's progress bar shares stderr; its
    ``\\r``-separated refreshes are not error output): exactly one ``python -m anncore`` line, no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "python -m anncore" in line]
    assert len(errors) == 1, stderr
    return errors[0]


# ------------------------------------------------------------------------------------------------------ disk full
class _FullDisk:
    """A real binary file whose writes fail with ENOSPC once ``room`` bytes have gone in."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, ENOSPC)
        self.room -= size
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def full_disk(monkeypatch: pytest.MonkeyPatch, room: int = 1000) -> None:
    """From now on ``anncore.models.checkpoint`` writes onto a disk with ``room`` bytes left."""

    def fake_open(file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        return _FullDisk(handle, room) if "w" in mode else handle

    monkeypatch.setattr(anncore.models.checkpoint, "open", fake_open, raising=False)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"iteration": 1, "model": {"w": torch.zeros(4)}}, path)
    full_disk(monkeypatch)
    with pytest.raises(OSError) as caught:
        save_checkpoint({"iteration": 2, "model": {"w": torch.randn(4096)}}, path)
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert "No space left" in message and f"the previous {path} is intact" in message, message
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no checkpoint.pt.tmp


def test_disk_full_at_the_first_checkpoint_is_one_line(recipe, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    full_disk(monkeypatch)
    assert main(["train", "--config", str(recipe), "--out", str(out)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "No space left on the device of" in line, line
    assert f"no {out / 'checkpoint.pt'} was written" in line, line
    assert not list(out.glob("checkpoint.pt*")) and not (out / LOCK_NAME).exists()


def test_the_error_line_is_not_glued_to_the_progress_bar(recipe, tmp_path, monkeypatch, capsys):
    gc.collect()  # bars left open by earlier failing runs would shift this one's position
    full_disk(monkeypatch)
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m anncore train: error:") or "\npython -m anncore train: error:" in err, err
    assert err.rstrip().splitlines()[-1].startswith("python -m anncore train: error:"), err


def test_disk_full_while_writing_json_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = write_json({"miou": 0.5}, tmp_path / "metrics.json")
    real_write_text = Path.write_text

    def half_then_full(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)  # a partial temporary file, then: full
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError) as caught:
        write_json({"miou": float("nan"), "iou": list(range(19))}, target)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert _one_line(caught.value) == f"{ENOSPC}: {target}"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no .metrics.json.<pid>.tmp
    assert json.loads(target.read_text()) == {"miou": 0.5}


# --------------------------------------------------------------------------------------------------- output lock
def test_output_lock_holds_the_pid_and_is_exclusive(tmp_path):
    folder = tmp_path / "new" / "out"
    with output_lock(folder) as held:
        assert held == folder and (folder / LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(OutputInUse, match=rf"in use by a run in progress \(pid {os.getpid()}\)"):
            with output_lock(folder):
                pass
        assert (folder / LOCK_NAME).read_text() == str(os.getpid())  # the refused one leaves the holder's file
    assert not (folder / LOCK_NAME).exists()
    with output_lock(folder):  # free again
        pass


def test_a_second_run_into_the_same_out_is_refused(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--out", str(out)]
    with output_lock(out):
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert "is in use by a run in progress" in line and f"pid {os.getpid()}" in line, line
        assert (out / LOCK_NAME).read_text() == str(os.getpid())
        assert not (out / "checkpoint.pt").exists()
    assert main(argv) == 0
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 1
    assert (out / "metrics.json").is_file() and not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------- final checkpoint, then val
def test_final_checkpoint_is_written_before_the_final_validation(tiny_set, tmp_path, monkeypatch):
    monkeypatch.setattr(anncore.engine.train, "CHECK_DATA_UP_TO", 0)  # the up-front decode check is off
    image = CityscapesSegmentation(tiny_set, "val").samples[-1][0]
    original = corrupt(image)
    out = tmp_path / "run"
    settings = dict(data_root=str(tiny_set), out=str(out), iters=3, checkpoint_every=0, val_every=0, log_every=1)
    with pytest.raises(BadInput, match="cannot decode PNG") as caught:
        train(load_config(None, **settings, **TINY))
    assert str(image) in str(caught.value)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 3 and state["progress"]["last_val"] is None  # trained, not yet validated

    image.write_bytes(original)
    metrics = train(load_config(None, **settings, **TINY, resume=True))
    assert metrics["resumed_from"] == 3 and 0.0 <= metrics["final_miou"] <= 1.0
    assert json.loads((out / "metrics.json").read_text())["final_miou"] == pytest.approx(metrics["final_miou"])
    resumed = load_checkpoint(out / "checkpoint.pt")
    assert resumed["iteration"] == 3 and resumed["progress"]["last_val"]["iter"] == 3
    assert all(torch.equal(value, resumed["model"][key]) for key, value in state["model"].items())  # not retrained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert [r["iter"] for r in records if r["kind"] == "val"] == [3]


# ------------------------------------------------------------------------------------------------------ bad data
def test_the_up_front_check_lists_every_bad_file_at_once(tiny_set):
    train_image = CityscapesSegmentation(tiny_set, "train").samples[1][0]
    val_label = CityscapesSegmentation(tiny_set, "val").samples[0][1]
    corrupt(train_image)
    corrupt(val_label)
    datasets = [CityscapesSegmentation(tiny_set, "train"), CityscapesSegmentation(tiny_set, "val")]
    with pytest.raises(BadInput) as caught:
        check_data(datasets, progress=False)
    message = str(caught.value)
    assert message.startswith("2 bad Cityscapes files"), message
    assert str(train_image) in message and str(val_label) in message, message


def test_the_up_front_check_goes_on_past_the_first_bad_file_of_a_split(tiny_set):
    bad = [sample[0] for sample in CityscapesSegmentation(tiny_set, "train").samples[::2]]
    for image in bad:
        corrupt(image)
    with pytest.raises(BadInput, match=r"^2 bad Cityscapes files") as caught:
        check_data([CityscapesSegmentation(tiny_set, "train")], progress=False)
    assert all(str(image) in str(caught.value) for image in bad), caught.value


def test_a_data_error_in_a_dataloader_worker_is_one_line(tiny_set):
    image = CityscapesSegmentation(tiny_set, "val").samples[0][0]
    corrupt(image)
    batches = iter(DataLoader(CityscapesSegmentation(tiny_set, "val"), batch_size=1, num_workers=1))
    try:
        with pytest.raises(UserError) as caught:
            next(batches)
    finally:
        batches._shutdown_workers()  # now: left to garbage collection, it costs a later test a 5 s join timeout
    assert isinstance(caught.value, BadInput)
    assert "Original Traceback" in str(caught.value)  # it did come through a worker
    line = _one_line(caught.value)
    assert "\n" not in line and "Traceback" not in line, line
    assert line.startswith(f"{image}: cannot decode PNG"), line


# ------------------------------------------------------------------------------------------------- library bugs
@pytest.mark.parametrize(
    "bug",
    [RuntimeError("a bug"), ValueError("a plain ValueError"), KeyError("a bug")],
    ids=lambda err: type(err).__name__,
)
def test_a_library_bug_keeps_its_traceback(bug, monkeypatch, capsys):
    def broken(args):
        raise bug

    monkeypatch.setattr(anncore.__main__, "_info", broken)  # before main() builds the parser that binds it
    with pytest.raises(type(bug)) as caught:
        main(["info"])
    assert caught.value is bug
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "mistake",
    [BadInput("a user's mistake"), OSError(errno.EACCES, "Permission denied", "/nowhere")],
    ids=lambda err: type(err).__name__,
)
def test_debug_shows_the_traceback_of_a_user_error(mistake, monkeypatch, capsys):
    def refused(args):
        raise mistake

    monkeypatch.setattr(anncore.__main__, "_info", refused)
    assert main(["info"]) == 2
    assert "(--debug shows the traceback)" in one_line(capsys.readouterr().err)
    with pytest.raises(type(mistake)) as caught:
        main(["--debug", "info"])
    assert caught.value is mistake


# ---------------------------------------------------------------------------------------------------- no network
def test_pretrained_imagenet_without_network_is_one_line(recipe, tmp_path, monkeypatch, capsys):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    out = tmp_path / "run"
    argv = ["train", "--config", str(recipe), "--out", str(out), "--backbone", "resnet50", "--pretrained", "imagenet"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "torchvision could not download" in line and "--pretrained" in line, line
    assert "no network" in line, line
    assert not (out / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------ Ctrl-C, course
def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print(X)"),
    ]
    nbformat.write(nb, path)


@pytest.mark.parametrize("where", ["python", "kernel"])
def test_ctrl_c_in_the_course_writes_its_summary(where, tmp_path, monkeypatch, capsys):
    notebooks, params, out = tmp_path / "notebooks", tmp_path / "params", tmp_path / "runs"
    notebooks.mkdir()
    params.mkdir()
    for name in ("00_a", "01_b"):
        _notebook(notebooks / f"{name}.ipynb")
    ran = []

    def fake_execute(input_path, output_path, parameters=None, **kwargs):
        """No kernel: the first notebook 'runs' (writing nothing); Ctrl-C arrives during the second, either in
        this process or in the kernel, which papermill reports as an execution error."""
        ran.append((Path(input_path).name, parameters))
        if Path(input_path).name == "01_b.ipynb":
            if where == "python":
                raise KeyboardInterrupt
            raise papermill.PapermillExecutionError(1, 1, "print(X)", "KeyboardInterrupt", "", [])

    monkeypatch.setattr(anncore.course.runner.papermill, "execute_notebook", fake_execute)
    argv = ["course", "--notebooks", str(notebooks), "--params", str(params), "--out", str(out)]
    assert main(argv) == 130
    assert ran == [("00_a.ipynb", {}), ("01_b.ipynb", {})]
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line.startswith("interrupted in 01_b.ipynb") and "summary of what ran" in line, line
    (summary,) = out.glob("*/summary.json")
    assert line.endswith(str(summary)), line
    rows = json.loads(summary.read_text())
    assert [(row["notebook"], row["status"]) for row in rows] == [("00_a.ipynb", "ok"), ("01_b.ipynb", "interrupted")]
    assert "00_a.ipynb" in captured.out and "01_b.ipynb" in captured.out  # the table, printed as it ran


# ------------------------------------------------------------------------------------------------ read-only out
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root (or Windows) ignores folder permissions")
def test_a_read_only_out_is_one_line(recipe, tmp_path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["train", "--config", str(recipe), "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    line = one_line(capsys.readouterr().err)
    assert "Permission denied" in line and str(out) in line, line


def test_a_lock_file_removed_between_open_and_lock_is_not_trusted(tmp_path, monkeypatch):
    """The releasing run deletes the lock file; a run that opened it just before must not lock the deleted file
    (two runs would then write one folder): it sees the inode changed and locks the file now at the path."""
    import fcntl

    out = tmp_path / "run"
    real_flock, calls = fcntl.flock, []

    def release_in_between(handle, operation):
        if not calls:  # the first attempt: the holder releases (and removes the file) just before we lock
            (out / LOCK_NAME).unlink()
        calls.append(operation)
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", release_in_between)
    with output_lock(out):
        assert len(calls) == 2  # retried once, on the file that is now at the path
        assert (out / LOCK_NAME).read_text() == str(os.getpid())
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(OutputInUse), output_lock(out):
            pass


# ------------------------------------------------------------------------------------------- SIGTERM, preemption
REPO = Path(__file__).resolve().parents[1]
#: The runs of the SIGTERM tests: no periodic checkpoint and one validation at the end, so any checkpoint before the
#: end is the one the interruption wrote.
PREEMPTED = dict(iters=40, checkpoint_every=0, val_every=0, log_every=1, seed=3)


@pytest.fixture(scope="module")
def preemption_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("preempt") / "data", train=4, val=2, height=64, width=128)


@pytest.fixture(scope="module")
def uninterrupted(preemption_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of the uninterrupted run the SIGTERM tests resume to (workers=0: workers change no batch)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the SIGTERM tests' runs use one thread too: CPU training is bitwise at fixed threads
    try:
        train(load_config(None, data_root=str(preemption_set), out=str(out), **PREEMPTED, **TINY))
    finally:
        torch.set_num_threads(threads)
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Runs ``a`` and ``b`` ended with bitwise the same weights, optimiser state and mIoU, and ``b``'s log has each
    training iteration once."""
    x, y = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert x["iteration"] == y["iteration"] == PREEMPTED["iters"]
    assert x["model"].keys() == y["model"].keys()
    unequal = [key for key, value in x["model"].items() if not torch.equal(value, y["model"][key])]
    assert unequal == [], unequal
    for s, t in zip(x["optimizer"]["state"].values(), y["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(s[k], t[k]) for k in s), s.keys()
    miou = [json.loads((run / "metrics.json").read_text())["final_miou"] for run in (a, b)]
    assert miou[0] == miou[1], miou
    records = [json.loads(line) for line in (b / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if r["kind"] == "train"] == list(range(1, PREEMPTED["iters"] + 1))


def test_sigterm_during_a_step_checkpoints_that_iteration_and_exits_143(
    preemption_set, uninterrupted, tmp_path, monkeypatch, capsys
):
    """SIGTERM to this process while iteration 3 steps: the step (a half-done update is no state) and its log record
    finish, then a checkpoint of 3 iterations is written, one line says so, the status is 143 and SIGTERM's handler
    is the one from before; --resume then ends where the uninterrupted run did, bitwise."""
    real_step = anncore.engine.train._Run.step

    def step_with_sigterm(self, done, images, masks):
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # mid-step, as a scheduler's signal comes
        return real_step(self, done, images, masks)

    monkeypatch.setattr(anncore.engine.train._Run, "step", step_with_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    argv = ["train", *flags(data_root=preemption_set, out=out, **PREEMPTED, **TINY)]
    assert main(argv) == 143
    line = one_line(capsys.readouterr().err)
    assert line == (
        f"interrupted at iteration 3 of {PREEMPTED['iters']} by SIGTERM: {out / 'checkpoint.pt'} holds iteration 3; "
        "--resume continues from it"
    ), line
    assert signal.getsignal(signal.SIGTERM) == handler
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 3 and not (out / "metrics.json").exists()
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert_same_run(uninterrupted, out)


def test_sigterm_to_the_process_group_stops_workers_and_resumes_bitwise(preemption_set, uninterrupted, tmp_path):
    """A real SIGTERM to the process group of ``python -m anncore train`` with a DataLoader worker (what SLURM sends
    every process of a job it preempts): exit 143 with the one line, no process of the group left behind, a
    checkpoint of every iteration logged, and ``--resume`` reaches the uninterrupted run's weights bitwise."""
    out = tmp_path / "run"
    settings = {**PREEMPTED, **TINY, "workers": 1}
    command = [sys.executable, "-m", "anncore", "train", *flags(data_root=preemption_set, out=out, **settings)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    log = out / "log.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count('"train"') >= 3:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted at iteration ") and "by SIGTERM" in line, err
    assert line.endswith("; --resume continues from it"), err
    with pytest.raises(ProcessLookupError):  # the worker too is gone, not left to notice its parent died
        os.killpg(proc.pid, 0)
    killed_at = load_checkpoint(out / "checkpoint.pt")["iteration"]
    logged = [json.loads(line)["iter"] for line in log.read_text().splitlines() if '"train"' in line]
    assert 3 <= killed_at < PREEMPTED["iters"] and logged[-1] == killed_at, (killed_at, logged)
    assert f"interrupted at iteration {killed_at} of" in line
    train(load_config(None, data_root=str(preemption_set), out=str(out), resume=True, **settings))
    assert_same_run(uninterrupted, out)


def test_label_ids_out_of_range_are_listed_by_the_check_with_every_other_bad_file(tiny_set):
    """A ``_labelTrainIds.png`` holding 200 (no train id) is the user's data, not a bug: check-data lists it beside an
    undecodable image, naming the file and the value, instead of dying on it with a traceback."""
    label = CityscapesSegmentation(tiny_set, "val").samples[0][1]
    pixels = np.array(Image.open(label))
    pixels[0, 0] = 200
    Image.fromarray(pixels).save(label)
    image = CityscapesSegmentation(tiny_set, "train").samples[0][0]
    corrupt(image)
    with pytest.raises(BadInput) as caught:
        check_data([CityscapesSegmentation(tiny_set, "train"), CityscapesSegmentation(tiny_set, "val")], False)
    message = str(caught.value)
    assert message.startswith("2 bad Cityscapes files"), message
    assert f"{label}: expected" in message and "values [200] are not valid here" in message, message
    assert str(image) in message, message
