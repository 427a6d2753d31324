"""Segmentation metrics from a confusion matrix, as Cityscapes scores them (cityscapesscripts' evaluator).

``IoU_c = TP / (TP + FP + FN)`` per class over the non-ignored pixels; mIoU is the mean over the classes present in
the ground truth or the prediction (a class absent from both has no IoU, ``nan``, and is left out, as
cityscapesscripts does); pixel accuracy is ``trace / total``::

    cm = ConfusionMatrix(19, ignore_index=255)
    for images, masks in loader:
        cm.update(model(images)["out"].argmax(1), masks)
    cm.compute()   # {"miou": ..., "iou": [19 floats, nan for absent classes], "pixel_acc": ...}

Under DistributedDataParallel, sum ``cm.matrix`` over processes (``torch.distributed.all_reduce``) before
``compute()``.
"""

from __future__ import annotations

import math

import torch

from anncore.data.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a ``(num_classes, num_classes)`` int64 confusion matrix: rows ground truth, columns prediction.

    Args:
        num_classes: ``K``; labels are ``0 .. K-1``.
        ignore_index: ground-truth value whose pixels are not counted (255 on Cityscapes).
        device: where the matrix lives (put it with the predictions to avoid copies).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Forget every update."""
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count ``pred`` against ``target``: integer label maps of one shape, e.g. ``(B, H, W)``.

        Pixels where ``target == ignore_index`` are skipped; any other target outside ``0 .. K-1``, or a prediction
        outside it on a counted pixel, is an error.
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(f"pred and target must be integer label maps, got {pred.dtype} and {target.dtype}")
        k = self.num_classes
        valid = target != self.ignore_index
        t, p = target[valid].to(self.matrix.device, torch.int64), pred[valid].to(self.matrix.device, torch.int64)
        for name, labels in (("target", t), ("pred", p)):
            if labels.numel() and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(
                    f"{name} has labels outside 0..{k - 1} (and not ignore_index {self.ignore_index}): "
                    f"min {labels.min().item()}, max {labels.max().item()}"
                )
        self.matrix += torch.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, float | list[float]]:
        """``{"miou", "iou" (per class, nan where absent from both), "pixel_acc"}``; all nan before any pixel."""
        m = self.matrix.double().cpu()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
        present = union > 0
        total = m.sum()
        return {
            "miou": iou[present].mean().item() if present.any() else math.nan,
            "iou": iou.tolist(),
            "pixel_acc": (tp.sum() / total).item() if total > 0 else math.nan,
        }
