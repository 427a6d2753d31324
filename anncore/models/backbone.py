"""Backbones with the two-level interface ANN needs: ``backbone(images) -> (low, high)``.

``low`` is the stage AFNB takes keys/values and the auxiliary head from (ResNet layer3), ``high`` the last stage
(ResNet layer4); both are at output stride 8, so they share one spatial size. Every backbone tells its channels as
``low_channels`` and ``high_channels``.

``resnet50`` / ``resnet101``
    torchvision ResNet with ``replace_stride_with_dilation=[False, True, True]``: layer3 dilation 2, layer4
    dilation 4, no stride after layer2 (paper Sec. 4). ``stem`` (:data:`STEMS`) picks the layers before ``layer1``:
    ``torchvision`` (default: the 7x7 stem, so that torchvision/timm ImageNet weights load), ``official`` (the
    official code's ``deepbase_resnet101_dilated8``: three 3x3 convs 64-64-128, max-pool with ``ceil_mode=True``,
    so ``layer1`` takes 128 channels; MendelXu/ANN ``models/backbones/resnet/resnet_models.py``) or ``mmseg``
    (mmsegmentation's ``ResNetV1c``: 3x3 convs 32-32-64, ``ceil_mode=False``; ``mmseg/models/backbones/resnet.py``).
    The deep stems exist for the converted checkpoints of :mod:`anncore.models.convert`.
``small``
    a few conv-BN-ReLU layers for CPU runs of the whole pipeline on the synthetic set (:class:`SmallBackbone`).

``pretrained`` (ResNets only): ``None`` (random init, with an :class:`UntrainedBackboneWarning`), ``"imagenet"``
(torchvision's ``IMAGENET1K_V1`` weights through its weights API, downloaded once into ``$TORCH_HOME``) or the path of
a local checkpoint with torchvision/timm ResNet keys (:func:`load_resnet_checkpoint`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101

from anncore.errors import BadInput
from anncore.models.checkpoint import read_torch_file
from anncore.nn.layers import conv_bn_relu

_RESNETS = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
_TORCHVISION_STEM = ("conv1", "bn1", "relu", "maxpool")


@dataclass(frozen=True)
class DeepStem:
    """A deep stem: three 3x3 conv-BN-ReLU layers of these ``widths`` (the first with stride 2), then a 3x3 max-pool
    with stride 2 and this ``ceil_mode``."""

    widths: tuple[int, int, int]
    ceil_mode: bool


#: The stem registry: ``None`` for torchvision's 7x7 stem, else the deep stem's shape.
STEMS: dict[str, DeepStem | None] = {
    "torchvision": None,
    "official": DeepStem((64, 64, 128), ceil_mode=True),
    "mmseg": DeepStem((32, 32, 64), ceil_mode=False),
}
_CHECKPOINT_WRAPPERS = ("state_dict", "model")


class UntrainedBackboneWarning(UserWarning):
    """A ResNet backbone was built without pretrained weights."""


class ResNetBackbone(nn.Module):
    """torchvision ResNet-50/101 at output stride 8 returning ``(layer3, layer4)`` (1024 and 2048 channels).

    With the ``torchvision`` stem the stem and stages keep torchvision's attribute names (``conv1``, ``bn1``,
    ``layer1`` ... ``layer4``), so the backbone's state dict is a torchvision ResNet's without ``fc.*``. A deep stem
    is ``stem.{0,1,3,4,6,7}`` (conv, BN; ReLUs between), as mmsegmentation names it, followed by ``maxpool``.
    """

    low_channels = 1024
    high_channels = 2048
    # torchvision's stem (or a deep ``stem``) and stages, attached by ``setattr`` below
    stem: nn.Sequential
    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self, name: str = "resnet101", pretrained: str | Path | None = None, stem: str = "torchvision"
    ) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise BadInput(f"ResNet backbone must be one of {tuple(_RESNETS)}, got {name!r}")
        if stem not in STEMS:
            raise BadInput(f"stem must be one of {tuple(STEMS)}, got {stem!r}")
        if stem != "torchvision" and pretrained is not None:
            raise BadInput(f"the {stem} stem has no ImageNet weights here; pretrained must be None (load a converted "
                           f"checkpoint instead), got {pretrained!r}")  # fmt: skip
        build, imagenet = _RESNETS[name]
        try:
            net = build(
                weights=imagenet if pretrained == "imagenet" else None, replace_stride_with_dilation=[False, True, True]
            )
        except (URLError, OSError) as err:  # no network (or no space in the hub cache) for torchvision's download
            hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(imagenet.url).name
            raise BadInput(
                f"--pretrained imagenet: torchvision could not download {imagenet.url} ({err}); on a machine with "
                f"network, download that file and pass its path to --pretrained, or put it at {hub}"
            ) from err
        self.stem_kind = stem
        if stem == "torchvision":
            for part in _TORCHVISION_STEM:
                setattr(self, part, getattr(net, part))
        else:
            deep = STEMS[stem]
            assert deep is not None
            widths, ceil_mode = deep.widths, deep.ceil_mode
            layers: list[nn.Module] = []
            for c_in, c_out, stride in zip((3, *widths[:2]), widths, (2, 1, 1), strict=True):
                layers += [
                    nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
            self.stem = nn.Sequential(*layers)
            self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=ceil_mode)
            first = net.layer1[0]  # takes the stem's width (128 for the official one) instead of 64
            first.conv1 = nn.Conv2d(widths[-1], first.conv1.out_channels, 1, bias=False)
            first.downsample[0] = nn.Conv2d(widths[-1], first.downsample[0].out_channels, 1, bias=False)
        for stage in _RESNET_STAGES:
            setattr(self, stage, getattr(net, stage))
        self.name = name
        if pretrained is None:
            if stem != "torchvision":
                return  # a deep stem is built for a converted checkpoint, which brings its weights
            warnings.warn(
                f"{name} backbone built without pretrained weights (pretrained=None): fine for tests and the synthetic "
                "set, but Cityscapes mIoU near the paper's 79.9 needs ImageNet weights: pass pretrained='imagenet' or "
                "a local ResNet checkpoint path",
                UntrainedBackboneWarning,
                stacklevel=2,
            )
        elif pretrained != "imagenet":
            load_resnet_checkpoint(self, pretrained)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``(layer3, layer4)``, each ``(B, C, ceil(H/8), ceil(W/8))``."""
        x = self.stem(x) if self.stem_kind != "torchvision" else self.relu(self.bn1(self.conv1(x)))
        low = self.layer3(self.layer2(self.layer1(self.maxpool(x))))
        return low, self.layer4(low)


class SmallBackbone(nn.Module):
    """A CPU-sized stand-in for the dilated ResNet with the same interface: ``(low 64 ch, high 128 ch)`` at stride 8.

    Three stride-2 3x3 conv-BN-ReLU layers (3-24-32-64) reach stride 8, then two 3x3 layers give ``low`` (layer3's
    role) and two more give ``high`` (layer4's role). Its receptive field is deliberately small (79 pixels, about a
    third of a 256x512 crop's height), so whatever the heads know beyond a pixel's neighbourhood comes from their
    context blocks: on the synthetic set, whose class-deciding cues lie far from the pixel, the attention heads have
    something to add over the ``fcn`` baseline. No pretrained weights exist for it.
    """

    low_channels = 64
    high_channels = 128

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(3, 24, 3, bias=False, stride=2),
            conv_bn_relu(24, 32, 3, bias=False, stride=2),
            conv_bn_relu(32, 64, 3, bias=False, stride=2),
        )
        self.layer3 = nn.Sequential(
            conv_bn_relu(64, 64, 3, bias=False), conv_bn_relu(64, self.low_channels, 3, bias=False)
        )
        self.layer4 = nn.Sequential(
            conv_bn_relu(self.low_channels, 128, 3, bias=False), conv_bn_relu(128, self.high_channels, 3, bias=False)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> ``(low, high)``, each ``(B, C, ceil(H/8), ceil(W/8))``."""
        low = self.layer3(self.stem(x))
        return low, self.layer4(low)


def _small(pretrained: str | Path | None, stem: str) -> SmallBackbone:
    if pretrained is not None or stem != "torchvision":
        raise BadInput(f"the small backbone has no pretrained weights nor stem choice; got {pretrained!r}, {stem!r}")
    return SmallBackbone()


def _resnet(name: str) -> Callable[[str | Path | None, str], ResNetBackbone]:
    return lambda pretrained, stem: ResNetBackbone(name, pretrained, stem)


#: The backbone registry: name -> builder of ``(pretrained, stem)``.
BACKBONES: dict[str, Callable[[str | Path | None, str], ResNetBackbone | SmallBackbone]] = {
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
    "small": _small,
}


def build_backbone(
    name: str, pretrained: str | Path | None = None, stem: str = "torchvision"
) -> ResNetBackbone | SmallBackbone:
    """The backbone called ``name`` (one of :data:`BACKBONES`), with ``pretrained`` and ``stem`` (ResNets) as in the
    module docstring."""
    if name not in BACKBONES:
        raise BadInput(f"backbone must be one of {tuple(BACKBONES)}, got {name!r}")
    return BACKBONES[name](pretrained, stem)


def read_resnet_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ResNet state dict from a checkpoint file, normalised to torchvision backbone keys.

    Accepts a bare state dict or one wrapped under ``state_dict`` / ``model``, strips a ``module.`` prefix
    (DataParallel/DDP saves) and drops the ImageNet classifier ``fc.*``. timm's ResNets (``resnet50.tv_in1k``,
    ``resnet101.tv_in1k``, ...) use torchvision's names, so their files load as they are.
    """
    state = read_torch_file(path, "pretrained checkpoint (expected 'imagenet', none or a ResNet file)")
    for wrapper in _CHECKPOINT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise BadInput(f"{path}: expected a state dict (a mapping of parameter names to tensors), got {type(state)}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    return {key: value for key, value in state.items() if not key.startswith("fc.")}


def load_resnet_checkpoint(backbone: ResNetBackbone, path: str | Path) -> None:
    """Load a torchvision/timm ResNet checkpoint file into ``backbone``; fail loudly on any missing key.

    ``num_batches_tracked`` buffers may be absent (timm files omit them); every other backbone key must be present,
    and a key the backbone does not have (a deep-stem ResNet, a segmentation checkpoint) is an error too.
    """
    state = read_resnet_state_dict(path)
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise BadInput(
            f"{path} is not a torchvision/timm {backbone.name} checkpoint: {len(missing)} backbone keys missing "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, {len(unexpected)} unexpected keys "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise BadInput(f"{path}: tensor shapes do not match a {backbone.name}: {err}") from err
