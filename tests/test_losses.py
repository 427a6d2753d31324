"""Losses against explicit numpy computations of the official torchcv algorithms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anncore.engine.losses import CITYSCAPES_CLASS_WEIGHTS, SegmentationLoss, cross_entropy, ohem_cross_entropy


def numpy_ohem(logits, target, thresh, min_kept, weight=None, ignore=255):
    """torchcv FSOhemCELoss.forward, step by step in numpy: sort p(gt), threshold, plain mean of kept CE."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    k = logits.shape[1]
    logp = logp.transpose(0, 2, 3, 1).reshape(-1, k)
    t = target.reshape(-1)
    valid = t != ignore
    lp = logp[valid, t[valid]]
    w = np.ones(k) if weight is None else np.asarray(weight, dtype=np.float64)
    ce = -lp * w[t[valid]]
    order = np.argsort(np.exp(lp), kind="stable")
    sort_prob = np.exp(lp)[order]
    threshold = max(sort_prob[min(min_kept, sort_prob.size - 1)], thresh)
    return ce[order][sort_prob < threshold].mean()


def sample(seed, b=2, k=5, h=9, w=11, scale=3.0, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g) * scale
    target = torch.randint(0, k, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thresh,min_kept", [(0.7, 10), (0.7, 100), (0.7, 10_000), (0.3, 1), (1.0, 50)])
@pytest.mark.parametrize("weighted", [False, True])
def test_ohem_matches_the_official_algorithm(seed, thresh, min_kept, weighted):
    logits, target = sample(seed)
    weight = torch.rand(5, generator=torch.Generator().manual_seed(9)) + 0.5 if weighted else None
    got = ohem_cross_entropy(logits.double(), target, thresh, min_kept, weight)
    expected = numpy_ohem(logits.numpy(), target.numpy(), thresh, min_kept, None if weight is None else weight.numpy())
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_min_kept_pixels_when_the_model_is_confident():
    logits, target = sample(0, ignore_frac=0.0)
    logits = logits + 20.0 * F.one_hot(target, 5).permute(0, 3, 1, 2)  # every p(gt) > 0.7
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, target, 0.7, min_kept=17).backward()
    pixels_with_gradient = logits.grad.abs().sum(1).gt(0).sum().item()
    assert pixels_with_gradient == 17  # strict p < p_sorted[17]: exactly the 17 hardest


def test_ohem_with_nothing_to_keep_is_zero_not_nan():
    logits, target = sample(1, ignore_frac=1.0)
    logits.requires_grad_(True)
    for loss in (ohem_cross_entropy(logits, target), cross_entropy(logits, target)):
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_ohem_rejects_bad_parameters():
    logits, target = sample(0)
    with pytest.raises(ValueError, match="thresh"):
        ohem_cross_entropy(logits, target, thresh=0.0)
    with pytest.raises(ValueError, match="min_kept"):
        ohem_cross_entropy(logits, target, min_kept=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_is_the_weighted_mean_over_valid_pixels(weighted):
    logits, target = sample(3)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.7]) if weighted else torch.ones(5)
    logp = F.log_softmax(logits.double(), 1).permute(0, 2, 3, 1)[target != 255]
    t = target[target != 255]
    nll = -logp[torch.arange(t.numel()), t]
    expected = (weight.double()[t] * nll).sum() / weight.double()[t].sum()
    got = cross_entropy(logits, target, weight if weighted else None)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_segmentation_loss_is_main_plus_0_4_aux():
    logits, target = sample(5, k=19)
    aux, _ = sample(6, k=19)
    outputs = {"out": logits, "aux": aux}
    loss = SegmentationLoss(class_weights=CITYSCAPES_CLASS_WEIGHTS, ohem_min_kept=50)
    total, parts = loss(outputs, target)
    weight = torch.tensor(CITYSCAPES_CLASS_WEIGHTS)
    main = ohem_cross_entropy(logits, target, 0.7, 2 * 50, weight)  # min_kept per image, 2 images
    torch.testing.assert_close(parts["main"], main)
    torch.testing.assert_close(total, main + 0.4 * cross_entropy(aux, target, weight))
    plain, parts = SegmentationLoss(ohem=False, aux_weight=0.0)(outputs, target)
    torch.testing.assert_close(plain, cross_entropy(logits, target))
    assert set(parts) == {"main"}


def test_class_weights_must_match_the_classes():
    logits, target = sample(0)
    with pytest.raises(ValueError, match="class_weights has 19 entries but the model predicts 5"):
        SegmentationLoss(class_weights=CITYSCAPES_CLASS_WEIGHTS)({"out": logits}, target)
