"""The random-number-generator states that make a resume exact, and a block run under a fixed seed.

A training checkpoint stores one :func:`capture_rng_state` per process; :func:`seeded` runs one sample's
augmentation under RNGs seeded from the sample (:mod:`anncore.engine.sampler`), so a resumed run draws what the
uninterrupted one drew.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
import torch


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
