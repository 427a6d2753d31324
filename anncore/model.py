"""The ANN network (paper Fig. 3; official ``asymmetric_non_local_network``) and the baselines it is compared to.

One backbone, four heads, so that the context blocks are the only difference between them:

=========  ====================================================================================================
head       ``high`` (layer4) -> ... -> classifier
=========  ====================================================================================================
``ann``    AFNB(layer3, layer4) -> Conv3x3+BN+ReLU -> APNB -> Conv1x1      (the paper's network)
``apnb``   layer4 -> Conv3x3+BN+ReLU -> APNB -> Conv1x1                   (paper Table 1 "+APNB")
``nl``     layer4 -> Conv3x3+BN+ReLU -> NonLocal2d -> Conv1x1             (APNB's place taken by a non-local block)
``fcn``    layer4 -> Conv3x3+BN+ReLU -> Conv1x1                           (no context block: the baseline)
=========  ====================================================================================================

``nl`` and ``apnb`` differ only in the context block, ``ann`` and ``apnb`` only in AFNB. Every head has the official
auxiliary head on layer3 (Conv3x3+BN+ReLU -> Dropout2d(0.05) -> Conv1x1, loss weight 0.4). Logits are upsampled to
the input size bilinearly with ``align_corners=True``, as official.

Channel widths follow the backbone (:data:`HEAD_WIDTHS`): the official 512/256/256/512 on the ResNets, a quarter of
that on the small CPU backbone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anncore.attention import AttnImplementation, check_attn_implementation
from anncore.backbone import UntrainedBackboneWarning, build_backbone
from anncore.blocks import AFNB, APNB, NonLocal2d
from anncore.checkpoint import check_finite, load_checkpoint
from anncore.errors import BadInput, MissingInput
from anncore.pyramid import DEFAULT_POOL_SIZES

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


def _conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Official ``Conv2d(k=3, padding=1)`` (with bias) followed by ``ModuleHelper.BNReLU``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
    )


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
        self.bottleneck = _conv3x3_bn_relu(high_channels, ctx)
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


def _aux_head(in_channels: int, hidden: int, num_classes: int) -> nn.Sequential:
    """Official ``dsn``: Conv3x3+BN+ReLU -> Dropout2d(0.05) -> Conv1x1 on layer3."""
    return nn.Sequential(
        _conv3x3_bn_relu(in_channels, hidden), nn.Dropout2d(DROPOUT), nn.Conv2d(hidden, num_classes, 1)
    )


def _upsample(logits: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


class ANN(nn.Module):
    """Backbone + one of :data:`HEADS` + the auxiliary head: the networks this project trains and compares.

    Args:
        num_classes: output classes (19 on Cityscapes).
        backbone: one of :data:`~anncore.backbone.BACKBONES`.
        head: one of :data:`HEADS` (module docstring).
        pretrained: backbone weights: ``None``, ``"imagenet"`` or a checkpoint path (see :mod:`anncore.backbone`).
        attn_implementation: how the context blocks compute attention (:mod:`anncore.attention`).
        aux: build the auxiliary head on layer3.
        stem: the ResNet stem (:data:`~anncore.backbone.STEMS`): torchvision's (default), or the official or
            mmsegmentation deep stem, for converted checkpoints (:mod:`anncore.convert`).
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
        self.head = ContextHead(head, low, high, widths, num_classes, attn_implementation, pool_sizes)
        self.aux_head = _aux_head(low, aux_width, num_classes) if aux else None
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
    from anncore.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    def column(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)

    rgb255 = (images * column(IMAGENET_STD) + column(IMAGENET_MEAN)) * 255.0
    return rgb255.flip(1) - column(CAFFE_MEAN_BGR)


#: The course model shipped with the repository (``models/course/``): the ``ann`` head trained by
#: ``python -m anncore train --config params/course_model.yaml``; ``"course"`` names it wherever a checkpoint is asked.
COURSE_MODEL = Path(__file__).resolve().parents[1] / "models" / "course" / "model.pt"


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path; the word ``"course"`` means :data:`COURSE_MODEL`."""
    if str(checkpoint) == "course":
        if not COURSE_MODEL.is_file():
            raise MissingInput(f"the course model {COURSE_MODEL} is missing: this checkout lacks models/course/")
        return COURSE_MODEL
    return Path(checkpoint)


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> ANN:
    """Rebuild a trained model from a training checkpoint (``OUT/checkpoint.pt``), in eval mode.

    ``checkpoint`` may be ``"course"``, the shipped course model (:data:`COURSE_MODEL`). Needs nothing from the
    training code: the checkpoint's ``model_config`` gives the architecture and ``model`` the weights. The backbone
    is built without pretrained weights, since the checkpoint replaces them.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, map_location)
    if "model" not in state or "model_config" not in state:
        raise BadInput(f"{path} holds no model (keys {sorted(state)}); expected a training checkpoint or model.pt")
    check_finite(state["model"], f"{path} holds a poisoned model (a diverged run?)")
    config = dict(state["model_config"])
    if "path" in config:  # checkpoints written before the name was unified
        config["attn_implementation"] = config.pop("path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        model = ANN(**config, pretrained=None)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # load_state_dict lists every missing, unexpected and mis-shaped tensor
        missing, unexpected = (
            model.state_dict().keys() - state["model"].keys(),
            state["model"].keys() - model.state_dict().keys(),
        )
        raise BadInput(
            f"{path}: its weights do not fit the model its model_config describes ({config}): {len(missing)} missing "
            f"(e.g. {sorted(missing)[:2]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:2]}) or "
            "mis-shaped tensors; was the checkpoint edited?"
        ) from err
    return model.to(map_location).eval()
