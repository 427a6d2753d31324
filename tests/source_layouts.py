"""Checkpoint layouts of the official ANN code and of mmsegmentation, and a functional forward over each, for tests.

Transcribed from the public model definitions listed here, not from anncore and not from any downloaded checkpoint
(nothing is downloaded):

* official, MendelXu/ANN: ``models/seg/nets/annn.py`` (network, ``dsn``), ``models/seg/utils/{afnb,apnb}.py``
  (AFNB/APNB, ``_SelfAttentionBlock``, ``PSPModule``), ``models/tools/module_helper.py`` (``BNReLU`` = a nested
  ``Sequential(BN, ReLU)``), ``models/backbones/resnet/resnet_models.py`` and ``resnet_backbone.py``
  (``deepbase_resnet101_dilated8``: ``prefix`` 64-64-128, ``ceil_mode=True`` max-pool, dilated layer3/4);
* mmsegmentation 0.x/1.x: ``mmseg/models/decode_heads/ann_head.py`` (``ANNHead``, ``AFNB``, ``APNB``),
  ``mmseg/models/utils/self_attention_block.py`` (``key_project``/``query_project``/``value_project``/
  ``out_project``), ``mmseg/models/backbones/resnet.py`` (``ResNetV1c``: ``stem`` 32-32-64, ``ceil_mode=False``),
  ``mmseg/models/decode_heads/fcn_head.py`` (auxiliary head, width 256), mmcv ``ConvModule`` (``.conv`` without bias
  when a norm follows, ``.bn``).

The builders return ``{key: tensor}`` exactly as the source's ``state_dict()`` names and shapes it (BN layers with
``num_batches_tracked``; shared modules - APNB's ``f_query``/``query_project`` - appear under both names, holding the
same tensors). The reference forwards use only ``torch.nn.functional`` on those keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

BLOCKS: dict[str, tuple[int, int, int, int]] = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
PLANES = (64, 128, 256, 512)
#: per stage: stride of the first block, dilation of the first block's 3x3 conv, dilation of the other blocks' 3x3
#: (official ``_nostride_dilate`` with multi_grid [1, 1, 1]; mmseg ``dilations=(1, 1, 2, 4)``, ``contract_dilation``)
STAGES = ((1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4))
POOL_SIZES = (1, 3, 6, 8)  # PSPModule / PPMConcat: 1 + 9 + 36 + 64 = 110 anchors
KEY_CHANNELS = 256
VALUE_CHANNELS = 256
CONTEXT = 512
BN_EPS = 1e-5
CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)  # official hypes json "normalize.mean" (BGR, 0-255, std 1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

Shapes = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------------------------------------------------
# key tables


def _bn(shapes: Shapes, prefix: str, channels: int) -> None:
    for part in BN_PARTS:
        shapes[f"{prefix}.{part}"] = () if part == "num_batches_tracked" else (channels,)


def _conv(shapes: Shapes, prefix: str, out_c: int, in_c: int, k: int, bias: bool) -> None:
    shapes[f"{prefix}.weight"] = (out_c, in_c, k, k)
    if bias:
        shapes[f"{prefix}.bias"] = (out_c,)


def _resnet_stages(shapes: Shapes, prefix: str, depth: str, inplanes: int) -> None:
    """``layer1..4`` of a bottleneck ResNet (same names in both sources; torchvision names too)."""
    for stage, (planes, blocks) in enumerate(zip(PLANES, BLOCKS[depth], strict=True), start=1):
        for b in range(blocks):
            p = f"{prefix}layer{stage}.{b}"
            _conv(shapes, f"{p}.conv1", planes, inplanes, 1, False)
            _bn(shapes, f"{p}.bn1", planes)
            _conv(shapes, f"{p}.conv2", planes, planes, 3, False)
            _bn(shapes, f"{p}.bn2", planes)
            _conv(shapes, f"{p}.conv3", 4 * planes, planes, 1, False)
            _bn(shapes, f"{p}.bn3", 4 * planes)
            if b == 0:
                _conv(shapes, f"{p}.downsample.0", 4 * planes, inplanes, 1, False)
                _bn(shapes, f"{p}.downsample.1", 4 * planes)
            inplanes = 4 * planes


def official_shapes(depth: str = "resnet101", num_classes: int = 19) -> Shapes:
    """``asymmetric_non_local_network(...).state_dict()`` without the ``module.`` prefix (``annn.py``, ``afnb.py``,
    ``apnb.py``, ``resnet_models.py``)."""
    s: Shapes = {}
    # backbone: deep "prefix" 64-64-128 (resnet_models.py ResNet(deep_base=True)), layer1 takes 128 channels
    _conv(s, "backbone.prefix.conv1", 64, 3, 3, False)
    _bn(s, "backbone.prefix.bn1", 64)
    _conv(s, "backbone.prefix.conv2", 64, 64, 3, False)
    _bn(s, "backbone.prefix.bn2", 64)
    _conv(s, "backbone.prefix.conv3", 128, 64, 3, False)
    _bn(s, "backbone.prefix.bn3", 128)
    _resnet_stages(s, "backbone.", depth, 128)

    # AFNB(1024, 2048, 2048, 256, 256): f_key/f_query = Sequential(Conv(bias), BNReLU = Sequential(BN, ReLU))
    def attention(p: str, key_in: int, query_in: int, out: int) -> None:
        _conv(s, f"{p}.f_key.0", KEY_CHANNELS, key_in, 1, True)
        _bn(s, f"{p}.f_key.1.0", KEY_CHANNELS)
        _conv(s, f"{p}.f_query.0", KEY_CHANNELS, query_in, 1, True)
        _bn(s, f"{p}.f_query.1.0", KEY_CHANNELS)
        _conv(s, f"{p}.f_value", VALUE_CHANNELS, key_in, 1, True)
        _conv(s, f"{p}.W", out, VALUE_CHANNELS, 1, True)

    attention("fusion.stages.0", 1024, 2048, 2048)
    _conv(s, "fusion.conv_bn_dropout.0", 2048, 2048 + 2048, 1, True)
    _bn(s, "fusion.conv_bn_dropout.1", 2048)  # plain BatchNorm2d, not BNReLU: no ".0"
    _conv(s, "context.0", CONTEXT, 2048, 3, True)
    _bn(s, "context.1.0", CONTEXT)
    attention("context.2.stages.0", CONTEXT, CONTEXT, CONTEXT)  # APNB: f_query = f_key (aliased in the builder)
    _conv(s, "context.2.conv_bn_dropout.0", CONTEXT, 2 * CONTEXT, 1, True)
    _bn(s, "context.2.conv_bn_dropout.1.0", CONTEXT)
    _conv(s, "cls", num_classes, CONTEXT, 1, True)
    _conv(s, "dsn.0", 512, 1024, 3, True)
    _bn(s, "dsn.1.0", 512)
    _conv(s, "dsn.3", num_classes, 512, 1, True)
    return s


def mmseg_shapes(depth: str = "resnet101", num_classes: int = 19) -> Shapes:
    """mmseg ``EncoderDecoder(ResNetV1c, ANNHead, FCNHead).state_dict()`` (``ann_head.py``,
    ``self_attention_block.py``, ``resnet.py``, ``fcn_head.py``)."""
    s: Shapes = {}
    # ResNetV1c deep stem 32-32-64: Sequential(conv, BN, ReLU, conv, BN, ReLU, conv, BN, ReLU)
    _conv(s, "backbone.stem.0", 32, 3, 3, False)
    _bn(s, "backbone.stem.1", 32)
    _conv(s, "backbone.stem.3", 32, 32, 3, False)
    _bn(s, "backbone.stem.4", 32)
    _conv(s, "backbone.stem.6", 64, 32, 3, False)
    _bn(s, "backbone.stem.7", 64)
    _resnet_stages(s, "backbone.", depth, 64)

    def conv_module(p: str, out_c: int, in_c: int, k: int) -> None:  # mmcv ConvModule with BN: conv has no bias
        _conv(s, f"{p}.conv", out_c, in_c, k, False)
        _bn(s, f"{p}.bn", out_c)

    def attention(p: str, key_in: int, query_in: int, out: int) -> None:
        conv_module(f"{p}.key_project", KEY_CHANNELS, key_in, 1)
        conv_module(f"{p}.query_project", KEY_CHANNELS, query_in, 1)
        _conv(s, f"{p}.value_project", KEY_CHANNELS, key_in, 1, True)  # plain nn.Conv2d (value_out_norm=False)
        _conv(s, f"{p}.out_project", out, KEY_CHANNELS, 1, True)

    h = "decode_head."
    attention(f"{h}fusion.stages.0", 1024, 2048, 2048)
    conv_module(f"{h}fusion.bottleneck", 2048, 2048 + 2048, 1)
    conv_module(f"{h}bottleneck", CONTEXT, 2048, 3)
    attention(f"{h}context.stages.0", CONTEXT, CONTEXT, CONTEXT)  # share_key_query: query_project aliased
    conv_module(f"{h}context.bottleneck", CONTEXT, 2 * CONTEXT, 1)
    _conv(s, f"{h}conv_seg", num_classes, CONTEXT, 1, True)
    conv_module("auxiliary_head.convs.0", 256, 1024, 3)
    _conv(s, "auxiliary_head.conv_seg", num_classes, 256, 1, True)
    return s


# aliases (shared modules): the alias key -> the key whose tensor it holds
def _official_aliases(shapes: Shapes) -> dict[str, str]:
    a = "context.2.stages.0."
    return {k: k.replace(f"{a}f_query.", f"{a}f_key.") for k in shapes if k.startswith(f"{a}f_query.")}


def _mmseg_aliases(shapes: Shapes) -> dict[str, str]:
    a = "decode_head.context.stages.0."
    return {
        k: k.replace(f"{a}query_project.", f"{a}key_project.") for k in shapes if k.startswith(f"{a}query_project.")
    }


# --------------------------------------------------------------------------------------------------------------------
# random weights


def _fill(shapes: Shapes, aliases: dict[str, str], seed: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Random tensors for a key table: variance-keeping conv weights, BN with positive running_var."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
        return torch.rand(shape, generator=gen, dtype=dtype) * (hi - lo) + lo

    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key in aliases:
            continue
        part = key.rsplit(".", 1)[1]
        if part == "num_batches_tracked":
            state[key] = torch.tensor(1000, dtype=torch.long)
            continue
        if part == "weight" and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            t = torch.randn(shape, generator=gen, dtype=dtype) * (1.0 / fan_in) ** 0.5
        elif part == "weight":  # BN gamma
            t = uniform(shape, 0.5, 1.0)
        elif part == "bias":
            t = uniform(shape, -0.1, 0.1)
        elif part == "running_mean":
            t = uniform(shape, -0.1, 0.1)
        elif part == "running_var":
            t = uniform(shape, 0.5, 1.5)
        else:
            raise AssertionError(f"unexpected key {key}")
        state[key] = t
    for alias, target in aliases.items():  # the same tensor object, as state_dict() of a shared module gives
        state[alias] = state[target]
    return {k: state[k] for k in shapes}  # the source's key order


def official_state_dict(
    depth: str = "resnet50", num_classes: int = 19, *, seed: int = 0, dtype: torch.dtype = torch.float64,
    module_prefix: bool = True,
) -> dict[str, Tensor]:  # fmt: skip
    """Random weights in the official layout; ``module.`` prefixed as ``DataParallelModel.state_dict()`` saves it."""
    shapes = official_shapes(depth, num_classes)
    state = _fill(shapes, _official_aliases(shapes), seed, dtype)
    return {f"module.{k}": v for k, v in state.items()} if module_prefix else state


def mmseg_state_dict(
    depth: str = "resnet50", num_classes: int = 19, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> dict[str, Tensor]:
    """Random weights in the mmseg ANN layout (mmcv ``save_checkpoint``: no ``module.`` prefix)."""
    shapes = mmseg_shapes(depth, num_classes)
    return _fill(shapes, _mmseg_aliases(shapes), seed, dtype)


# --------------------------------------------------------------------------------------------------------------------
# images


def raw_image(height: int = 67, width: int = 83, seed: int = 1) -> Tensor:
    """An RGB image ``(1, 3, H, W)``, integer grey levels 0..255 as float64."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, height, width), generator=gen).to(torch.float64)


def imagenet_normalised(raw_rgb: Tensor) -> Tensor:
    """anncore's and mmseg's input: ``(RGB/255 - mean) / std``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=raw_rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=raw_rgb.dtype).view(1, 3, 1, 1)
    return (raw_rgb / 255 - mean) / std


def caffe_bgr(raw_rgb: Tensor) -> Tensor:
    """The official input (MendelXu/ANN ``hypes/seg/cityscapes/fs_annn_cityscapes_seg.json``: ``input_mode`` BGR,
    ``normalize`` ``div_value`` 1): BGR, 0-255, minus the caffe BGR mean, std 1."""
    return raw_rgb[:, [2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR, dtype=raw_rgb.dtype).view(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------------------------------
# functional forward


class _Net:
    def __init__(self, state: dict[str, Tensor], prefix: str = "") -> None:
        self.s = {k[len(prefix) :]: v.to(torch.float64) for k, v in state.items() if k.startswith(prefix)}

    def conv(self, x: Tensor, p: str, stride: int = 1, padding: int = 0, dilation: int = 1) -> Tensor:
        return F.conv2d(x, self.s[f"{p}.weight"], self.s.get(f"{p}.bias"), stride, padding, dilation)

    def bn(self, x: Tensor, p: str) -> Tensor:
        s = self.s
        return F.batch_norm(
            x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"], False, 0.0, BN_EPS
        )

    def stages(self, x: Tensor, depth: str) -> tuple[Tensor, Tensor]:
        """``layer1..4`` (bottleneck v1.5: stride and dilation on the 3x3 ``conv2``); returns (layer3, layer4)."""
        feats = []
        for stage, ((stride, first_dil, dil), blocks) in enumerate(zip(STAGES, BLOCKS[depth], strict=True), start=1):
            for b in range(blocks):
                p = f"backbone.layer{stage}.{b}"
                s, d = (stride, first_dil) if b == 0 else (1, dil)
                out = F.relu(self.bn(self.conv(x, f"{p}.conv1"), f"{p}.bn1"))
                out = F.relu(self.bn(self.conv(out, f"{p}.conv2", stride=s, padding=d, dilation=d), f"{p}.bn2"))
                out = self.bn(self.conv(out, f"{p}.conv3"), f"{p}.bn3")
                identity = x
                if b == 0:
                    identity = self.bn(self.conv(x, f"{p}.downsample.0", stride=s), f"{p}.downsample.1")
                x = F.relu(out + identity)
            feats.append(x)
        return feats[2], feats[3]


def _pool_anchors(x: Tensor) -> Tensor:
    """PSPModule / PPMConcat: adaptive average pools 1, 3, 6, 8, flattened and concatenated -> ``(B, C, 110)``."""
    b, c = x.shape[:2]
    return torch.cat([F.adaptive_avg_pool2d(x, size).view(b, c, -1) for size in POOL_SIZES], dim=-1)


def _attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``softmax(Ck**-.5 * Q K^T) V`` with ``query (B, Ck, h, w)``, key/value ``(B, C, 110)`` -> ``(B, Cv, h, w)``."""
    b, _, h, w = query.shape
    q = query.view(b, query.shape[1], -1).permute(0, 2, 1)
    sim = F.softmax(KEY_CHANNELS**-0.5 * torch.matmul(q, key), dim=-1)
    context = torch.matmul(sim, value.permute(0, 2, 1))
    return context.permute(0, 2, 1).reshape(b, -1, h, w)


def official_forward(state: dict[str, Tensor], image_bgr: Tensor, depth: str = "resnet50") -> Tensor:
    """``asymmetric_non_local_network.forward`` in eval mode, main output only (``annn.py``), float64.

    ``image_bgr`` is the official input (:func:`caffe_bgr`); ``state`` may carry the ``module.`` prefix.
    """
    net = _Net(state, "module." if next(iter(state)).startswith("module.") else "")
    x = image_bgr.to(torch.float64)
    p = "backbone.prefix"
    x = F.relu(net.bn(net.conv(x, f"{p}.conv1", stride=2, padding=1), f"{p}.bn1"))
    x = F.relu(net.bn(net.conv(x, f"{p}.conv2", padding=1), f"{p}.bn2"))
    x = F.relu(net.bn(net.conv(x, f"{p}.conv3", padding=1), f"{p}.bn3"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=True)
    low, high = net.stages(x, depth)

    def f_kq(t: Tensor, p: str) -> Tensor:  # Sequential(Conv, BNReLU)
        return F.relu(net.bn(net.conv(t, f"{p}.0"), f"{p}.1.0"))

    # AFNB (afnb.py): query from high, key/value from low, pooled; conv_bn_dropout on cat([context, high]), no ReLU
    a = "fusion.stages.0"
    context = _attention(
        f_kq(high, f"{a}.f_query"), _pool_anchors(f_kq(low, f"{a}.f_key")), _pool_anchors(net.conv(low, f"{a}.f_value"))
    )
    context = net.conv(context, f"{a}.W")
    x = net.bn(net.conv(torch.cat([context, high], 1), "fusion.conv_bn_dropout.0"), "fusion.conv_bn_dropout.1")
    # context: Conv3x3 + BNReLU, then APNB (f_query = f_key), conv_bn_dropout on cat([context, x]) + BNReLU
    x = F.relu(net.bn(net.conv(x, "context.0", padding=1), "context.1.0"))
    a = "context.2.stages.0"
    context = _attention(
        f_kq(x, f"{a}.f_query"), _pool_anchors(f_kq(x, f"{a}.f_key")), _pool_anchors(net.conv(x, f"{a}.f_value"))
    )
    context = net.conv(context, f"{a}.W")
    c = "context.2.conv_bn_dropout"
    x = F.relu(net.bn(net.conv(torch.cat([context, x], 1), f"{c}.0"), f"{c}.1.0"))
    x = net.conv(x, "cls")
    return F.interpolate(x, size=image_bgr.shape[-2:], mode="bilinear", align_corners=True)


def mmseg_forward(
    state: dict[str, Tensor], image: Tensor, depth: str = "resnet50", align_corners: bool = False
) -> Tensor:
    """mmseg ``EncoderDecoder`` whole-image inference of ``ANNHead`` on ``ResNetV1c`` (``ann_head.py``,
    ``mmseg/models/segmentors/encoder_decoder.py``), float64.

    ``image`` is ImageNet-normalised RGB (:func:`imagenet_normalised`); ``align_corners`` is the decode head's.
    """
    net = _Net(state)
    x = image.to(torch.float64)
    x = F.relu(net.bn(net.conv(x, "backbone.stem.0", stride=2, padding=1), "backbone.stem.1"))
    x = F.relu(net.bn(net.conv(x, "backbone.stem.3", padding=1), "backbone.stem.4"))
    x = F.relu(net.bn(net.conv(x, "backbone.stem.6", padding=1), "backbone.stem.7"))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, ceil_mode=False)
    low, high = net.stages(x, depth)

    def conv_module(t: Tensor, p: str, padding: int = 0, relu: bool = True) -> Tensor:
        t = net.bn(net.conv(t, f"{p}.conv", padding=padding), f"{p}.bn")
        return F.relu(t) if relu else t

    h = "decode_head."
    # AFNB: SelfAttentionBlock(query_feats=high, key_feats=low); bottleneck ConvModule(act_cfg=None) on cat
    a = f"{h}fusion.stages.0"
    context = _attention(
        conv_module(high, f"{a}.query_project"),
        _pool_anchors(conv_module(low, f"{a}.key_project")),
        _pool_anchors(net.conv(low, f"{a}.value_project")),
    )
    context = net.conv(context, f"{a}.out_project")
    x = conv_module(torch.cat([context, high], 1), f"{h}fusion.bottleneck", relu=False)
    x = conv_module(x, f"{h}bottleneck", padding=1)
    a = f"{h}context.stages.0"
    context = _attention(
        conv_module(x, f"{a}.query_project"),
        _pool_anchors(conv_module(x, f"{a}.key_project")),
        _pool_anchors(net.conv(x, f"{a}.value_project")),
    )
    context = net.conv(context, f"{a}.out_project")
    x = conv_module(torch.cat([context, x], 1), f"{h}context.bottleneck")
    x = net.conv(x, f"{h}conv_seg")
    return F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=align_corners)


def as_float64(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` in float64, shared tensors still shared (integer buffers unchanged)."""
    done: dict[int, Tensor] = {}
    for value in state.values():
        if id(value) not in done:
            done[id(value)] = value.double() if value.is_floating_point() else value
    return {key: done[id(value)] for key, value in state.items()}
