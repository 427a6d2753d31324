"""The Cityscapes loader and label table: the 19 classes, the id lookups, what it reads, and its error messages."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from anncore.data import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    CityscapesSegmentation,
    colorize,
    train_id_to_label_id,
)
from anncore.data.labels import LABEL_ID_TO_TRAIN_ID
from anncore.data.synthetic import write_synthetic_cityscapes

H, W = 64, 128
# The reference (sec. 8): train ids 0..18 are these label ids, in this order.
TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("cs") / "cs", train=3, val=2, height=H, width=W)


@pytest.fixture
def root(pristine, tmp_path):
    """A private copy to break."""
    return shutil.copytree(pristine, tmp_path / "cs")


def test_the_19_classes_match_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = sorted((lab for lab in labels.labels if lab.trainId not in (255, -1)), key=lambda lab: lab.trainId)
    assert NUM_CLASSES == 19 and IGNORE_INDEX == 255
    assert CLASS_NAMES == tuple(lab.name for lab in official)
    assert PALETTE.dtype == np.uint8 and PALETTE.tolist() == [list(lab.color) for lab in official]
    assert tuple(lab.id for lab in official) == TRAIN_LABEL_IDS
    for lab in labels.labels:
        if lab.id >= 0:
            assert LABEL_ID_TO_TRAIN_ID[lab.id] == lab.trainId, lab.name


def test_lookup_maps_exactly_the_19_ids_and_marks_unknown_ones():
    train_ids = LABEL_ID_TO_TRAIN_ID[np.arange(34)]
    assert [int(np.flatnonzero(train_ids == k)[0]) for k in range(19)] == list(TRAIN_LABEL_IDS)
    assert ((train_ids == 255) | np.isin(np.arange(34), TRAIN_LABEL_IDS)).all()
    assert (LABEL_ID_TO_TRAIN_ID[34:] == -1).all()


def test_train_id_to_label_id_inverts_the_lookup():
    mask = np.array([[*range(19), 255]], dtype=np.int64)
    ids = train_id_to_label_id(mask)
    assert ids.dtype == np.uint8 and ids.tolist() == [[*TRAIN_LABEL_IDS, 0]]
    back = train_id_to_label_id(torch.from_numpy(mask))
    assert isinstance(back, torch.Tensor) and back.tolist() == ids.tolist()
    with pytest.raises(ValueError, match=r"\[19\]"):
        train_id_to_label_id(np.array([19]))


def test_colorize():
    mask = torch.tensor([[0, 10, 255], [18, 13, 1]])
    rgb = colorize(mask)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [70, 130, 180]  # road, sky
    assert rgb[0, 2].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == PALETTE[18].tolist()
    with pytest.raises(ValueError, match="train ids"):
        colorize(np.array([[40]]))


def test_items_match_the_files(pristine):
    ds = CityscapesSegmentation(pristine, split="val")
    assert len(ds) == 2 and ds.image_id(0) == ds.samples[0][0].name.removesuffix("_leftImg8bit.png")
    assert ds.samples == sorted(ds.samples) and all(p.name.endswith("_gtFine_labelTrainIds.png") for _, p in ds.samples)
    image, mask = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, H, W) and type(image) is torch.Tensor
    assert mask.dtype == torch.int64 and mask.shape == (H, W)
    rgb = np.asarray(Image.open(ds.samples[1][0]), dtype=np.float32) / 255
    expected = (rgb - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    assert np.allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert np.array_equal(mask.numpy(), np.asarray(Image.open(ds.samples[1][1])))


def test_label_ids_are_mapped_when_train_ids_are_absent(pristine, root):
    for path in root.glob("gtFine/*/*/*_labelTrainIds.png"):
        path.unlink()
    ds = CityscapesSegmentation(root, split="train")
    assert all(p.name.endswith("_gtFine_labelIds.png") for _, p in ds.samples)
    for i in range(len(ds)):
        written = pristine / ds.samples[i][1].relative_to(root)
        written = written.with_name(written.name.replace("_labelIds", "_labelTrainIds"))
        assert np.array_equal(ds[i][1].numpy(), np.asarray(Image.open(written)))


def test_a_wrong_root_names_the_missing_folder_and_the_layout(tmp_path, root):
    with pytest.raises(FileNotFoundError, match=r"missing: .*nowhere(.|\n)*leftImg8bit/train/\{city\}"):
        CityscapesSegmentation(tmp_path / "nowhere")
    shutil.rmtree(root / "gtFine")
    with pytest.raises(FileNotFoundError, match=r"missing: .*gtFine/train(.|\n)*gtFine_trainvaltest\.zip"):
        CityscapesSegmentation(root)
    with pytest.raises(ValueError, match="split"):
        CityscapesSegmentation(root, split="training")


def test_unpaired_files_are_named(root):
    image = next(root.glob("leftImg8bit/train/*/*.png"))
    stem = image.name.removesuffix("_leftImg8bit.png")
    for path in root.glob(f"gtFine/train/*/{stem}_gtFine_label*.png"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match=f"image without label: {image}"):
        CityscapesSegmentation(root)
    image.unlink()
    CityscapesSegmentation(root)  # consistent again
    orphan = next(root.glob("gtFine/val/*/*_labelIds.png"))
    shutil.copy(orphan, orphan.with_name("nowhere_000000_000019_gtFine_labelIds.png"))
    with pytest.raises(FileNotFoundError, match="label without image: .*nowhere_000000_000019_gtFine_labelIds.png"):
        CityscapesSegmentation(root, split="val")


def test_a_label_of_the_wrong_size_is_named_up_front(root):
    label = next(root.glob("gtFine/train/*/*_labelTrainIds.png"))
    Image.fromarray(np.zeros((H, W // 2), np.uint8)).save(label)
    with pytest.raises(ValueError, match=f"{label.name}: label size \\(64, 64\\)"):
        CityscapesSegmentation(root)


def test_an_unreadable_png_is_named(root):
    label = next(root.glob("gtFine/train/*/*_labelTrainIds.png"))
    label.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=f"{label.name}: not a readable PNG"):
        CityscapesSegmentation(root)
    label.unlink()
    image = next(root.glob("leftImg8bit/train/*/*.png"))
    image.write_bytes(image.read_bytes()[:200])  # header intact, data truncated: caught when decoded
    ds = CityscapesSegmentation(root)
    with pytest.raises(ValueError, match=f"{image.name}: cannot decode PNG"):
        ds[[p for p, _ in ds.samples].index(image)]


@pytest.mark.parametrize(
    ("suffix", "bad", "expected"), [("_labelIds.png", 34, "label ids"), ("_labelTrainIds.png", 19, "train ids")]
)
def test_label_values_outside_the_known_ids_are_named(root, suffix, bad, expected):
    for path in root.glob("gtFine/train/*/*_labelTrainIds.png"):
        if suffix == "_labelIds.png":
            path.unlink()
    label = sorted(root.glob(f"gtFine/train/*/*_gtFine{suffix}"))[0]
    values = np.asarray(Image.open(label)).copy()
    values[0, 0] = bad
    Image.fromarray(values).save(label)
    ds = CityscapesSegmentation(root)
    with pytest.raises(ValueError, match=f"{label.name}: expected .*{expected}.*\\[{bad}\\]"):
        ds[[p for _, p in ds.samples].index(label)]
