"""Inference modes against each other, and the project's mIoU against the official cityscapesscripts evaluator."""

import importlib
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from anncore.data import CLASS_NAMES, CityscapesSegmentation, val_transforms
from anncore.data.cityscapes import data_record
from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.evaluate import (
    PRESETS,
    InferenceConfig,
    _window_starts,
    confusion_over,
    evaluate,
    predict_probs,
    save_prediction,
)
from anncore.engine.metrics import ConfusionMatrix


class PixelModel(nn.Module):
    """A per-pixel classifier: its prediction at a pixel depends on that pixel only, so every way of tiling, padding
    or flipping the image must give exactly the whole-image answer."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_windows_cover_the_image_and_end_flush():
    assert _window_starts(10, 4, 3) == [0, 3, 6]
    assert _window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert _window_starts(3, 4, 3) == [0]
    for length, crop, stride in [(1024, 769, 513), (2048, 864, 576), (97, 33, 22)]:
        starts = _window_starts(length, crop, stride)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + crop] = True
        assert covered.all() and starts[-1] + crop == length


@pytest.mark.parametrize(
    "config",
    [
        InferenceConfig(crop=(16, 24), stride=(10, 9)),
        InferenceConfig(crop=(64, 64)),  # larger than the image: padded
        InferenceConfig(flip=True),
        InferenceConfig(crop=(16, 16), flip=True),
    ],
)
def test_tiling_and_flipping_do_not_change_a_per_pixel_model(config):
    model = PixelModel().eval()
    image = torch.randn(2, 3, 37, 45)
    whole = predict_probs(lambda x: model(x)["out"], image)
    torch.testing.assert_close(predict_probs(lambda x: model(x)["out"], image, config), whole, atol=1e-6, rtol=0)


def test_multiscale_averages_probabilities():
    model = PixelModel().eval()
    image = torch.randn(1, 3, 32, 48)
    probs = predict_probs(lambda x: model(x)["out"], image, InferenceConfig(scales=(0.5, 1.0, 1.5), flip=True))
    assert probs.shape == (1, 19, 32, 48)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 32, 48))


def test_the_evaluation_loop_runs_without_autograd():
    """``confusion_over`` predicts and calls ``after_batch`` with gradients off (its ``@torch.no_grad()``)."""
    model, seen = PixelModel(3), []

    def predict(images):
        seen.append(torch.is_grad_enabled())
        return model(images)["out"].argmax(1)

    batches = [(torch.rand(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))) for _ in range(2)]
    confusion = confusion_over(
        predict, batches, torch.device("cpu"), 3, 255, lambda *_: seen.append(torch.is_grad_enabled())
    )
    assert seen == [False] * 4 and torch.is_grad_enabled()
    assert int(confusion.matrix.sum()) == 2 * 2 * 4 * 5


def test_bad_inference_config():
    with pytest.raises(ValueError, match="scales"):
        InferenceConfig(scales=(0.0,))
    with pytest.raises(ValueError, match="stride needs a crop"):
        InferenceConfig(stride=(4, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        predict_probs(lambda x: x, torch.randn(3, 8, 8))
    assert PRESETS["official-test"].scales == (0.75, 1.0, 1.25)


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    write_synthetic_cityscapes(root, train=1, val=3, height=64, width=128, seed=3)
    return root


def test_evaluate_writes_label_id_predictions(synthetic_val, tmp_path):
    dataset = CityscapesSegmentation(synthetic_val, split="val", transforms=val_transforms())
    result = evaluate(PixelModel(), dataset, predictions_dir=tmp_path)
    assert result.images == 3 and result.confusion.sum() == sum(int((m != 255).sum()) for _, m in dataset)
    files = sorted(tmp_path.glob("*_pred.png"))
    assert [f.name.removesuffix("_pred.png") for f in files] == sorted(dataset.image_id(i) for i in range(3))
    label_ids = np.unique(np.array(Image.open(files[0])))
    assert set(label_ids) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


def test_miou_equals_cityscapesscripts(synthetic_val, tmp_path, monkeypatch):
    """The project's confusion-matrix mIoU equals the official evaluator's on the same prediction files."""
    pytest.importorskip("cityscapesscripts")
    dataset = CityscapesSegmentation(synthetic_val, split="val", transforms=val_transforms())
    rng = np.random.default_rng(0)
    ours = ConfusionMatrix(19, 255)
    preds, gts = [], []
    for i in range(len(dataset)):
        _, mask = dataset[i]
        pred = mask.numpy().copy()
        pred[pred == 255] = 0
        noise = rng.random(pred.shape) < 0.3  # corrupt 30% of pixels to random classes
        pred[noise] = rng.integers(0, 19, noise.sum())
        ours.update(torch.from_numpy(pred), mask)
        preds.append(str(save_prediction(pred, dataset.image_id(i), tmp_path)))
        gts.append(str(dataset.samples[i][1]).replace("labelTrainIds", "labelIds"))
    monkeypatch.setenv("CITYSCAPES_DATASET", str(synthetic_val))
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(tmp_path))
    sys.modules.pop("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling", None)
    cs = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    cs.args.evalInstLevelScore = False  # its instance score uses np.in1d, removed in numpy 2.4
    cs.args.quiet = True
    cs.args.JSONOutput = False
    official = cs.evaluateImgLists(preds, gts, cs.args)
    metrics = ours.compute()
    assert metrics["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    for name, iou in zip(CLASS_NAMES, metrics["iou"], strict=True):
        expected = official["classScores"][name]
        assert (np.isnan(iou) and np.isnan(expected)) or iou == pytest.approx(expected, abs=1e-9)


def test_evaluate_command_end_to_end(synthetic_val, small_model_file, tmp_path, capsys):
    """`python -m anncore evaluate` on a checkpoint file: metrics.json, label-id predictions and overlays."""
    import json

    from anncore.__main__ import main

    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(small_model_file("ann")), "--data-root", str(synthetic_val)]
    argv += ["--out", str(out), "--crop", "32", "64", "--flip", "--save-predictions", "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 3 and len(metrics["iou"]) == 19 and metrics["inference"]["flip"] is True
    dataset = CityscapesSegmentation(synthetic_val, "val")
    # the data it read, recorded as training records it: absolute root, image count, file-list fingerprint
    assert metrics["data"] == data_record(synthetic_val, [dataset])
    assert metrics["data"]["root"] == str(synthetic_val.resolve()) and metrics["data"]["val_images"] == 3
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(
        f"{dataset.image_id(i)}_pred.png" for i in range(len(dataset))
    )  # label-id PNGs alone: what the official evaluator walks
    assert len(list((out / "overlays").glob("*_overlay.png"))) == 3
    assert "mIoU" in capsys.readouterr().out


def test_the_official_evaluator_walks_the_predictions_folder_as_written(
    synthetic_val, small_model_file, tmp_path, monkeypatch
):
    """cityscapesscripts' own command (``main()``: it globs the ground truth and walks ``$CITYSCAPES_RESULTS`` for
    each frame's prediction) accepts ``evaluate --save-predictions``' folder and agrees with its metrics.json."""
    import json

    from anncore.__main__ import main

    pytest.importorskip("cityscapesscripts")
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(small_model_file("apnb")), "--data-root", str(synthetic_val)]
    assert main([*argv, "--out", str(out), "--save-predictions", "--device", "cpu"]) == 0
    ours = json.loads((out / "metrics.json").read_text())
    exported = tmp_path / "official"
    exported.mkdir()
    for name, value in {"CITYSCAPES_DATASET": synthetic_val, "CITYSCAPES_RESULTS": out / "predictions",
                        "CITYSCAPES_EXPORT_DIR": exported}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(sys, "argv", ["evalPixelLevelSemanticLabeling"])  # no file lists: it walks the folders
    sys.modules.pop("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling", None)
    cs = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    cs.args.evalInstLevelScore = False  # its instance score uses np.in1d, removed in numpy 2.4
    cs.args.quiet = True
    cs.main()
    official = json.loads((exported / "resultPixelLevelSemanticLabeling.json").read_text())
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
