"""Joint transforms: image and mask move together, padding is ignored, randomness is seeded and per worker."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from anncore.data import IGNORE_INDEX, PALETTE, denormalize, train_transforms, val_transforms
from anncore.data.transforms import RandomScale

H, W = 48, 96


def striped_pair():
    """Vertical bands of width 24 with classes 0..3 (an asymmetric pattern) and the image painted in each band's
    palette colour, so the image alone says which class every pixel should have."""
    mask = torch.from_numpy(np.broadcast_to(np.arange(W) // 24, (H, W)).astype(np.uint8))
    image = torch.from_numpy(PALETTE[mask.numpy()]).permute(2, 0, 1).contiguous()
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def test_geometry_moves_image_and_mask_together():
    image, mask = striped_pair()
    transform = train_transforms(crop_size=(40, 40), photometric=False)
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        assert out_image.shape == (3, 40, 40) and out_image.dtype == torch.float32
        assert out_mask.shape == (40, 40) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= set(range(4)) | {IGNORE_INDEX}  # nearest: no blended ids
        rgb, labels = denormalize(out_image).astype(int), out_mask.numpy()
        valid = labels != IGNORE_INDEX
        match = np.abs(rgb - PALETTE[np.where(valid, labels, 0)]).max(axis=-1) <= 12
        assert match[valid].mean() > 0.85, seed  # all but interpolated band edges (>= 0.92; a wrong flip <= 0.72)
        flipped += bool(valid.any() and labels[valid][0] >= labels[valid][-1] and len(np.unique(labels[valid])) > 1)
    assert 0 < flipped < 12  # the flip happened sometimes, never to one of the two only


def test_padding_is_zero_in_the_image_and_ignored_in_the_mask():
    image, mask = striped_pair()
    torch.manual_seed(0)
    out_image, out_mask = train_transforms(crop_size=(64, 128), scale_range=(1.0, 1.0), photometric=False)(image, mask)
    padded = out_mask == IGNORE_INDEX
    assert padded.sum() == 64 * 128 - H * W
    assert (denormalize(out_image)[padded.numpy()] == 0).all()


def test_random_scale_draws_a_factor_of_each_images_size():
    image, mask = striped_pair()
    scale = RandomScale((0.5, 2.0))
    sizes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out_image, out_mask = scale(image, mask)
        assert out_image.shape[1:] == out_mask.shape
        h, w = out_mask.shape
        assert 0.5 * H - 1 <= h <= 2 * H + 1 and abs(w / h - W / H) < 0.1
        sizes.add(h)
    assert len(sizes) > 10
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((2.0, 0.5))
    with pytest.raises(ValueError, match="crop_size"):
        train_transforms(crop_size=(64,))


def test_seeded_and_not_constant():
    image, mask = striped_pair()
    transform = train_transforms(crop_size=(32, 32))
    torch.manual_seed(3)
    first = transform(image, mask)
    torch.manual_seed(3)
    again = transform(image, mask)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(transform(image, mask)[0], first[0])


def test_val_transforms_normalise_only():
    image, mask = striped_pair()
    out_image, out_mask = val_transforms()(image, mask)
    assert out_image.shape == (3, H, W) and torch.equal(out_mask, mask.long())
    assert np.array_equal(denormalize(out_image), image.permute(1, 2, 0).numpy())


class _Repeated(Dataset):
    """The same pair under ``transform``, ``n`` times."""

    def __init__(self, n):
        self.pair, self.transform, self.n = striped_pair(), train_transforms(crop_size=(24, 24)), n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.transform(*self.pair)


def test_dataloader_workers_are_seeded_and_differ():
    def epoch():
        loader = DataLoader(_Repeated(4), batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
        return [image for image, _ in loader]

    first, again = epoch(), epoch()
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers
