"""The resumable data order: batches a function of (seed, iteration), augmentation a function of the sample seed."""

import pytest
import torch
from torch.utils.data import DataLoader

from anncore.data.synthetic import write_synthetic_cityscapes
from anncore.engine.config import ConfigError
from anncore.engine.rng import seeded
from anncore.engine.sampler import ResumableBatchSampler, SeededSamples


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("synthetic"), train=4, val=2, height=64, width=128)


def test_sampler_batches_are_a_function_of_seed_and_iteration():
    full = list(ResumableBatchSampler(10, 4, seed=3, start=0, stop=9))
    assert list(ResumableBatchSampler(10, 4, seed=3, start=5, stop=9)) == full[5:]  # a resume sees the same batches
    for epoch in range(3):  # 2 batches per epoch (drop_last): distinct images within an epoch
        indices = [i for batch in full[2 * epoch : 2 * epoch + 2] for i, _ in batch]
        assert len(set(indices)) == 8
    assert full[0] != full[2] and full != list(ResumableBatchSampler(10, 4, seed=4, start=0, stop=9))
    shares = [list(ResumableBatchSampler(10, 4, 3, 0, 9, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*shares, strict=True)] == full  # ranks split every global batch
    with pytest.raises(ConfigError, match="multiple of the number of processes 3"):
        ResumableBatchSampler(10, 4, 0, 0, 1, world_size=3)
    with pytest.raises(ConfigError, match="larger than the training set"):
        ResumableBatchSampler(3, 4, 0, 0, 1)


def test_seeded_samples_fix_augmentation_and_leave_global_rng_alone(data_root):
    from anncore.data import CityscapesSegmentation, train_transforms

    samples = SeededSamples(CityscapesSegmentation(data_root, "train", train_transforms(crop_size=(32, 64))))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, c = samples[(1, 11)], samples[(1, 11)], samples[(1, 12)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    with seeded(5):
        x = torch.rand(3)
    with seeded(5):
        assert torch.equal(torch.rand(3), x)
    batches = {
        workers: list(DataLoader(samples, batch_sampler=ResumableBatchSampler(4, 2, 0, 0, 3), num_workers=workers))
        for workers in (0, 2)
    }
    for (images0, masks0), (images2, masks2) in zip(batches[0], batches[2], strict=True):  # workers change nothing
        assert torch.equal(images0, images2) and torch.equal(masks0, masks2)
