"""Checkpoint files: atomic writes, safe reads, and the check that no saved tensor holds NaN or infinity.

A checkpoint is one ``torch.save`` dict (``OUT/checkpoint.pt``) holding only tensors, numbers, strings, lists and
dicts, so it loads with ``weights_only=True``:

=================  =================================================================================
key                value
=================  =================================================================================
``format``         :data:`CHECKPOINT_FORMAT`
``iteration``      completed training iterations
``model``          the (unwrapped) model's ``state_dict``
``model_config``   ``ANN(**model_config)`` rebuilds the architecture (:func:`anncore.models.loading.load_model`)
``optimizer``      SGD state (momentum buffers, lr)
``scheduler``      poly scheduler state
``scaler``         fp16 gradient scaler state (empty when disabled)
``rng``            one :func:`~anncore.engine.rng.capture_rng_state` per process (rank order)
``progress``       best mIoU so far, accumulated wall time, ...
``config``         the training configuration, as a dict
=================  =================================================================================

It is written to a temporary file in the same folder, flushed to disk and renamed over the old one (``os.replace``
is atomic on POSIX and Windows), so a process killed at any moment leaves either the previous or the new checkpoint,
never a torn one. A Ctrl-C or SIGTERM that arrives while one is written is held back until the write is done (an
interrupted ``torch.save`` raises a ``RuntimeError`` from its zip writer instead of ``KeyboardInterrupt``), and a
write that fails leaves no ``.tmp`` file behind.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from anncore.errors import BadInput, MissingInput
from anncore.files import disk_full
from anncore.interrupts import interrupts_held_back

CHECKPOINT_FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: ``path.tmp``, fsync, then ``os.replace``, with Ctrl-C and SIGTERM held
    back."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with interrupts_held_back():
        try:
            with open(tmp, "wb") as f:
                torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if disk_full(err):
                kept = f"the previous {path} is intact" if path.exists() else f"no {path} was written"
                raise OSError(
                    errno.ENOSPC, f"No space left on the device of {path.parent} while writing {path.name}; {kept}"
                ) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)


def read_torch_file(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line :class:`~anncore.errors.MissingInput` or
    :class:`~anncore.errors.BadInput` naming the file and ``what`` it should have been when it cannot be read."""
    path = Path(path)
    if path.is_dir():
        inside = [name for name in ("checkpoint.pt", "model.pt") if (path / name).is_file()]
        hint = f"pass {path / inside[0]}" if inside else "pass the .pt file itself"
        raise BadInput(f"{what} {path} is a folder, not a file: {hint}")
    if not path.is_file():
        raise MissingInput(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"{path} is not a readable {what} (truncated, corrupt or not a torch file: {reason})") from err


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe ``weights_only`` unpickling)."""
    state = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"{path} is not an anncore training checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def non_finite(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` (a ``state_dict``, nested dicts and lists allowed) that hold
    a NaN or an infinity."""
    bad: list[str] = []
    for name, value in tensors.items():
        if isinstance(value, dict):
            bad += [f"{name}.{inner}" for inner in non_finite(value)]
        elif isinstance(value, list | tuple):
            bad += [f"{name}.{inner}" for inner in non_finite({str(i): item for i, item in enumerate(value)})]
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad.append(str(name))
    return bad


def check_finite(tensors: dict[str, Any], context: str) -> None:
    """Raise ``ValueError`` naming (up to five of) the tensors of ``tensors`` that hold NaN or infinity."""
    bad = non_finite(tensors)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise BadInput(f"{context}: non-finite values in {', '.join(bad[:5])}{more}")
