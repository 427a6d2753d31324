"""The one output-folder rule (:func:`anncore.outputs.fresh_output`): nothing a user owns is deleted or overwritten,
and an earlier run's outputs are never mixed with a new run's, proven on the folder rule itself and on the
commands that write folders (the one-line refusals are cases of tests/test_bad_input.py)."""

import errno
from pathlib import Path

import pytest

from anncore.__main__ import main
from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.errors import OutputInUse
from anncore.outputs import OUTPUTS_NAME, fresh_output


def write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)


def test_a_new_folder_is_used_and_what_was_written_is_recorded(tmp_path):
    with fresh_output(tmp_path / "out") as out:
        write(out, "metrics.json", "predictions/a_pred.png")
    assert (out / OUTPUTS_NAME).read_text().split() == ["metrics.json", "predictions/a_pred.png"]


def test_a_folder_that_holds_files_is_refused_without_overwrite(tmp_path):
    with fresh_output(tmp_path) as out:
        write(out, "metrics.json")
    with pytest.raises(OutputInUse, match="already holds metrics.json"), fresh_output(tmp_path):
        pass


def test_overwrite_replaces_only_an_earlier_runs_files(tmp_path):
    with fresh_output(tmp_path) as out:
        write(out, "metrics.json", "predictions/a_pred.png", "predictions/b_pred.png")
    with fresh_output(tmp_path, overwrite=True) as out:
        assert not (out / "predictions").exists()  # the earlier run's predictions are gone, not mixed in
        write(out, "metrics.json", "predictions/a_pred.png")
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["a_pred.png"]


def test_overwrite_never_deletes_a_file_anncore_did_not_write(tmp_path):
    with fresh_output(tmp_path) as out:
        write(out, "predictions/a_pred.png")
    write(tmp_path, "predictions/mine.txt")  # the user's, inside a folder the project wrote
    with pytest.raises(OutputInUse, match="holds predictions/mine.txt, which anncore did not write"):
        with fresh_output(tmp_path, overwrite=True):
            pass
    assert (tmp_path / "predictions" / "mine.txt").read_text() == "predictions/mine.txt"
    assert (tmp_path / "predictions" / "a_pred.png").exists()  # refused before anything was deleted


def test_a_failed_run_records_its_partial_outputs_for_a_later_overwrite(tmp_path):
    with pytest.raises(RuntimeError), fresh_output(tmp_path) as out:
        write(out, "predictions/a_pred.png")
        raise RuntimeError("the disk filled up")
    with fresh_output(tmp_path, overwrite=True) as out:
        assert not any(out.rglob("*.png"))


def test_evaluate_twice_replaces_the_first_evaluation_whole(small_model_file, tmp_path, capsys):
    """The issue's case: a full evaluation with predictions, then ``--limit 1`` into the same --out: refused, and
    with --overwrite the folder holds one image's predictions beside a metrics.json that says one image."""
    data = write_synthetic_cityscapes(tmp_path / "cs", train=1, val=3, height=64, width=128, seed=3)
    out = tmp_path / "eval"
    base = ["evaluate", "--checkpoint", str(small_model_file("ann")), "--data-root", str(data), "--out", str(out)]
    base.append("--save-predictions")
    assert main(base) == 0
    first = sorted(p.name for p in (out / "predictions").iterdir())
    assert len(first) > 1
    assert main([*base, "--limit", "1"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main([*base, "--limit", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "predictions").iterdir()) == first[:1]


def test_disk_full_in_a_commands_folder_names_it_and_leaves_no_partial_outputs(tmp_path):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"No space left on the device of {tmp_path}; this run's partial outputs"):
        with fresh_output(tmp_path) as out:
            write(out, "predictions/a_pred.png")
            full()
    assert not any(p.is_file() for p in tmp_path.rglob("*.png"))


def test_disk_full_while_writing_a_synthetic_set_removes_the_partial_set(tmp_path, monkeypatch):
    import anncore.data.synthetic as synthetic

    real, calls = synthetic._write_scene, []

    def fill_up(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_write_scene", fill_up)
    with pytest.raises(OSError, match="while writing the synthetic set .*the partial set was removed"):
        write_synthetic_cityscapes(tmp_path / "set", train=2, val=1, height=64, width=128)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_overwrite_also_replaces_an_unrecorded_earlier_run_by_its_file_names(tmp_path):
    """A folder written before the record existed: ``known`` names the command's own files, nothing else goes."""
    write(tmp_path, "metrics.json", "predictions/a_pred.png")
    with fresh_output(tmp_path, overwrite=True, known=("metrics.json", "predictions/*_pred.png")) as out:
        assert not any(p.is_file() for p in out.rglob("*") if p.name != ".anncore.lock")
    write(tmp_path, "notes_pred.txt")
    with pytest.raises(OutputInUse, match="notes_pred.txt, which anncore did not write"):
        with fresh_output(tmp_path, overwrite=True, known=("metrics.json", "predictions/*_pred.png")):
            pass
