"""Segmentation losses of the official recipe (paper Sec. 4; the official torchcv ``FSAuxOhemCELoss``).

``loss = OHEM-CE(out) + 0.4 * CE(aux)``, optionally class-weighted (the official Cityscapes config uses
:data:`CITYSCAPES_CLASS_WEIGHTS`), with ignore index 255. Both are computed in float32 on logits upsampled to the
label size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anncore.data.labels import IGNORE_INDEX

# Official ``ce_weight`` of hypes/seg/cityscapes/fs_annn_cityscapes_seg.json (also OCNet's and HRNet's), train-id order.
CITYSCAPES_CLASS_WEIGHTS: tuple[float, ...] = (
    0.8373, 0.9180, 0.8660, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss that keeps the graph (for batches with nothing to learn from)."""
    return logits.sum() * 0.0


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Pixel-wise cross-entropy, mean over non-ignored pixels (weighted mean with ``weight``, as torchcv
    ``FSCELoss``). A batch whose pixels are all ignored gives 0 instead of PyTorch's NaN."""
    if not (target != ignore_index).any():
        return _zero(logits)
    return F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Online hard example mining cross-entropy, exactly torchcv ``FSOhemCELoss`` (the official ANN loss).

    Over the ``n`` non-ignored pixels, with ``p`` the softmax probability of the true class:

    * ``threshold = max(thresh, p_sorted[min(min_kept, n - 1)])`` (``p_sorted`` ascending, 0-indexed), so at least
      about ``min_kept`` pixels survive when the model is confident;
    * keep the pixels with ``p < threshold`` (strictly, as official);
    * return the plain mean of their (class-weighted, unnormalised) per-pixel CE.

    ``min_kept`` counts pixels of this batch on this process: the official 100000 is for one 769x769 crop per GPU.
    When nothing is kept (every pixel ignored, or all ``p`` equal to the threshold) the loss is 0 (as in later
    torchcv), not the NaN of an empty mean.
    """
    if not 0.0 < thresh <= 1.0:
        raise ValueError(f"thresh must be in (0, 1], got {thresh}")
    if min_kept < 1:
        raise ValueError(f"min_kept must be >= 1 (official max(1, ohem_minkeep)), got {min_kept}")
    logits = logits.float()
    pixel_loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    if not valid.any():
        return _zero(logits)
    with torch.no_grad():
        prob = logits.softmax(dim=1).gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
        valid_prob = prob[valid]
        rank = min(min_kept, valid_prob.numel() - 1)
        threshold = torch.kthvalue(valid_prob, rank + 1).values.clamp(min=thresh)
        keep = valid & (prob < threshold)
    kept = pixel_loss[keep]
    return kept.mean() if kept.numel() else _zero(logits)


class SegmentationLoss(nn.Module):
    """``main + aux_weight * aux`` for the dict that :class:`anncore.models.network.ANN` returns in training mode.

    Args:
        aux_weight: weight of the auxiliary CE (official 0.4); the ``aux`` output is ignored when 0.
        ohem: OHEM on the main output (official) or plain CE.
        ohem_thresh: see :func:`ohem_cross_entropy` (official 0.7).
        ohem_min_kept: minimum kept pixels *per image* (official 100000, with one 769x769 crop per GPU); a batch of
            ``B`` images on one process calls :func:`ohem_cross_entropy` with ``B * ohem_min_kept``, so the recipe
            does not depend on how the global batch is split over processes.
        class_weights: per-class CE weights (official Cityscapes: :data:`CITYSCAPES_CLASS_WEIGHTS`) or ``None``.
        ignore_index: label value without loss (255).

    ``forward(outputs, target)`` returns ``(total, {"main": ..., "aux": ...})``, the parts detached, for logging.
    """

    class_weights: torch.Tensor | None  # a buffer, registered in __init__

    def __init__(
        self,
        aux_weight: float = 0.4,
        ohem: bool = True,
        ohem_thresh: float = 0.7,
        ohem_min_kept: int = 100_000,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.aux_weight = aux_weight
        self.ohem = ohem
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.ignore_index = ignore_index
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight)

    def forward(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts; ``outputs["out"]`` and ``target`` share their spatial size."""
        logits = outputs["out"]
        if self.class_weights is not None and self.class_weights.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weights has {self.class_weights.numel()} entries but the model predicts "
                f"{logits.shape[1]} classes"
            )
        if self.ohem:
            main = ohem_cross_entropy(
                logits,
                target,
                self.ohem_thresh,
                self.ohem_min_kept * logits.shape[0],
                self.class_weights,
                self.ignore_index,
            )
        else:
            main = cross_entropy(logits, target, self.class_weights, self.ignore_index)
        parts = {"main": main.detach()}
        total = main
        if self.aux_weight and "aux" in outputs:
            aux = cross_entropy(outputs["aux"], target, self.class_weights, self.ignore_index)
            parts["aux"] = aux.detach()
            total = total + self.aux_weight * aux
        return total, parts
