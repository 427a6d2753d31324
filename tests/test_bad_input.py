"""Bad input, table-driven: each case is a command (or a call) a user might get wrong, the exit status it must end
with, and a fragment of the one-line message it must print instead of a traceback. Plus the NaN-safety promise: a
diverged run never leaves a checkpoint with a non-finite value behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anncore import AFNB, APNB, NonLocal2d, effective_attention
from anncore.__main__ import main
from anncore.data.synthetic import MANIFEST, write_synthetic_cityscapes
from anncore.engine.config import load_config
from anncore.engine.train import NonFiniteLossError, train
from anncore.models.checkpoint import load_checkpoint, non_finite, save_checkpoint

RECIPE = (
    "data_root: synthetic\nsynthetic_size: [64, 128]\nsynthetic_scenes: [4, 2]\nbackbone: small\niters: 1\n"
    "batch_size: 2\ncrop: [64, 128]\nohem_min_kept: 100\nphotometric: false\nworkers: 0\ndevice: cpu\n"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good recipe and checkpoint, and the broken files users hand in."""
    root = tmp_path_factory.mktemp("bad")
    (root / "recipe.yaml").write_text(RECIPE)
    train(load_config(root / "recipe.yaml", out=str(root / "run")))
    good = root / "run" / "checkpoint.pt"
    (root / "broken.yaml").write_text("iters: 5\ncrop: [64, 128\n")
    (root / "text.pt").write_text("not a checkpoint\n")
    (root / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    state = load_checkpoint(good)
    poisoned = {k: v for k, v in state.items() if k != "format"}
    next(v for k, v in poisoned["model"].items() if k.endswith("running_var")).fill_(float("nan"))
    save_checkpoint(poisoned, root / "poisoned.pt")
    state = load_checkpoint(good)  # afresh: the poisoned copy shares tensors with the first
    five = {k: v for k, v in state.items() if k != "format"}
    five["model_config"] = {**state["model_config"], "num_classes": 5}
    five["model"] = {k: (v[:5] if v.shape[:1] == (19,) else v) for k, v in state["model"].items()}
    save_checkpoint(five, root / "five_classes.pt")
    stale = root / "stale_run"
    stale.mkdir()
    shutil.copyfile(root / "truncated.pt", stale / "checkpoint.pt")
    state = load_checkpoint(good)
    other_head = {k: v for k, v in state.items() if k != "format"}
    other_head["model_config"] = {**state["model_config"], "head": "fcn"}  # the weights are still ann's
    save_checkpoint(other_head, root / "other_head.pt")
    state = load_checkpoint(good)
    reshaped = {k: v for k, v in state.items() if k != "format"}
    reshaped["model"] = {**state["model"], "head.cls.weight": state["model"]["head.cls.weight"][:, :7]}
    save_checkpoint(reshaped, root / "reshaped.pt")
    corrupt = write_synthetic_cityscapes(root / "corrupt", train=2, val=1, height=64, width=128)
    image = next((corrupt / "leftImg8bit" / "val").glob("*/*.png"))
    image.write_bytes(image.read_bytes()[:200])  # header intact, pixels cut: only decoding finds it
    (corrupt / MANIFEST).unlink()  # as real data: train checks small real sets before training, not its own set
    (root / "bad_params").mkdir()
    (root / "bad_params" / "00_setup.yaml").write_text("SEED: [1, 2\n")
    (root / "nan_lr.yaml").write_text(RECIPE + "lr: .nan\n")
    (root / "inf_momentum.yaml").write_text(RECIPE + "momentum: .inf\n")
    (root / "two_weights.yaml").write_text(RECIPE + "class_weights: [1.0, 2.0]\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(root / "photo.png")  # an 8x16 grid
    (root / "occupied").mkdir()
    (root / "occupied" / "mine.txt").write_text("the user's notes\n")  # a folder of the user's, as --out
    noted = write_synthetic_cityscapes(root / "noted_set", train=1, val=1, height=64, width=128)
    (noted / "leftImg8bit" / "notes.txt").write_text("the user's notes\n")  # inside a set anncore wrote
    return {"root": root, "good": good}


CLI_CASES = [
    ("yaml syntax", ["train", "--config", "{root}/broken.yaml"], "broken.yaml: not valid YAML at line"),
    ("config is a folder", ["train", "--config", "{root}"], "no such file"),
    ("negative class weight", ["train", "--config", "{root}/recipe.yaml", "--class-weights", *["1"] * 18, "-1"],
     "class_weights must all be > 0"),
    ("text as checkpoint", ["evaluate", "--checkpoint", "{root}/text.pt", "--out", "{root}/e"],
     "text.pt is not a readable checkpoint"),
    ("truncated checkpoint", ["evaluate", "--checkpoint", "{root}/truncated.pt", "--out", "{root}/e"],
     "truncated.pt is not a readable"),
    ("corrupt resume", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/stale_run", "--resume"],
     "is not a readable checkpoint"),
    ("limit 0", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/e", "--limit", "0"],
     "limit must be a number of images >= 1"),
    ("limit -1", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/e", "--limit", "-1"], "got -1"),
    ("5-class model on 19 classes", ["evaluate", "--checkpoint", "{root}/five_classes.pt", "--out", "{root}/e"],
     "predicts 5 classes"),
    ("poisoned model, evaluate", ["evaluate", "--checkpoint", "{root}/poisoned.pt", "--out", "{root}/e"],
     "non-finite values in"),
    ("poisoned model, cue", ["cue", "--checkpoint", "{root}/poisoned.pt"], "holds a poisoned model"),
    ("params folder missing", ["course", "--params", "{root}/nowhere"], "no such folder"),
    ("unknown ablation head", ["ablate", "--config", "{root}/recipe.yaml", "--heads", "psp", "--out", "{root}/a"],
     "head must be one of"),
    ("--out is a file", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/recipe.yaml"],
     "recipe.yaml is a file; expected a folder"),
    ("--out under a file", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/recipe.yaml/run"],
     "recipe.yaml is a file; expected a folder"),
    ("synth --out is a file", ["synth", "--out", "{root}/recipe.yaml", "--train", "1", "--val", "1"],
     "recipe.yaml is a file; expected a folder"),
    ("SDPA backend this device lacks", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/eff",
     "--attn-implementation", "efficient"], "--attn-implementation efficient: that SDPA backend cannot run on cpu"),
    ("--checkpoint is a run folder", ["evaluate", "--checkpoint", "{root}/run", "--out", "{root}/e"],
     "checkpoint {root}/run is a folder, not a file: pass {root}/run/checkpoint.pt"),
    ("one tensor of the wrong shape", ["evaluate", "--checkpoint", "{root}/reshaped.pt", "--out", "{root}/e"],
     "head.cls.weight has shape (19, 7, 1, 1), the model's is (19, 128, 1, 1)"),
    ("head does not fit the weights", ["evaluate", "--checkpoint", "{root}/other_head.pt", "--out", "{root}/e"],
     "weights do not fit the model its model_config describes"),
    ("pretrained file is text", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/pre", "--backbone",
     "resnet50", "--pretrained", "{root}/text.pt"], "text.pt is not a readable pretrained checkpoint"),
    ("pretrained file missing", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/pre", "--backbone",
     "resnet50", "--pretrained", "{root}/nowhere.pth"], "nowhere.pth does not exist"),
    ("undecodable image, check-data", ["check-data", "--data-root", "{root}/corrupt"],
     "1 bad Cityscapes files"),
    ("undecodable image, train checks first", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/c",
     "--data-root", "{root}/corrupt"], "1 bad Cityscapes files"),
    ("unknown split", ["check-data", "--data-root", "{root}/corrupt", "--splits", "valid"], "split must be one of"),
    ("course params YAML syntax", ["course", "--params", "{root}/bad_params", "--only", "00"],
     "00_setup.yaml: not valid YAML"),
    # every float a user types is finite (nan <= 0 is false: range checks alone let NaN through)
    ("--lr nan", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--lr", "nan"],
     "lr must be a finite number, got nan"),
    ("--lr inf", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--lr", "inf"],
     "lr must be a finite number, got inf"),
    ("--lr=-inf", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--lr=-inf"],
     "lr must be a finite number, got -inf"),
    ("--weight-decay nan", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--weight-decay", "nan"],
     "weight_decay must be a finite number, got nan"),
    ("--momentum inf", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--momentum", "inf"],
     "momentum must be a finite number, got inf"),
    ("--poly-power nan", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--poly-power", "nan"],
     "poly_power must be a finite number, got nan"),
    ("--aux-weight inf", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--aux-weight", "inf"],
     "aux_weight must be a finite number, got inf"),
    ("--scale-range nan", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--scale-range", "nan",
     "1"], "scale_range[0] must be a finite number, got nan"),
    ("--class-weights inf", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--class-weights",
     *["1"] * 18, "inf"], "class_weights[18] must be a finite number, got inf"),
    ("lr: .nan in YAML", ["train", "--config", "{root}/nan_lr.yaml", "--out", "{root}/f"],
     "lr must be a finite number, got nan"),
    ("momentum: .inf in YAML", ["train", "--config", "{root}/inf_momentum.yaml", "--out", "{root}/f"],
     "momentum must be a finite number, got inf"),
    ("evaluate --scales nan", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/e", "--scales", "1", "nan"],
     "scales must be a finite number, got nan"),
    ("evaluate --scales inf", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/e", "--scales", "inf"],
     "scales must be a finite number, got inf"),
    ("gpu-check --budget-s nan", ["gpu-check", "--out", "{root}/g", "--dry-run", "--budget-s", "nan"],
     "--budget-s must be a positive number of seconds, got nan"),
    # cross-field rules, before any work
    ("--class-weights too few", ["train", "--config", "{root}/recipe.yaml", "--out", "{root}/f", "--class-weights",
     "1", "2", "3"], "class_weights has 3 entries, expected 19"),
    ("class_weights too few in YAML", ["train", "--config", "{root}/two_weights.yaml", "--out", "{root}/f"],
     "class_weights has 2 entries, expected 19"),
    ("explore --cells 0", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out", "{root}/x", "--cells",
     "0"], "--cells must be a number of query cells per side >= 1, got 0"),
    ("explore --cells -1", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out", "{root}/x", "--cells",
     "-1"], "got -1"),
    ("explore --cells above the cap", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out", "{root}/x",
     "--cells", "1000"], "--cells 1000 would draw 1000000 figures per block and photo"),
    ("explore --cells above the grid", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out", "{root}/x",
     "--cells", "9", "--max-cells", "9"], "photo.png is 8x16, so at most --cells 8"),
    ("explore --max-side 0", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out", "{root}/x",
     "--max-side", "0"], "--max-side must be a number of pixels >= 1, got 0"),
    # a user's files are never deleted or overwritten, and an earlier run's outputs never mixed with a new run's
    ("evaluate into a folder that holds files", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/occupied"],
     "already holds mine.txt (1 files); choose a new or empty folder, or pass --overwrite"),
    ("evaluate --overwrite over a user's file", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/occupied",
     "--overwrite"], "holds mine.txt, which anncore did not write"),
    ("export into a folder that holds files", ["export", "--checkpoint", "{good}", "--out", "{root}/occupied"],
     "already holds mine.txt"),
    ("explore into a folder that holds files", ["explore", "--checkpoint", "{good}", "{root}/photo.png", "--out",
     "{root}/occupied", "--cells", "1"], "already holds mine.txt"),
    ("cue --json over an existing file", ["cue", "--checkpoint", "{good}", "--json", "{root}/recipe.yaml"],
     "--json {root}/recipe.yaml exists; choose another file, or pass --overwrite"),
    ("convert over an existing file", ["convert", "--from", "official", "{root}/text.pt", "{root}/recipe.yaml"],
     "exists; choose another"),
    ("synth over a set holding a user's file", ["synth", "--out", "{root}/noted_set", "--train", "1", "--val", "1",
     "--height", "64", "--width", "128"], "holds leftImg8bit/notes.txt, which the generator did not write"),
    ("ablate into a folder that holds files", ["ablate", "--config", "{root}/recipe.yaml", "--heads", "fcn",
     "--seeds", "0", "--out", "{root}/occupied"], "already holds mine.txt (1 files)"),
    ("ablate --overwrite over a user's file", ["ablate", "--config", "{root}/recipe.yaml", "--heads", "fcn",
     "--seeds", "0", "--out", "{root}/occupied", "--overwrite"], "holds mine.txt, which anncore did not write"),
    ("evaluate --stride above --crop", ["evaluate", "--checkpoint", "{good}", "--out", "{root}/e", "--crop", "32",
     "32", "--stride", "48", "16"], "stride (48, 16) is larger than the crop (32, 32): the windows would leave"),
    # large requests: refused above a bound the user can lift, with what they would cost
    ("synth --width 100000", ["synth", "--out", "{root}/big", "--train", "1", "--val", "1", "--width", "100000"],
     "a 256x100000 synthetic image takes about 2.4 GiB of memory"),
    ("synth --height 100000", ["synth", "--out", "{root}/big", "--train", "1", "--val", "1", "--height", "100000",
     "--max-side", "50000"], "sides above 50000 are refused unless you raise the bound"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line(files, argv, message, capsys):
    argv = [a.format(root=files["root"], good=files["good"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = message.format(root=files["root"])
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: APNB(8, 8, 4, 4)(torch.rand(1, 8, 0, 5)), r"x is empty: shape \(1, 8, 0, 5\)"),
        (lambda: NonLocal2d(8, 8, 4, 4)(torch.rand(0, 8, 3, 5)), "B, H and W must all be >= 1"),
        (lambda: effective_attention(torch.rand(1, 4, 110), 0, 5), "height of the sampled feature map must be a"),
        (lambda: effective_attention(torch.rand(1, 4, 110), 6, -1), "width of the sampled feature map must be a"),
        (lambda: APNB(0, 8), "in_channels must be a positive int, got 0"),
        (lambda: NonLocal2d(8, 8, key_channels=0), "key_channels must be a positive int"),
        (lambda: AFNB(8, 16, 16, value_channels=-2), "value_channels must be a positive int, got -2"),
        (lambda: effective_attention(torch.rand(1, 64, 110), 5, 7), "64 query rows but a 5x7 map has only 35 pixels"),
        (lambda: APNB(8, 8, 4, 4)(torch.ones(1, 8, 4, 4, dtype=torch.int64)), "APNB input x must be a float.*int64"),
        (lambda: NonLocal2d(8, 8, 4, 4)(torch.ones(1, 8, 4, 4, dtype=torch.uint8)), "NonLocal2d input x .*uint8"),
        (lambda: AFNB(8, 8, 8)(torch.rand(1, 8, 4, 4), torch.ones(1, 8, 4, 4, dtype=torch.int32)), "AFNB .*int32"),
    ],
)
def test_blocks_refuse_empty_channels_and_inputs(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_diverged_run_leaves_no_poisoned_checkpoint(files, tmp_path, capsys):
    config = load_config(
        files["root"] / "recipe.yaml", out=str(tmp_path / "run"), iters=20, lr=1e6, momentum=0.0, checkpoint_every=1
    )
    with pytest.raises(NonFiniteLossError, match="iteration") as caught:
        train(config)
    assert "--resume" in str(caught.value)
    # lr 1e6 diverges after a few good steps (iteration 3 here), so checkpoints were written: the last good one is
    # kept, finite everywhere, and the message names it
    kept = tmp_path / "run" / "checkpoint.pt"
    assert kept.exists() and f"{kept} holds iteration " in str(caught.value)
    state = load_checkpoint(kept)
    assert non_finite({"model": state["model"], "optimizer": state["optimizer"]["state"]}) == []
    resumed = load_config(files["root"] / "recipe.yaml", out=str(tmp_path / "run"), iters=20, lr=1e-3,
                          momentum=0.0, checkpoint_every=1, resume=True)  # fmt: skip
    try:  # the advice can be followed: --resume accepts the lower --lr (whether these weights recover is theirs)
        train(resumed)
    except NonFiniteLossError:
        pass
    assert "lr: 1000000.0 -> 0.001" in capsys.readouterr().err
    state = load_checkpoint(kept)
    assert non_finite({"model": state["model"], "optimizer": state["optimizer"]["state"]}) == []


def test_debug_shows_the_traceback(files):
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        main(["--debug", "evaluate", "--checkpoint", str(files["root"] / "text.pt"), "--out", str(files["root"] / "e")])


def test_a_cut_metrics_json_does_not_stop_a_finished_run_from_resuming(files, tmp_path, capsys):
    out = tmp_path / "run"
    train(load_config(files["root"] / "recipe.yaml", out=str(out)))
    (out / "metrics.json").write_text('{"final_miou": 0.')  # cut short
    resumed = train(load_config(files["root"] / "recipe.yaml", out=str(out), resume=True))
    assert resumed["final_miou"] == pytest.approx(json.loads((out / "metrics.json").read_text())["final_miou"])
