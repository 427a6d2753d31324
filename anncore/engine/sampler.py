"""The training data order: batches that are a pure function of ``(seed, iteration)``, what makes a resume exact.

:class:`ResumableBatchSampler` picks the samples of every iteration (and each process's share under DDP) and a seed
per sample; :class:`SeededSamples` runs a sample's augmentation under RNGs seeded with it, so neither the number of
DataLoader workers nor a restart changes a batch (the official code's ``RandomSampler`` + ``drop_last`` order is
not resumable; this is).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from anncore.engine.config import ConfigError
from anncore.engine.rng import seeded


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, sample_seed)`` for iterations ``start .. stop - 1``, each a pure function of
    ``(seed, iteration)``: what makes a resume exact and data order independent of workers and restarts.

    Iteration ``i`` is batch ``i % B`` of epoch ``i // B`` (``B = len(dataset) // batch_size``, the last partial
    batch dropped, as official ``drop_last``), epoch ``e`` being ``randperm`` seeded with ``(seed, e)``. With
    ``world_size`` processes, rank ``r`` takes the ``r``-th contiguous share of every global batch (this is the
    distributed sampler). Sample seeds come from ``numpy.random.SeedSequence([seed, i, position])``.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of processes {world_size}")
        if size < batch_size:
            raise ConfigError(f"batch_size {batch_size} is larger than the training set ({size} images)")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop = start, stop
        self.share = batch_size // world_size
        self.offset = rank * self.share
        self.batches_per_epoch = size // batch_size
        self._epoch: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return self.stop - self.start

    def _permutation(self, epoch: int) -> list[int]:
        if self._epoch[0] != epoch:
            seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
            self._epoch = (epoch, torch.randperm(self.size, generator=torch.Generator().manual_seed(seed)).tolist())
        return self._epoch[1]

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """This process's share of the global batch of ``iteration``."""
        epoch, b = divmod(iteration, self.batches_per_epoch)
        indices = self._permutation(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        positions = range(self.offset, self.offset + self.share)
        return [
            (indices[p], int(np.random.SeedSequence([self.seed, iteration, p]).generate_state(1)[0])) for p in positions
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return (self.batch(i) for i in range(self.start, self.stop))


class SeededSamples(Dataset):
    """``dataset[(index, seed)]`` is ``dataset[index]`` computed with the Python, numpy and torch RNGs seeded with
    ``seed`` (the caller's RNG states are restored afterwards), so augmentation depends on the seed only."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded(seed):
            return self.dataset[index]
