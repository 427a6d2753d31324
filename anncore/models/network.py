"""The ANN network (paper Fig. 3; official ``asymmetric_non_local_network``) and the baselines it is compared to.

One backbone (:mod:`anncore.models.backbone`), one of four heads (:mod:`anncore.models.heads`), so that the context
blocks are the only difference between the networks compared, and the official auxiliary head on layer3
(Conv3x3+BN+ReLU -> Dropout2d(0.05) -> Conv1x1, loss weight 0.4). Logits are upsampled to the input size
bilinearly with ``align_corners=True``, as official.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anncore.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from anncore.errors import BadInput
from anncore.models.backbone import build_backbone
from anncore.models.heads import HEAD_WIDTHS, aux_head, build_head
from anncore.nn.attention import AttnImplementation, check_attn_implementation
from anncore.nn.pyramid import DEFAULT_POOL_SIZES


def _upsample(logits: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


class ANN(nn.Module):
    """Backbone + one of :data:`HEADS` + the auxiliary head: the networks this project trains and compares.

    Args:
        num_classes: output classes (19 on Cityscapes).
        backbone: one of :data:`~anncore.models.backbone.BACKBONES`.
        head: one of :data:`HEADS` (module docstring).
        pretrained: backbone weights: ``None``, ``"imagenet"`` or a checkpoint path (see
        :mod:`anncore.models.backbone`). attn_implementation: how the context blocks compute attention
        (:mod:`anncore.nn.attention`). aux: build the auxiliary head on layer3.
        stem: the ResNet stem (:data:`~anncore.models.backbone.STEMS`): torchvision's (default), or the official or
            mmsegmentation deep stem, for converted checkpoints (:mod:`anncore.models.convert`).
        aux_width: hidden width of the auxiliary head (default: the official 512; mmsegmentation's is 256).
        align_corners: of the final bilinear upsampling (official and mmsegmentation 769x769 models: ``True``;
            mmsegmentation's 512x1024 models: ``False``).
        input_norm: the input the weights expect (:data:`INPUT_NORMS`); the model converts the ImageNet-normalised
            RGB tensors every tool here feeds it (:func:`to_model_input`).
        pool_sizes: the pyramid of APNB and AFNB (paper Sec. 3.2; official ``PSPModule(sizes=(1, 3, 6, 8))``,
            S = 110 anchors); a design choice notebook 10 varies.

    ``model(images)`` returns a dict of logits at the input size: ``{"out", "aux"}`` in training mode (``aux`` only
    when the model has the auxiliary head) and ``{"out"}`` in eval mode, where the auxiliary head, which only feeds
    the loss, is skipped (as official inference uses only the main output). ``model.config`` holds the arguments
    that rebuild the architecture; :func:`load_model` uses it.
    """

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet101",
        head: str = "ann",
        pretrained: str | Path | None = None,
        attn_implementation: AttnImplementation = "auto",
        aux: bool = True,
        stem: str = "torchvision",
        aux_width: int | None = None,
        align_corners: bool = True,
        input_norm: str = "imagenet",
        pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    ) -> None:
        super().__init__()  # names are checked where they are used: build_backbone, the head, the blocks
        check_attn_implementation(attn_implementation)  # here too: the fcn head has no block to check it
        if input_norm not in INPUT_NORMS:
            raise BadInput(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        self.backbone = build_backbone(backbone, pretrained, stem)  # refuses a name outside BACKBONES
        widths = HEAD_WIDTHS[backbone]  # one entry per backbone (tests/test_model.py checks the two lists agree)
        aux_width = widths.aux if aux_width is None else aux_width
        self.config = {"num_classes": num_classes, "backbone": backbone, "head": head,
                       "attn_implementation": attn_implementation, "aux": aux, "stem": stem, "aux_width": aux_width,
                       "align_corners": align_corners, "input_norm": input_norm,
                       "pool_sizes": list(pool_sizes)}  # fmt: skip
        low, high = self.backbone.low_channels, self.backbone.high_channels
        self.head = build_head(head, low, high, widths, num_classes, attn_implementation, pool_sizes)
        self.aux_head = aux_head(low, aux_width, num_classes) if aux else None
        self.align_corners, self.input_norm = align_corners, input_norm

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images (B, 3, H, W)`` -> ``{"out": (B, K, H, W)[, "aux": (B, K, H, W)]}`` (class docstring)."""
        size = images.shape[-2:]
        low, high = self.backbone(to_model_input(images, self.input_norm))
        outputs = {"out": _upsample(self.head(low, high), size, self.align_corners)}
        if self.training and self.aux_head is not None:
            outputs["aux"] = _upsample(self.aux_head(low), size, self.align_corners)
        return outputs


#: What a model's weights expect as input (``ANN(input_norm=...)``); every tool of this project feeds
#: ImageNet-normalised RGB tensors (:func:`anncore.data.val_transforms`) and the model converts them itself.
INPUT_NORMS: tuple[str, ...] = ("imagenet", "caffe_bgr")


#: The official code's input: BGR on the 0-255 scale minus these means, std 1 (MendelXu/ANN
#: ``hypes/seg/cityscapes/fs_annn_cityscapes_seg.json``, ``"normalize"``).
CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)


def to_model_input(images: torch.Tensor, input_norm: str) -> torch.Tensor:
    """ImageNet-normalised RGB ``images`` as weights trained with ``input_norm`` expect them: unchanged for
    ``imagenet``; for ``caffe_bgr``, back to 0-255, channels reversed to BGR, minus :data:`CAFFE_MEAN_BGR`."""
    if input_norm == "imagenet":
        return images

    def column(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)

    rgb255 = (images * column(IMAGENET_STD) + column(IMAGENET_MEAN)) * 255.0
    return rgb255.flip(1) - column(CAFFE_MEAN_BGR)
