"""The four heads of :class:`~anncore.models.network.ANN` (paper Fig. 3 and Table 1) and the auxiliary head.

=========  ====================================================================================================
head       ``high`` (layer4) -> ... -> classifier
=========  ====================================================================================================
``ann``    AFNB(layer3, layer4) -> Conv3x3+BN+ReLU -> APNB -> Conv1x1      (the paper's network)
``apnb``   layer4 -> Conv3x3+BN+ReLU -> APNB -> Conv1x1                   (paper Table 1 "+APNB")
``nl``     layer4 -> Conv3x3+BN+ReLU -> NonLocal2d -> Conv1x1             (APNB's place taken by a non-local block)
``fcn``    layer4 -> Conv3x3+BN+ReLU -> Conv1x1                           (no context block: the baseline)
=========  ====================================================================================================

``nl`` and ``apnb`` differ only in the context block, ``ann`` and ``apnb`` only in AFNB. The auxiliary head is the
official ``dsn`` on layer3. Channel widths follow the backbone (:data:`HEAD_WIDTHS`): the official 512/256/256/512
on the ResNets, a quarter of that on the small CPU backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from anncore.errors import BadInput
from anncore.nn.attention import AttnImplementation
from anncore.nn.blocks import AFNB, APNB, NonLocal2d
from anncore.nn.layers import conv_bn_relu
from anncore.nn.pyramid import DEFAULT_POOL_SIZES

HEADS: tuple[str, ...] = ("ann", "fcn", "nl", "apnb")


DROPOUT = 0.05  # official: every Dropout2d in the head and the auxiliary head


@dataclass(frozen=True)
class HeadWidths:
    """Channel widths of the head on one backbone.

    Attributes:
        context: output of the 3x3 bottleneck conv and width of APNB / the non-local block (official 512).
        key: ``Ck`` of AFNB, APNB and the non-local block (official 256).
        value: ``Cv`` (official 256).
        aux: hidden channels of the auxiliary head (official 512).
    """

    context: int
    key: int
    value: int
    aux: int


HEAD_WIDTHS: dict[str, HeadWidths] = {
    "resnet50": HeadWidths(512, 256, 256, 512),
    "resnet101": HeadWidths(512, 256, 256, 512),
    "small": HeadWidths(128, 64, 64, 64),
}


class ContextHead(nn.Module):
    """The main head: optional AFNB, the 3x3 bottleneck, an optional context block, the 1x1 classifier.

    The blocks are attributes, ``None`` where the head has none: ``afnb`` (``ann``), ``apnb`` (``ann``, ``apnb``),
    ``nl`` (``nl``), so attention can be captured with ``return_attention`` on them or forward hooks.
    AFNB keeps the high level's width (official ``AFNB(1024, 2048, 2048, 256, 256)``).
    """

    def __init__(
        self,
        head: str,
        low_channels: int,
        high_channels: int,
        widths: HeadWidths,
        num_classes: int,
        attn_implementation: AttnImplementation = "auto",
        pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise BadInput(f"head must be one of {HEADS}, got {head!r}")
        self.kind = head
        ctx = widths.context
        impl = attn_implementation
        self.afnb = (
            AFNB(low_channels, high_channels, high_channels, widths.key, widths.value, DROPOUT, pool_sizes, impl)
            if head == "ann"
            else None
        )
        self.bottleneck = conv_bn_relu(high_channels, ctx, 3, bias=True)
        self.apnb = (
            APNB(ctx, ctx, widths.key, widths.value, DROPOUT, pool_sizes, attn_implementation=impl)
            if head in ("ann", "apnb")
            else None
        )
        self.nl = (
            NonLocal2d(ctx, ctx, widths.key, widths.value, DROPOUT, attn_implementation=impl) if head == "nl" else None
        )
        self.cls = nn.Conv2d(ctx, num_classes, 1)

    @property
    def context_block(self) -> APNB | NonLocal2d | None:
        """The block after the bottleneck (APNB, the non-local block, or ``None`` for ``fcn``)."""
        return self.apnb if self.apnb is not None else self.nl

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """``(low, high)`` features -> logits ``(B, num_classes, h, w)`` at the features' resolution."""
        x = high if self.afnb is None else self.afnb(low, high)
        x = self.bottleneck(x)
        if self.context_block is not None:
            x = self.context_block(x)
        return self.cls(x)


def aux_head(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Official ``dsn``: Conv3x3+BN+ReLU -> Dropout2d(0.05) -> Conv1x1 on layer3."""
    return nn.Sequential(
        conv_bn_relu(in_channels, hidden, 3, bias=True), nn.Dropout2d(DROPOUT), nn.Conv2d(hidden, num_classes, 1)
    )
