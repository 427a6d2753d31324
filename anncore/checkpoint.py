"""Training checkpoints: atomic writes and the random-number-generator states that make a resume exact.

A checkpoint is one ``torch.save`` dict (``OUT/checkpoint.pt``) holding only tensors, numbers, strings, lists and
dicts, so it loads with ``weights_only=True``:

=================  =================================================================================
key                value
=================  =================================================================================
``format``         :data:`CHECKPOINT_FORMAT`
``iteration``      completed training iterations
``model``          the (unwrapped) model's ``state_dict``
``model_config``   ``ANN(**model_config)`` rebuilds the architecture (:func:`anncore.model.load_model`)
``optimizer``      SGD state (momentum buffers, lr)
``scheduler``      poly scheduler state
``scaler``         fp16 gradient scaler state (empty when disabled)
``rng``            one :func:`capture_rng_state` per process (rank order)
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
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from anncore.errors import BadInput, MissingInput

CHECKPOINT_FORMAT = 1


#: The signals that ask a run to stop: Ctrl-C, and SIGTERM, what SLURM, Kubernetes and cloud preemption send
#: (seconds) before SIGKILL.
INTERRUPTS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_held_back() -> Iterator[None]:
    """Run the body with SIGINT and SIGTERM deferred: one that arrives during it is delivered again, to the handler
    that was in place (Python's ``KeyboardInterrupt`` for SIGINT by default, training's for SIGTERM, or an enclosing
    ``interrupts_held_back``), once the body is done; a body that raises drops it (its error goes up instead).

    Only the main thread can install signal handlers; elsewhere the body runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler not set from Python; the default stands in
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    for pending in dict.fromkeys(received):  # each signal once, in the order they came
        signal.raise_signal(pending)


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
            if _disk_full(err):
                kept = f"the previous {path} is intact" if path.exists() else f"no {path} was written"
                raise OSError(
                    errno.ENOSPC, f"No space left on the device of {path.parent} while writing {path.name}; {kept}"
                ) from err
            raise
        finally:
            tmp.unlink(missing_ok=True)


def _disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` or an exception it arose from is ``ENOSPC``: ``torch.save`` reports a failed write as a
    ``RuntimeError`` from its zip writer, with the ``OSError`` only as its context."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        err = err.__cause__ or err.__context__
    return False


def read_torch_file(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line :class:`~anncore.errors.MissingInput` or
    :class:`~anncore.errors.BadInput` naming the file and ``what`` it should have been when it cannot be read."""
    path = Path(path)
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


#: What :func:`export_model` keeps of a training checkpoint: enough to rebuild, evaluate and describe the model.
MODEL_KEYS = ("iteration", "model", "model_config", "progress", "config")


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the model of a training checkpoint, without optimiser, scheduler and RNG states (a third of the size
    under Adam), to ``out``; :func:`anncore.model.load_model` reads it like the full checkpoint. Refuses a model with
    non-finite weights or BatchNorm statistics."""
    state = load_checkpoint(checkpoint)
    check_finite(state["model"], f"{checkpoint}: not exporting a poisoned model")
    save_checkpoint({key: state[key] for key in MODEL_KEYS if key in state}, out)
    return Path(out)


def capture_rng_state(cuda: bool = True) -> dict[str, Any]:
    """The torch (CPU and, with ``cuda``, every CUDA device), numpy and Python RNG states of this process.

    numpy's key array is stored as a tensor so that the checkpoint stays ``weights_only``-loadable.
    """
    legacy = np.random.get_state()  # noqa: NPY002 - the legacy global RNG is what other code draws from
    # legacy=True (the default) gives the ("MT19937", keys, pos, has_gauss, cached_gaussian) tuple, never the dict
    name, keys, pos, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", legacy)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda and torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`: set every generator it captured back to that state."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the Python, numpy and torch CPU RNGs seeded with ``seed``; their states are restored after,
    so the caller's random streams (dropout, say) do not see the block at all."""
    state = capture_rng_state(cuda=False)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        restore_rng_state(state)
