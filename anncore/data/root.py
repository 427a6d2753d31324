"""Where the data is: one rule for every command, notebook and function that reads Cityscapes.

:func:`resolve_data_root` picks, in this order:

1. the root the user gave (``--data-root``, a notebook's ``DATA_ROOT``, ``TrainConfig.data_root``) unless it is empty;
   the word ``"synthetic"`` asks for the synthetic set;
2. else ``$CITYSCAPES_DATASET``, the variable cityscapesscripts reads;
3. else the synthetic set (:mod:`anncore.data.synthetic`) of the given settings, written on first use.

A relative path is resolved against the current working directory, the one documented base: for a command, where it
is started; for a notebook, the notebook's folder (``notebooks/``; Jupyter and papermill run a notebook there).
Generated sets live under :func:`generated_home`: ``$ANNCORE_DATA`` when set (the tests point it at a temporary
folder), else ``data/generated/`` of the repository checkout the package runs from, else ``~/.cache/anncore``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anncore.data.synthetic import MANIFEST, check_cue_variant, ensure_synthetic

SYNTHETIC = "synthetic"
DATA_HOME_VARIABLE = "ANNCORE_DATA"
_CHECKOUT = Path(__file__).resolve().parents[2]


def generated_home() -> Path:
    """The folder that holds generated data sets (module docstring)."""
    if os.environ.get(DATA_HOME_VARIABLE):
        return Path(os.environ[DATA_HOME_VARIABLE]).expanduser().resolve()
    if (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT / "data" / "generated"
    return Path.home() / ".cache" / "anncore"


@dataclass(frozen=True)
class SyntheticSet:
    """The settings of one synthetic set; each set has its own folder, so sets of different sizes never collide."""

    train: int = 40
    val: int = 10
    height: int = 256
    width: int = 512
    seed: int = 0
    cue_variant: str = "boards"

    def __post_init__(self) -> None:
        check_cue_variant(self.cue_variant)

    @property
    def root(self) -> Path:
        """``synthetic_cityscapes`` under :func:`generated_home` for the defaults, else a folder named by the
        settings (``synthetic_cityscapes_128x256_400+30_seed0``), with ``_cue-{variant}`` for a cue variant other
        than the default (so sets of different variants never share a folder)."""
        name = "synthetic_cityscapes"
        if self != SyntheticSet():
            name += f"_{self.height}x{self.width}_{self.train}+{self.val}_seed{self.seed}"
        if self.cue_variant != "boards":
            name += f"_cue-{self.cue_variant}"
        return generated_home() / name

    def ensure(self) -> Path:
        """:attr:`root`, written first unless it already holds exactly this set (:func:`ensure_synthetic`)."""
        return ensure_synthetic(self.root, self.train, self.val, self.height, self.width, self.seed, self.cue_variant)


def synthetic_set_of(config: Mapping[str, Any]) -> SyntheticSet:
    """The synthetic set a training configuration reads when its data root resolves to the synthetic set: from a
    :class:`~anncore.engine.config.TrainConfig` as a dict, or the plain config a checkpoint records (one written before
    ``synthetic_cue`` existed read the default boards)."""
    (height, width), (train, val) = config.get("synthetic_size", (256, 512)), config.get("synthetic_scenes", (40, 10))
    cue_variant = str(config.get("synthetic_cue", "boards"))
    return SyntheticSet(train=int(train), val=int(val), height=int(height), width=int(width), cue_variant=cue_variant)


def resolve_data_root(data_root: str | Path | None = None, synthetic: SyntheticSet = SyntheticSet()) -> Path:
    """The one data-root rule (module docstring); only the synthetic case writes anything."""
    if str(data_root) == SYNTHETIC:
        return synthetic.ensure()
    chosen = str(data_root or "") or os.environ.get("CITYSCAPES_DATASET", "")
    return Path(chosen).expanduser().resolve() if chosen else synthetic.ensure()


def is_synthetic(root: str | Path) -> bool:
    """Whether ``root`` holds a generated synthetic set (its manifest) rather than real Cityscapes."""
    return (Path(root) / MANIFEST).is_file()
