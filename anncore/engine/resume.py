"""The resume rules: which checkpoint a run continues from, which settings a resume may change
(:data:`~anncore.engine.config.RESUME_MAY_CHANGE`), and that it reads the data the run started with."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from anncore.data.cityscapes import describe_data
from anncore.engine.config import RESUME_MAY_CHANGE, ConfigError, TrainConfig, changed_settings
from anncore.errors import BadInput, OutputInUse
from anncore.models.checkpoint import load_checkpoint


def resume_state(config: TrainConfig, path: Path, main: bool = True) -> dict[str, Any] | None:
    """The checkpoint to continue from, checked against ``config``; ``None`` for a fresh start. Only the ``main``
    process says what changed."""
    if not path.exists():
        return None
    if not config.resume:
        raise OutputInUse(f"{path} exists: pass --resume to continue that run, or choose another --out")
    state = load_checkpoint(path)
    saved = state["config"]
    changed = changed_settings(saved, config)
    differing = [k for k in changed if k not in RESUME_MAY_CHANGE]
    if differing:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in differing)
        raise ConfigError(
            f"--resume with a different configuration than {path} was trained with ({changes}); "
            f"resume may change only {', '.join(sorted(RESUME_MAY_CHANGE))}; start a new run in another --out "
            "for anything else"
        )
    said = [k for k in changed if k not in ("resume", "allow_other_data")]
    changes = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in said)
    if changes and main:
        print(f"--resume with changed settings ({changes})", file=sys.stderr)
    return state


def check_same_data(
    state: dict[str, Any] | None, data: dict[str, Any], config: TrainConfig, path: Path, main: bool = True
) -> None:
    """Refuse to resume the checkpoint ``state`` on data (:func:`~anncore.data.cityscapes.data_record`) other than
    the data it recorded, unless ``config.allow_other_data``; a checkpoint that recorded none is resumed unchecked.
    Raises :class:`BadInput` naming both roots and fingerprints (every process, so that all stop); the ``main``
    process says the other cases in one line (stderr)."""

    if state is None:
        return
    saved = state.get("data")
    if saved is None and main:
        print(
            f"--resume: {path} was written before runs recorded their data (no fingerprint), so the data is not "
            f"checked; from now on the run records {describe_data(data)}",
            file=sys.stderr,
        )
    elif saved is not None and saved.get("fingerprint") != data["fingerprint"]:
        if not config.allow_other_data:
            raise BadInput(
                f"--resume would read other data than {path} was trained on: {describe_data(data)} instead of "
                f"{describe_data(saved)}; point --data-root (or $CITYSCAPES_DATASET) at the data the run started "
                "with, or pass --allow-other-data to continue on this data"
            )
        if main:
            print(
                f"--resume on other data (--allow-other-data): {describe_data(data)} instead of {describe_data(saved)}",
                file=sys.stderr,
            )
