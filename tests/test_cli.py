"""The command line answers --help and info without touching the network."""

import json
import subprocess
import sys

from anncore.__main__ import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "anncore", "--help"], capture_output=True, text=True, check=True)
    assert "info" in out.stdout and "course" in out.stdout


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu"
    assert report["sdpa_float32"]["math"] is True


def test_bad_input_prints_a_message_not_a_traceback(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "anncore",
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "error: checkpoint" in out.stderr and "none.pt" in out.stderr and "Traceback" not in out.stderr


def _tiny_run(tmp_path):
    """A one-iteration run on a tiny synthetic set: its folder."""
    from anncore.engine.config import load_config
    from anncore.engine.train import train

    out = tmp_path / "run"
    config = load_config(
        data_root="synthetic", synthetic_size=[64, 128], synthetic_scenes=[4, 2], backbone="small", iters=1,
        batch_size=2, crop=[64, 128], ohem_min_kept=100, photometric=False, workers=0, device="cpu", out=str(out),
        optimizer="adam", lr=1e-3,
    )  # fmt: skip
    train(config)
    return out


def test_export_keeps_the_model_and_drops_the_optimiser(tmp_path, capsys):
    import torch

    from anncore.models.checkpoint import load_checkpoint, save_checkpoint
    from anncore.models.loading import load_model

    run = _tiny_run(tmp_path)
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "shipped")]) == 0
    shipped = tmp_path / "shipped"
    files = ["config.yaml", "log.jsonl", "metrics.json", "model.pt"]
    assert sorted(p.name for p in shipped.iterdir()) == [".anncore-outputs", *files]  # + the record of what it wrote
    assert (shipped / ".anncore-outputs").read_text().split() == files
    state = load_checkpoint(shipped / "model.pt")
    assert "optimizer" not in state and "rng" not in state
    assert (shipped / "model.pt").stat().st_size < (run / "checkpoint.pt").stat().st_size / 2  # Adam: 2 moments
    full, exported = load_model(run / "checkpoint.pt"), load_model(shipped / "model.pt")
    x = torch.randn(1, 3, 64, 128)
    torch.testing.assert_close(full(x)["out"], exported(x)["out"], rtol=0, atol=0)
    poisoned = load_checkpoint(run / "checkpoint.pt")
    next(v for k, v in poisoned["model"].items() if k.endswith("running_var")).fill_(float("inf"))
    save_checkpoint({k: v for k, v in poisoned.items() if k != "format"}, tmp_path / "poisoned.pt")
    assert main(["export", "--checkpoint", str(tmp_path / "poisoned.pt"), "--out", str(tmp_path / "no")]) == 2
    assert "non-finite values" in capsys.readouterr().err


def test_ablate_command_writes_one_document(tmp_path, capsys):
    (tmp_path / "recipe.yaml").write_text(
        "data_root: synthetic\nsynthetic_size: [64, 128]\nsynthetic_scenes: [4, 2]\nbackbone: small\niters: 1\n"
        "batch_size: 2\ncrop: [64, 128]\nohem_min_kept: 100\nphotometric: false\nworkers: 0\ndevice: cpu\n"
    )
    argv = ["ablate", "--config", str(tmp_path / "recipe.yaml"), "--heads", "fcn", "apnb", "--seeds", "3"]
    assert main([*argv, "--out", str(tmp_path / "abl")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    document = json.loads(open(printed[-1]).read())  # the path is printed last
    assert [(r["head"], r["seed"]) for r in document["runs"]] == [("fcn", 3), ("apnb", 3)]
    assert 0 <= document["summary"]["apnb"]["follow_rate"]["mean"] <= 1
    assert any(line.startswith("  fcn: mIoU") and "follow rate" in line for line in printed)
