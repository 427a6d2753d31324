"""Checkpoints of the two public ANN implementations, as this project's models: ``python -m anncore convert``.

``official``
    MendelXu/ANN (the paper's code): ``{"config_dict", "state_dict", "runner_state"}`` saved from ``DataParallel``
    (``module.`` prefixes), ``runner_state`` holding numpy scalars. Network: ``models/seg/nets/annn.py`` (``fusion`` =
    AFNB, ``context`` = 3x3 conv + APNB, ``cls``, ``dsn`` = the 512-wide auxiliary head), backbone
    ``deepbase_resnet101_dilated8`` (``backbone.prefix``: 3x3 convs 64-64-128, ``ceil_mode`` max-pool), input BGR on
    the 0-255 scale minus the caffe means, logits upsampled with ``align_corners=True``.
``mmseg``
    mmsegmentation's model zoo: ``{"meta", "state_dict"}``. ``ANNHead`` (``mmseg/models/decode_heads/ann_head.py``)
    on ``ResNetV1c`` (stem 3x3 convs 32-32-64), a 256-wide auxiliary ``FCNHead``, RGB ImageNet normalisation; convs
    followed by BatchNorm have no bias (mmcv ``ConvModule(bias="auto")``), so this project's bias of those convs is
    set to zero, which computes the same function. ``align_corners`` is ``False`` for the 512x1024 models and ``True``
    for the 769x769 ones: read from the config text mmsegmentation stores in ``meta``, else from the file name.

The key maps are explicit tables (:data:`OFFICIAL_RULES`, :data:`MMSEG_RULES`); the converted weights load strictly
into :class:`~anncore.models.network.ANN` built with the matching architecture options (``stem``, ``aux_width``,
``align_corners``, ``input_norm``), which the written file records, so :func:`~anncore.models.loading.load_model` and
every tool feeding ImageNet-normalised RGB images use the model as its authors did. Files are read with
``torch.load(weights_only=True)``, the numpy scalar types of the official trainer allowed by name: a downloaded
file never runs code.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anncore.errors import BadInput
from anncore.models.backbone import UntrainedBackboneWarning
from anncore.models.checkpoint import read_torch_file, save_checkpoint
from anncore.models.network import ANN

SOURCES: tuple[str, ...] = ("official", "mmseg")

#: ``(pattern, replacement)`` applied in order to the official keys (``module.`` stripped first).
OFFICIAL_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.prefix\.conv1\.", "backbone.stem.0."),
    (r"^backbone\.prefix\.bn1\.", "backbone.stem.1."),
    (r"^backbone\.prefix\.conv2\.", "backbone.stem.3."),
    (r"^backbone\.prefix\.bn2\.", "backbone.stem.4."),
    (r"^backbone\.prefix\.conv3\.", "backbone.stem.6."),
    (r"^backbone\.prefix\.bn3\.", "backbone.stem.7."),
    (r"^fusion\.stages\.0\.", "head.afnb.attention."),
    (r"^fusion\.conv_bn_dropout\.", "head.afnb.fuse."),
    (r"^context\.2\.stages\.0\.", "head.apnb.attention."),
    (r"^context\.2\.conv_bn_dropout\.", "head.apnb.fuse."),
    (r"^context\.([01])\.", r"head.bottleneck.\1."),
    (r"^cls\.", "head.cls."),
    (r"^dsn\.0\.", "aux_head.0.0."),
    (r"^dsn\.1\.", "aux_head.0.1."),
    (r"^dsn\.3\.", "aux_head.2."),
    # ModuleHelper.BNReLU is Sequential(BN, ReLU): its BN sits one level deeper (``f_key.1.0.weight``)
    (r"^(head\.|aux_head\.)(.*)\.1\.0\.", r"\1\2.1."),
)

_MMSEG_ATTENTION = (
    (r"key_project\.conv\.", "f_key.0."),
    (r"key_project\.bn\.", "f_key.1."),
    (r"query_project\.conv\.", "f_query.0."),
    (r"query_project\.bn\.", "f_query.1."),
    (r"value_project\.", "f_value."),
    (r"out_project\.", "W."),
)
#: ``(pattern, replacement)`` applied in order to mmsegmentation's keys.
MMSEG_RULES: tuple[tuple[str, str], ...] = (
    *((rf"^decode_head\.fusion\.stages\.0\.{p}", f"head.afnb.attention.{r}") for p, r in _MMSEG_ATTENTION),
    *((rf"^decode_head\.context\.stages\.0\.{p}", f"head.apnb.attention.{r}") for p, r in _MMSEG_ATTENTION),
    (r"^decode_head\.fusion\.bottleneck\.conv\.", "head.afnb.fuse.0."),
    (r"^decode_head\.fusion\.bottleneck\.bn\.", "head.afnb.fuse.1."),
    (r"^decode_head\.context\.bottleneck\.conv\.", "head.apnb.fuse.0."),
    (r"^decode_head\.context\.bottleneck\.bn\.", "head.apnb.fuse.1."),
    (r"^decode_head\.bottleneck\.conv\.", "head.bottleneck.0."),
    (r"^decode_head\.bottleneck\.bn\.", "head.bottleneck.1."),
    (r"^decode_head\.conv_seg\.", "head.cls."),
    (r"^auxiliary_head\.convs\.0\.conv\.", "aux_head.0.0."),
    (r"^auxiliary_head\.convs\.0\.bn\.", "aux_head.0.1."),
    (r"^auxiliary_head\.conv_seg\.", "aux_head.2."),
)
#: mmsegmentation convs without bias (a BatchNorm follows) whose counterparts here have one: set to zero.
MMSEG_ZERO_BIASES: tuple[str, ...] = (
    "head.afnb.attention.f_key.0.bias",
    "head.afnb.attention.f_query.0.bias",
    "head.afnb.fuse.0.bias",
    "head.bottleneck.0.bias",
    "head.apnb.attention.f_key.0.bias",
    "head.apnb.attention.f_query.0.bias",
    "head.apnb.fuse.0.bias",
    "aux_head.0.0.bias",
)
#: What each source's network expects besides its weights (module docstring).
ARCHITECTURE: dict[str, dict[str, Any]] = {
    "official": {"stem": "official", "input_norm": "caffe_bgr", "align_corners": True},
    "mmseg": {"stem": "mmseg", "input_norm": "imagenet"},
}
_SIGNATURES = {"official": "fusion.stages.0.", "mmseg": "decode_head."}
_DEPTHS = {6: "resnet50", 23: "resnet101"}  # blocks in layer3
_CLASSIFIERS = {"official": "cls.weight", "mmseg": "decode_head.conv_seg.weight"}  # the key each layout names it by
#: What the official trainer's ``runner_state`` pickles besides plain values: numpy scalars and their dtypes
#: (``numpy._core`` since numpy 2, ``numpy.core`` before; the dtype classes exist since numpy 1.20).
_NUMPY_SCALARS = [
    (getattr(np, "_core", None) or np.core).multiarray.scalar,
    np.dtype,
    *(type(np.dtype(name)) for name in ("float64", "float32", "int64")),
]


def read_source(path: str | Path, source: str) -> dict[str, Any]:
    """A checkpoint file as its source wrote it, read weights-only; numpy scalars (the official ``runner_state``)
    are the only non-tensor objects allowed."""
    with torch.serialization.safe_globals(_NUMPY_SCALARS):
        checkpoint = read_torch_file(path, f"{source} ANN checkpoint")
    if not isinstance(checkpoint, dict):
        raise BadInput(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    return checkpoint


def source_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint dict (``state_dict``, ``model`` or the dict itself), ``module.`` stripped."""
    state = checkpoint.get("state_dict", checkpoint.get("model", checkpoint))
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _renamed(
    state: dict[str, torch.Tensor], rules: tuple[tuple[str, str], ...]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` under this project's names, and each new name's source name (for error messages)."""
    renamed, origin = {}, {}
    for source_key, value in state.items():
        key = source_key
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key], origin[key] = value, source_key
    return renamed, origin


def mmseg_align_corners(meta_config: str | None, name: str = "") -> bool:
    """``align_corners`` of an mmsegmentation model: the decode head's value in its config text (the first one in
    ``model = dict(...)``: the backbone has none), else ``True`` for a 769x769 file name and ``False`` otherwise."""
    found = re.findall(r"align_corners\s*=\s*(True|False)", meta_config or "")
    return found[0] == "True" if found else "769x769" in name


def convert_state_dict(
    state: dict[str, torch.Tensor], source: str, *, meta_config: str | None = None, align_corners: bool | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``state`` (a source's keys, as saved) -> this project's state dict and the ``model_config`` that
    :class:`~anncore.models.network.ANN` loads it into strictly. Raises :class:`~anncore.errors.BadInput` naming the
    layout assumed and the keys or shapes that do not fit it."""
    if source not in SOURCES:
        raise BadInput(f"source must be one of {SOURCES}, got {source!r}")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    other = next(s for s in SOURCES if s != source)
    if not any(key.startswith(_SIGNATURES[source]) for key in state) and any(
        key.startswith(_SIGNATURES[other]) for key in state
    ):
        raise BadInput(f"assumed the {source} layout, but the keys are {other}'s (e.g. {_example(state, other)}); "
                       f"convert with --from {other}")  # fmt: skip
    ours, origin = _renamed(state, OFFICIAL_RULES if source == "official" else MMSEG_RULES)
    blocks = {int(m.group(1)) for key in ours if (m := re.match(r"backbone\.layer3\.(\d+)\.", key))}
    backbone = _DEPTHS.get(len(blocks))
    if backbone is None or "head.cls.weight" not in ours:
        classifier = "a" if "head.cls.weight" in ours else f"no classifier ({_CLASSIFIERS[source]})"
        unmapped = sorted(origin[key] for key in ours if not key.startswith(("backbone.", "head.", "aux_head.")))
        found = (
            f"keys the {source} layout does not know: {unmapped[:3]}"
            if unmapped
            else f"first keys: {sorted(state)[:3]}"
        )
        raise BadInput(f"assumed the {source} layout, but found {len(blocks)} layer3 blocks (expected 6 or 23) and "
                       f"{classifier}; {found}")  # fmt: skip
    aux = "aux_head.2.weight" in ours
    config: dict[str, Any] = {
        "num_classes": int(ours["head.cls.weight"].shape[0]),
        "backbone": backbone,
        "head": "ann",
        "aux": aux,
        "aux_width": int(ours["aux_head.0.0.weight"].shape[0]) if aux else None,
        "align_corners": mmseg_align_corners(meta_config),
        **ARCHITECTURE[source],
    }
    if align_corners is not None:
        config["align_corners"] = align_corners
    model = _build(config)
    expected = model.state_dict()
    for key in expected.keys() - ours.keys():  # what the layouts leave implicit, each filled exactly
        alias = key.replace(".f_query.", ".f_key.")
        if source == "mmseg" and key in MMSEG_ZERO_BIASES:
            ours[key] = torch.zeros_like(expected[key])
        elif ".apnb.attention.f_query." in key and alias in ours:  # APNB shares one projection for query and key
            ours[key] = ours[alias]
        elif key.endswith("num_batches_tracked"):  # not saved by every BatchNorm version
            ours[key] = torch.zeros_like(expected[key])
    _check_fits(ours, expected, source, origin)
    return ours, model.config


def _example(state: dict[str, torch.Tensor], layout: str) -> str:
    return next(key for key in state if key.startswith(_SIGNATURES[layout]))


def _build(config: dict[str, Any]) -> ANN:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        return ANN(**config)


def _check_fits(
    ours: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str, origin: dict[str, str]
) -> None:
    """One :class:`BadInput` listing the first missing (this project's names), unexpected and mis-shaped keys (the
    file's names), if any."""
    missing = sorted(expected.keys() - ours.keys())
    unexpected = sorted(origin.get(key, key) for key in ours.keys() - expected.keys())
    shapes = [f"{origin.get(key, key)} {tuple(ours[key].shape)} (expected {tuple(expected[key].shape)})"
              for key in sorted(expected.keys() & ours.keys()) if ours[key].shape != expected[key].shape]  # fmt: skip
    if missing or unexpected or shapes:
        found = (("missing here", missing), ("unexpected in the file", unexpected), ("mis-shaped", shapes))
        parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in found if keys]
        raise BadInput(f"the weights do not fit the {source} layout: {'; '.join(parts)}")


def convert_checkpoint(
    src: str | Path, source: str, dst: str | Path, *, align_corners: bool | None = None
) -> dict[str, Any]:
    """Read ``src`` as ``source`` saved it, convert it, check it loads strictly, and write ``dst`` (a model file
    :func:`~anncore.models.loading.load_model` reads); returns the ``model_config``."""
    checkpoint = read_source(src, source)
    meta = checkpoint.get("meta")
    meta_config = meta.get("config") if isinstance(meta, dict) and isinstance(meta.get("config"), str) else None
    if source == "mmseg" and align_corners is None and meta_config is None:
        align_corners = mmseg_align_corners(None, Path(src).name)
    state, config = convert_state_dict(
        source_state_dict(checkpoint), source, meta_config=meta_config, align_corners=align_corners
    )
    origin = {"source": source, "file": Path(src).name}
    save_checkpoint({"model": state, "model_config": config, "converted_from": origin}, dst)
    return config
