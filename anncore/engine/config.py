"""Training settings: :class:`TrainConfig` (every field checked on construction), its YAML files, its command-line
flags (one per field) and what a resumed run may change.

``load_config("params/course_model.yaml", lr=0.02)`` reads a YAML mapping of field names and applies overrides;
``python -m anncore train --help`` lists the flags :func:`build_parser` derives from the fields. Unknown keys,
wrong types, NaN or infinite floats (:func:`finite`), out-of-range values and ``class_weights`` of another length
than the classes raise :class:`ConfigError` naming the key. ``data_root`` follows the one data-root rule of
:func:`anncore.data.root.resolve_data_root`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from anncore.data.labels import NUM_CLASSES
from anncore.data.root import SYNTHETIC, resolve_data_root, synthetic_set_of
from anncore.data.synthetic import CUE_VARIANTS
from anncore.errors import BadInput
from anncore.models.backbone import BACKBONES
from anncore.models.heads import HEADS
from anncore.nn.attention import ATTN_IMPLEMENTATIONS
from anncore.nn.pyramid import check_pool_sizes

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


def _opt(default: Any, help_text: str, **kwargs: Any) -> Any:
    """A config field with its ``--help`` text (and argparse extras: ``choices``, ``metavar``)."""
    return field(default=default, metadata={"help": help_text, **kwargs})


@dataclass
class TrainConfig:
    """Everything a training run depends on; the defaults are the official Cityscapes recipe where one applies.

    Build it directly, from a YAML mapping (:func:`load_config`) or from the command line (:func:`main`); every
    field is checked on construction (type and finiteness, then range), and errors name the field.
    """

    data_root: str = _opt(
        "",
        f"Cityscapes root (leftImg8bit/, gtFine/); empty: $CITYSCAPES_DATASET, else the synthetic set; {SYNTHETIC!r}: "
        "the synthetic set (written if missing)",
    )
    out: str = _opt("runs/train", "output folder: checkpoint.pt, log.jsonl, metrics.json, config.yaml")
    iters: int = _opt(60_000, "training iterations (official 60000)")
    batch_size: int = _opt(8, "global batch, split over DDP processes (official 8 = 8 GPUs x 1)")
    crop: tuple[int, int] = _opt((769, 769), "training crop H W (official 769 769)", metavar=("H", "W"))
    scale_range: tuple[float, float] = _opt(
        (0.5, 2.0), "random rescaling before the crop, low high (official 0.5 2.0; 1 1: none)", metavar=("LOW", "HIGH")
    )
    photometric: bool = _opt(True, "photometric jitter in the training augmentation (slow on CPU)")
    backbone: str = _opt("resnet101", f"one of {tuple(BACKBONES)}", choices=tuple(BACKBONES))
    head: str = _opt("ann", f"one of {tuple(HEADS)}", choices=tuple(HEADS))
    pool_sizes: list[int] | None = _opt(
        None, "pyramid levels of APNB and AFNB, e.g. 1 2 3 6 (default: the paper's 1 3 6 8, S = 110 anchors)"
    )
    pretrained: str | None = _opt(None, "backbone weights: none, imagenet (torchvision download) or a checkpoint path")
    attn_implementation: str = _opt(
        "auto",
        "how the context blocks compute attention: naive, sdpa (fused) or one SDPA backend",
        choices=ATTN_IMPLEMENTATIONS,
    )
    optimizer: str = _opt("sgd", "sgd (official, with momentum) or adam (the synthetic CPU recipe)", choices=OPTIMIZERS)
    lr: float = _opt(0.01, "base learning rate (official 0.01)")
    momentum: float = _opt(0.9, "SGD momentum (official 0.9)")
    weight_decay: float = _opt(5e-4, "weight decay (L2) on every parameter (official 5e-4)")
    poly_power: float = _opt(0.9, "poly decay power, per iteration (official 0.9)")
    warmup_iters: int = _opt(0, "linear learning-rate warm-up over the first N iterations (official 0: none)")
    aux_weight: float = _opt(0.4, "auxiliary loss weight; 0 builds no auxiliary head (official 0.4)")
    ohem: bool = _opt(True, "OHEM cross-entropy on the main output (official)")
    ohem_thresh: float = _opt(0.7, "OHEM probability threshold (official 0.7)")
    ohem_min_kept: int = _opt(100_000, "OHEM minimum kept pixels per image (official 100000 per 769x769 crop)")
    class_weights: list[float] | None = _opt(None, "per-class CE weights (params/cityscapes_r101.yaml: official)")
    synthetic_size: tuple[int, int] = _opt(
        (256, 512), f"image H W of the synthetic set (data_root {SYNTHETIC!r} only)", metavar=("H", "W")
    )
    synthetic_scenes: tuple[int, int] = _opt(
        (40, 10), f"train and val scenes of the synthetic set (data_root {SYNTHETIC!r} only)", metavar=("TRAIN", "VAL")
    )
    synthetic_cue: str = _opt(
        "boards",
        f"how the synthetic set's cue board shows the vehicle class (data_root {SYNTHETIC!r} only): boards (colour and "
        "stripe count) or stripes (one colour, equal white area: stripe count only; params/afnb_variant.yaml)",
        choices=CUE_VARIANTS,
    )
    check_data: bool = _opt(
        False, "decode every image and label before training, listing every bad file (always for <= 500 images)"
    )
    device: str = _opt("auto", "auto, cpu, cuda, cuda:i or mps (under torchrun: each process its local GPU)")
    amp: bool = _opt(False, "mixed precision: bf16 autocast on CUDA (fp16 + grad scaler without bf16), bf16 on CPU")
    channels_last: bool = _opt(False, "channels_last memory format for model and inputs")
    workers: int = _opt(4, "DataLoader worker processes per training process")
    threads: int = _opt(
        0,
        "CPU threads of this process (torch.set_num_threads; 0: torch's default). CPU training is bitwise "
        "reproducible only at a fixed thread count",
    )
    seed: int = _opt(0, "seed of initialisation, data order and augmentation")
    val_every: int = _opt(4000, "validate every N iterations (and always at the end); 0: only at the end")
    checkpoint_every: int = _opt(1000, "checkpoint every N iterations (and always at the end); 0: only at the end")
    log_every: int = _opt(
        10, "append a training record to log.jsonl, and print a progress line off a terminal, every N iterations"
    )
    resume: bool = _opt(False, "continue the run in OUT from OUT/checkpoint.pt (a fresh start if there is none)")
    allow_other_data: bool = _opt(
        False,
        "with --resume: continue even when the data differs from what the run read so far (its file-list "
        "fingerprint); by default such a resume is refused",
    )

    def __post_init__(self) -> None:
        for key, hint in _field_types().items():
            setattr(self, key, _coerce(key, getattr(self, key), hint))
        positive = ("iters", "batch_size", "lr", "log_every")
        non_negative = (
            "momentum",
            "weight_decay",
            "poly_power",
            "aux_weight",
            "workers",
            "val_every",
            "checkpoint_every",
            "warmup_iters",
            "threads",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("crop", "synthetic_size", "synthetic_scenes"):
            if min(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be two positive sizes, got {getattr(self, name)}")
        if self.pool_sizes is not None:
            try:
                check_pool_sizes(self.pool_sizes)
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if self.class_weights is not None and not all(w > 0 for w in self.class_weights):
            raise ConfigError(f"class_weights must all be > 0, got {self.class_weights}")
        if self.class_weights is not None and len(self.class_weights) != NUM_CLASSES:
            raise ConfigError(
                f"class_weights has {len(self.class_weights)} entries, expected {NUM_CLASSES} (one per Cityscapes "
                "train class, in train-id order)"
            )
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be LOW HIGH with 0 < LOW <= HIGH, got {self.scale_range}")
        if not 0.0 < self.ohem_thresh <= 1.0 or self.ohem_min_kept < 1:
            raise ConfigError(
                f"ohem_thresh must be in (0, 1] and ohem_min_kept >= 1, got {self.ohem_thresh}, {self.ohem_min_kept}"
            )
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        if self.pretrained is not None and self.pretrained.lower() == "none":
            self.pretrained = None


class ConfigError(BadInput):
    """A configuration value or file is invalid; the message names the key."""


def _field_types() -> dict[str, Any]:
    return {f.name: hint for f, hint in zip(fields(TrainConfig), get_type_hints(TrainConfig).values(), strict=True)}


def _is_optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, UnionType)


def _unwrap_optional(hint: Any) -> Any:
    """``X`` for ``X | None``, else ``hint`` itself."""
    return next(a for a in get_args(hint) if a is not type(None)) if _is_optional(hint) else hint


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type (ints accepted for floats, lists for tuples); a ``ConfigError`` otherwise."""
    if _is_optional(hint):
        return None if value is None else _coerce(name, value, _unwrap_optional(hint))
    args = get_args(hint)
    if get_origin(hint) in (tuple, list):
        if not isinstance(value, list | tuple) or (get_origin(hint) is tuple and len(value) != len(args)):
            raise ConfigError(
                f"{name} must be a list of {len(args) if get_origin(hint) is tuple else 'some'} "
                f"{args[0].__name__}s, got {value!r}"
            )
        items = [_coerce(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
        return get_origin(hint)(items)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return finite(name, value) if hint is float else value


def finite(name: str, value: float) -> float:
    """``value`` if it is a finite number, else a :class:`ConfigError` naming ``name`` (a field, or a flag such as
    ``--scales``) and the value. The one check for NaN and infinities of every float a user types (config fields,
    their flags and YAML keys, other commands' float options): range checks let them through (``nan <= 0`` is
    false), and they would surface much later, far from the setting (a non-finite loss, say)."""
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    return value


#: Keys of a run's ``config.yaml`` that record what the run read (``data``: its data root, image counts and file-list
#: fingerprint, :func:`anncore.data.cityscapes.data_record`) rather than set anything; :func:`load_config` skips them,
#: so that ``--config OUT/config.yaml`` repeats a run.
RECORDED_KEYS: tuple[str, ...] = ("data",)

#: Old field name -> new one; :func:`load_config` still reads the old name (``config.yaml`` of earlier runs).
RENAMED_KEYS = {"attention": "attn_implementation"}


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """:class:`TrainConfig` from a YAML mapping of field names (``None``: the defaults), then ``overrides``.

    Unknown keys are an error naming them, so a misspelt setting never silently falls back to a default.
    """
    values: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"--config {path}: no such file (expected a YAML mapping of TrainConfig fields)")
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"{path}: not valid YAML{line} ({getattr(err, 'problem', None) or err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of TrainConfig fields, got {type(loaded).__name__}")
        values.update(loaded)
    values.update(overrides)
    for key in RECORDED_KEYS:  # a run's config.yaml: what it read, not a setting
        values.pop(key, None)
    for old, new in RENAMED_KEYS.items():  # files written before a field was renamed
        if old in values and new not in values:
            values[new] = values.pop(old)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path or 'overrides'}: unknown config keys {unknown}; known keys: {sorted(known)}")
    return TrainConfig(**values)


def data_root_of(config: TrainConfig) -> Path:
    """Where ``config`` reads its data: the one data-root rule (:func:`~anncore.data.root.resolve_data_root`), the
    synthetic set being that of ``synthetic_size``, ``synthetic_scenes`` and ``synthetic_cue``."""
    return resolve_data_root(config.data_root, synthetic_set_of(asdict(config)))


#: Settings a resumed run may change: where it reads and writes (``data_root``, ``out``, ``device``: the same data
#: may have moved; the setting is not compared with the checkpoint's, the files read are: their fingerprint must be
#: the checkpoint's unless ``allow_other_data``), how it runs (``workers``, ``threads``, ``amp``,
#: ``check_data``, how often it logs, validates and checkpoints), and how long and how fast it goes on (``iters``,
#: ``lr``: the schedule follows). The model, the losses, the optimiser, the seed and the make-up of the data
#: (``synthetic_size``, ``crop``, ...) stay those of the checkpoint.
RESUME_MAY_CHANGE = frozenset(
    {"resume", "check_data", "workers", "data_root", "out", "device", "log_every", "val_every", "checkpoint_every",
     "lr", "iters", "amp", "threads", "allow_other_data"}
)  # fmt: skip


def _plain(value: Any) -> Any:
    """Config values as stored in a checkpoint (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


def changed_settings(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Fields of ``config`` that differ from ``saved`` (a checkpoint's plain config), sorted; fields ``saved`` lacks
    (added to :class:`TrainConfig` after it was written) count as unchanged."""
    return sorted(k for k, v in asdict(config).items() if saved.get(k, _plain(v)) != _plain(v))


def plain_config(config: TrainConfig) -> dict[str, Any]:
    """``config`` as plain YAML/JSON values (what ``config.yaml`` and checkpoints hold)."""
    return {k: _plain(v) for k, v in asdict(config).items()}


def build_parser() -> argparse.ArgumentParser:
    """``python -m anncore train`` flags: ``--config FILE`` and one flag per :class:`TrainConfig` field."""
    parser = argparse.ArgumentParser(
        prog="python -m anncore train",
        description="Train ANN or a baseline head (official Cityscapes recipe by default). Flags override the YAML "
        "file given with --config. Multi-GPU: torchrun --nproc_per_node=K -m anncore train ...",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML mapping of settings (e.g. params/cityscapes_r101.yaml)")
    for f, hint in _field_types().items():
        spec = next(x for x in fields(TrainConfig) if x.name == f)
        kwargs: dict[str, Any] = {
            "default": argparse.SUPPRESS,
            "help": f"{spec.metadata['help']} (default: {spec.default})",
            "dest": f,
        }
        base = _unwrap_optional(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) in (tuple, list):
            item = get_args(base)[0]
            kwargs.update(type=item, nargs=len(get_args(base)) if get_origin(base) is tuple else "+")
            kwargs["metavar"] = spec.metadata.get("metavar", item.__name__.upper())
        else:
            kwargs["type"] = base
            if "choices" in spec.metadata:
                kwargs["choices"] = spec.metadata["choices"]
        parser.add_argument(f"--{f.replace('_', '-')}", **kwargs)
    return parser
