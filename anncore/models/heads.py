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
from typing import Any, ClassVar

import torch
from torch import nn

from anncore.errors import BadInput
from anncore.nn.attention import AttnImplementation
from anncore.nn.blocks import AFNB, APNB, NonLocal2d
from anncore.nn.layers import conv_bn_relu
from anncore.nn.pyramid import DEFAULT_POOL_SIZES

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


class Head(nn.Module):
    """What the four heads share: ``[fusion] -> 3x3 bottleneck -> [context block] -> 1x1 classifier`` (official
    ``asymmetric_non_local_network``: ``fusion``, ``context``, ``cls``).

    A subclass adds its blocks in :meth:`add_fusion` and :meth:`add_context`, which ``__init__`` calls in the
    official order (fusion, bottleneck, context block, classifier), so every head creates and initialises its
    parameters in that order and a state dict keeps the keys ``head.afnb.*``, ``head.bottleneck.*``,
    ``head.apnb.*`` / ``head.nl.*``, ``head.cls.*``. :meth:`blocks` names the context blocks a head has, so attention
    can be captured with ``return_attention`` on them or with forward hooks.
    """

    name: ClassVar[str]

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        widths: HeadWidths,
        num_classes: int,
        attn_implementation: AttnImplementation = "auto",
        pool_sizes: Sequence[int] = DEFAULT_POOL_SIZES,
    ) -> None:
        super().__init__()
        self.add_fusion(low_channels, high_channels, widths, attn_implementation, pool_sizes)
        self.bottleneck = conv_bn_relu(high_channels, widths.context, 3, bias=True)
        self.add_context(widths, attn_implementation, pool_sizes)
        self.cls = nn.Conv2d(widths.context, num_classes, 1)

    def add_fusion(
        self, low: int, high: int, widths: HeadWidths, impl: AttnImplementation, pool_sizes: Sequence[int]
    ) -> None:
        """Build the block that fuses ``low`` into ``high`` before the bottleneck (none here)."""

    def add_context(self, widths: HeadWidths, impl: AttnImplementation, pool_sizes: Sequence[int]) -> None:
        """Build the context block after the bottleneck (none here)."""

    def fuse(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The features the bottleneck reads: ``high`` itself, unless the head fuses ``low`` into it."""
        return high

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck's output through the head's context block (unchanged without one)."""
        return x

    def blocks(self) -> dict[str, nn.Module]:
        """The head's context blocks by name (``"AFNB"``, ``"APNB"``, ``"non-local"``), in forward order."""
        return {}

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """``(low, high)`` features -> logits ``(B, num_classes, h, w)`` at the features' resolution."""
        return self.cls(self.context(self.bottleneck(self.fuse(low, high))))


class FCNHead(Head):
    """No context block: the baseline (layer4 -> bottleneck -> classifier)."""

    name = "fcn"


class NLHead(Head):
    """A full non-local block where APNB would be: the price of pyramid sampling is ``nl - apnb``."""

    name = "nl"

    def add_context(self, widths: HeadWidths, impl: AttnImplementation, pool_sizes: Sequence[int]) -> None:
        """``self.nl``: ``NonLocal2d`` on the bottleneck's width (no pyramid: ``pool_sizes`` is not used)."""
        ctx = widths.context
        self.nl = NonLocal2d(ctx, ctx, widths.key, widths.value, DROPOUT, attn_implementation=impl)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return self.nl(x)

    def blocks(self) -> dict[str, nn.Module]:
        return {"non-local": self.nl}


class APNBHead(Head):
    """APNB after the bottleneck (paper Table 1 "+APNB")."""

    name = "apnb"

    def add_context(self, widths: HeadWidths, impl: AttnImplementation, pool_sizes: Sequence[int]) -> None:
        """``self.apnb``: APNB on the bottleneck's width (official ``APNB(512, 512, 256, 256, 0.05, (1, 3, 6, 8))``)."""
        ctx = widths.context
        self.apnb = APNB(ctx, ctx, widths.key, widths.value, DROPOUT, pool_sizes, attn_implementation=impl)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        return self.apnb(x)

    def blocks(self) -> dict[str, nn.Module]:
        return {"APNB": self.apnb}


class ANNHead(APNBHead):
    """The paper's head: AFNB fuses layer3 into layer4, then the bottleneck and APNB (paper Fig. 3)."""

    name = "ann"

    def add_fusion(
        self, low: int, high: int, widths: HeadWidths, impl: AttnImplementation, pool_sizes: Sequence[int]
    ) -> None:
        """``self.afnb``, which keeps the high level's width (official ``AFNB(1024, 2048, 2048, 256, 256)``)."""
        self.afnb = AFNB(low, high, high, widths.key, widths.value, DROPOUT, pool_sizes, impl)

    def fuse(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.afnb(low, high)

    def blocks(self) -> dict[str, nn.Module]:
        return {"AFNB": self.afnb, **super().blocks()}


#: The head registry: ``ANN(head=name)`` builds ``HEADS[name]`` (the order of the comparison: the paper's head first).
HEADS: dict[str, type[Head]] = {head.name: head for head in (ANNHead, FCNHead, NLHead, APNBHead)}


def build_head(name: str, *args: Any, **kwargs: Any) -> Head:
    """``HEADS[name](*args, **kwargs)``, with a one-line error naming the heads for an unknown ``name``."""
    if name not in HEADS:
        raise BadInput(f"head must be one of {tuple(HEADS)}, got {name!r}")
    return HEADS[name](*args, **kwargs)


def aux_head(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Official ``dsn``: Conv3x3+BN+ReLU -> Dropout2d(0.05) -> Conv1x1 on layer3."""
    return nn.Sequential(
        conv_bn_relu(in_channels, hidden, 3, bias=True), nn.Dropout2d(DROPOUT), nn.Conv2d(hidden, num_classes, 1)
    )
