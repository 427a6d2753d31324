"""ConfusionMatrix: a hand-computed case, a brute-force reference, and the errors."""

import math

import numpy as np
import pytest
import torch

from anncore.engine.metrics import ConfusionMatrix


def test_hand_computed_example_with_ignore_and_an_absent_class():
    # classes 0..3; class 3 appears in neither prediction nor ground truth -> nan, left out of the mean
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])  # the last two are ignored whatever they say
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    result = cm.compute()
    iou = [1 / 3, 2 / 3, 1 / 2]  # TP / (TP + FP + FN)
    assert result["iou"][:3] == pytest.approx(iou) and math.isnan(result["iou"][3])
    assert result["miou"] == pytest.approx(sum(iou) / 3)
    assert result["pixel_acc"] == pytest.approx(4 / 6)


def test_a_class_only_predicted_counts_with_iou_zero():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 2]), torch.tensor([0, 0]))
    assert cm.compute()["iou"][2] == 0.0
    assert cm.compute()["miou"] == pytest.approx((0.5 + 0.0) / 2)


def test_against_brute_force_and_accumulation():
    g = torch.Generator().manual_seed(0)
    k = 6
    preds = [torch.randint(0, k, (2, 7, 9), generator=g) for _ in range(3)]
    targets = [torch.randint(0, k, (2, 7, 9), generator=g) for _ in range(3)]
    targets[1][0, :3] = 255
    cm = ConfusionMatrix(k)
    for p, t in zip(preds, targets, strict=True):
        cm.update(p, t)
    p, t = torch.cat(preds).numpy().ravel(), torch.cat(targets).numpy().ravel()
    keep = t != 255
    p, t = p[keep], t[keep]
    expected = [np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c)) for c in range(k)]
    result = cm.compute()
    assert result["iou"] == pytest.approx(expected)
    assert result["miou"] == pytest.approx(np.mean(expected))
    assert result["pixel_acc"] == pytest.approx(np.mean(p == t))
    cm.reset()
    assert math.isnan(cm.compute()["miou"]) and math.isnan(cm.compute()["pixel_acc"])


def test_perfect_prediction():
    t = torch.randint(0, 19, (1, 16, 16))
    cm = ConfusionMatrix(19)
    cm.update(t.clone(), t)
    assert cm.compute()["miou"] == 1.0 and cm.compute()["pixel_acc"] == 1.0


def test_errors_name_the_problem():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target has labels outside 0..2"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="pred has labels outside 0..2"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer label maps"):
        cm.update(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
