"""The synthetic Cityscapes set: deterministic scenes, the distant cue, and the exact official file format, checked
against torchvision's reader and cityscapesscripts' own rasteriser."""

import filecmp
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import Cityscapes

from anncore.__main__ import main
from anncore.data.cityscapes import find_samples
from anncore.data.labels import LABEL_ID_TO_TRAIN_ID
from anncore.data.root import SyntheticSet, synthetic_set_of
from anncore.data.synthetic import (
    CITIES,
    CUE_BOARDS,
    GENERATOR_VERSION,
    MANIFEST,
    STRIPES_BOARD,
    ensure_synthetic,
    frame_scene,
    make_scene,
    render_scene,
    write_synthetic_cityscapes,
)
from anncore.engine.config import ConfigError, load_config

H, W = 64, 128
VEHICLE_IDS = {"car": 26, "truck": 27, "bus": 28}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_cityscapes(tmp_path_factory.mktemp("synth") / "cs", train=4, val=2, height=H, width=W)


def gt_files(root, suffix):
    return sorted(root.glob(f"gtFine/*/*/*_gtFine_{suffix}"))


def test_make_scene_is_a_function_of_the_seed():
    image, labels = make_scene(3, H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    again_image, again_labels = make_scene(3, H, W)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    assert not np.array_equal(image, make_scene(4, H, W)[0])


@pytest.mark.parametrize(("height", "width"), [(16, 128), (64, 32), (64.0, 128)])
def test_make_scene_rejects_bad_sizes(height, width):
    with pytest.raises(ValueError, match="height|width"):
        make_scene(0, height, width)


def test_scenes_draw_at_least_12_of_the_19_classes():
    train_ids = np.concatenate([LABEL_ID_TO_TRAIN_ID[make_scene(seed, 128, 256)[1]].ravel() for seed in range(6)])
    present = set(np.unique(train_ids).tolist()) - {255}
    assert len(present) >= 12, present
    assert {0, 1, 2, 5, 7, 8, 10, 11} <= present  # road, sidewalk, building, pole, sign, vegetation, sky, person


@pytest.mark.parametrize("seed", range(12))
def test_vehicles_follow_the_distant_board(seed):
    scene = render_scene(seed, H, W)
    labels = scene.label_ids()
    vehicles = np.isin(labels, list(VEHICLE_IDS.values()))
    assert vehicles.any()
    assert set(np.unique(labels[vehicles]).tolist()) == {VEHICLE_IDS[scene.cue]}
    # the board: the last traffic sign drawn; its visible pixels are at least 0.22 W from every vehicle pixel
    board = max(k for k, obj in enumerate(scene.objects, start=1) if obj.label == "traffic sign")
    board_x = np.nonzero((scene.index == board).any(axis=0))[0]
    vehicle_x = np.nonzero(vehicles.any(axis=0))[0]
    gap = min(abs(vehicle_x[:, None] - board_x[None, :]).min(), W)
    assert gap >= 0.22 * W - 1
    face = np.median(scene.image[scene.index == board].astype(float), axis=0)  # the board shows the cue colour:
    cosine = {cue: face @ rgb / np.linalg.norm(rgb) for cue, (rgb, _) in CUE_BOARDS.items()}  # nearest in hue
    assert max(cosine, key=cosine.get) == scene.cue


def test_the_cue_changes_only_the_board_pixels_and_the_vehicle_labels():
    car, bus = render_scene(7, H, W, cue="car"), render_scene(7, H, W, cue="bus")
    board = car.index == max(k for k, obj in enumerate(car.objects, start=1) if obj.label == "traffic sign")
    ys, xs = np.nonzero(board)
    near_board = np.zeros_like(board)
    near_board[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4] = True  # blur reaches ~1 px
    differ = (car.image != bus.image).any(axis=-1)
    assert differ.any() and not (differ & ~near_board).any()
    car_labels, bus_labels = car.label_ids(), bus.label_ids()
    changed = car_labels != bus_labels
    assert changed.any()
    assert set(car_labels[changed].tolist()) == {26} and set(bus_labels[changed].tolist()) == {28}
    with pytest.raises(ValueError, match="cue"):
        render_scene(7, H, W, cue="train")


def test_written_layout_and_encodings(root):
    assert tuple(sorted(p.name for p in (root / "leftImg8bit" / "train").iterdir())) == CITIES["train"]
    for suffix in ("labelIds.png", "labelTrainIds.png", "color.png", "instanceIds.png", "polygons.json"):
        assert len(gt_files(root, suffix)) == 6, suffix
    image = Image.open(next(root.glob("leftImg8bit/train/*/*.png")))
    assert (image.mode, image.size) == ("RGB", (W, H))
    assert Image.open(gt_files(root, "labelIds.png")[0]).mode == "L"
    assert Image.open(gt_files(root, "color.png")[0]).mode == "RGBA"
    instance = np.asarray(Image.open(gt_files(root, "instanceIds.png")[0]))
    assert instance.dtype == np.uint16 and (instance >= 1000).any()  # id * 1000 + k for the instance classes
    polygons = json.loads(gt_files(root, "polygons.json")[0].read_text())
    assert (polygons["imgHeight"], polygons["imgWidth"]) == (H, W) and polygons["objects"][0]["label"] == "sky"
    assert all("_" not in city.name for city in root.glob("*/*/*"))
    manifest = json.loads((root / MANIFEST).read_text())
    assert len(manifest["cues"]) == 6 and set(manifest["cues"].values()) <= set(CUE_BOARDS)


def test_same_seed_writes_identical_files(root, tmp_path):
    again = write_synthetic_cityscapes(tmp_path / "again", train=4, val=2, height=H, width=W)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all(filecmp.cmp(root / f, again / f, shallow=False) for f in files)


def test_torchvision_cityscapes_reads_the_set(root):
    for split, count in (("train", 4), ("val", 2)):
        tv = Cityscapes(str(root), split=split, mode="fine", target_type=["semantic", "polygon"])
        assert len(tv) == count
        ours = find_samples(root, split)
        assert sorted(tv.images) == [str(image) for image, _ in ours]
        image, (semantic, polygons) = tv[0]
        assert image.size == (W, H) and semantic.size == (W, H) and len(polygons["objects"]) > 10


def test_label_id_lookup_agrees_with_written_train_ids(root):
    for path in gt_files(root, "labelIds.png"):
        label_ids = np.asarray(Image.open(path))
        train_ids = np.asarray(Image.open(str(path).replace("_labelIds", "_labelTrainIds")))
        assert np.array_equal(LABEL_ID_TO_TRAIN_ID[label_ids], train_ids), path


def test_cityscapesscripts_redraws_the_same_labels_from_the_polygons(root, tmp_path, monkeypatch):
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation import createTrainIdLabelImgs
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    for path in gt_files(copy, "labelTrainIds.png"):
        path.unlink()
    monkeypatch.setenv("CITYSCAPES_DATASET", str(copy))
    createTrainIdLabelImgs.main()
    for theirs in gt_files(copy, "labelTrainIds.png"):
        ours = root / theirs.relative_to(copy)
        assert np.array_equal(np.asarray(Image.open(theirs)), np.asarray(Image.open(ours))), ours
    for path in gt_files(root, "polygons.json"):
        annotation = Annotation()
        annotation.fromJsonFile(str(path))
        stem = str(path).removesuffix("_polygons.json")
        for encoding, ours in (("ids", "_labelIds.png"), ("color", "_color.png")):
            theirs = np.asarray(createLabelImage(annotation, encoding))
            assert np.array_equal(theirs, np.asarray(Image.open(stem + ours))), stem + ours
        theirs = np.asarray(createInstanceImage(annotation, "ids"))
        assert np.array_equal(theirs, np.asarray(Image.open(stem + "_instanceIds.png")).astype(theirs.dtype))
    assert labels.name2label["truck"].id == VEHICLE_IDS["truck"]


def test_ensure_synthetic_writes_once_and_never_over_foreign_data(tmp_path):
    root = ensure_synthetic(tmp_path / "cs", train=1, val=1, height=H, width=W)
    stamp = (root / MANIFEST).stat().st_mtime_ns
    assert ensure_synthetic(root, train=1, val=1, height=H, width=W) == root
    assert (root / MANIFEST).stat().st_mtime_ns == stamp  # complete and same settings: not rewritten
    ensure_synthetic(root, train=1, val=1, height=H, width=W, seed=1)
    assert json.loads((root / MANIFEST).read_text())["seed"] == 1  # other settings: rewritten
    foreign = tmp_path / "real"
    (foreign / "leftImg8bit").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_synthetic(foreign, train=1, val=1, height=H, width=W)
    assert (foreign / "leftImg8bit").is_dir()


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", "--out", str(out), "--train", "2", "--val", "1", "--height", str(H), "--width", str(W)]
    assert main([*argv, "--seed", "5"]) == 0
    assert "2 train + 1 val" in capsys.readouterr().out
    assert len(find_samples(out, "train")) == 2 and len(find_samples(out, "val")) == 1


def test_frame_scene_renders_the_written_frame(root):
    for image_path, _ in find_samples(root, "val"):
        stem = image_path.name.removesuffix("_leftImg8bit.png")
        scene = frame_scene(stem, "val", H, W)
        assert np.array_equal(np.asarray(Image.open(image_path)), scene.image)
        board = scene.board_mask()
        assert board.any() and (scene.label_ids()[board] == 20).all()  # label id 20: traffic sign
    with pytest.raises(ValueError, match="not a frame"):
        frame_scene("nowhere_000000_000019", "val", H, W)


# sha256 of image + label ids of render_scene(seed, 64, 128), computed with the generator before ``cue_variant``
# existed (commit 747973f): the default output must stay byte-identical, so existing sets and checkpoints stay valid.
DEFAULT_DIGESTS = {
    3: "d6e1480ee0e31ab841949458d0dcff556a7d2b3bca3d7aa48729b1902932959f",
    7: "e04a05e678898381f2c88595dcdc1b1d73f7758146edf57cffcd6c4b22b7af11",
}


@pytest.mark.parametrize("seed", sorted(DEFAULT_DIGESTS))
def test_the_default_cue_variant_draws_what_the_generator_always_drew(seed):
    assert GENERATOR_VERSION == 2, "the generator changed: recompute DEFAULT_DIGESTS"
    for scene in (render_scene(seed, H, W), render_scene(seed, H, W, cue_variant="boards")):
        digest = hashlib.sha256(scene.image.tobytes() + scene.label_ids().tobytes()).hexdigest()
        assert digest == DEFAULT_DIGESTS[seed]


def _board_face(scene):
    """The board's pixels before blur and noise (its painter), inside its rim."""
    board = max(k for k, obj in enumerate(scene.objects, start=1) if obj.label == "traffic sign")
    (x0, y0), (x1, y1) = scene.objects[board - 1].polygon[0], scene.objects[board - 1].polygon[2]
    face = scene.objects[board - 1].paint(y0, y1 + 1, x0, x1 + 1)
    h, w = face.shape[:2]
    return face[round(0.12 * h) : round(0.88 * h), round(0.12 * w) : round(0.88 * w)]


@pytest.mark.parametrize("seed", range(6))
def test_the_stripes_variant_tells_the_class_only_by_the_stripes(seed):
    """One colour and (to a pixel row) one white area for every class; the number of stripes is the class's; the
    scene outside the board is the default one."""
    height, width = 128, 256
    default = render_scene(seed, height, width)
    scenes = {cue: render_scene(seed, height, width, cue=cue, cue_variant="stripes") for cue in CUE_BOARDS}
    white = {}
    for cue, scene in scenes.items():
        face = _board_face(scene)
        ink = (face > 200).all(axis=-1)
        white[cue] = ink.mean()
        column = ink[:, ink.shape[1] // 2]
        runs = int(column[0]) + int((column[1:] & ~column[:-1]).sum())
        assert runs == CUE_BOARDS[cue][1], (cue, column.astype(int))
        colour = np.median(face[~ink], axis=0)
        assert np.abs(colour - STRIPES_BOARD).max() < 30, colour  # the one board colour, whatever the class
        assert scene.cue == cue
        outside = ~scene.board_mask()  # the board is drawn last but the bonnet; blur reaches a pixel or so
        ys, xs = np.nonzero(scene.board_mask())
        outside[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4] = False
        assert np.array_equal(scene.image[outside], render_scene(seed, height, width, cue=cue).image[outside])
        assert np.array_equal(scene.index, default.index)
    assert max(white.values()) - min(white.values()) < 0.06, white
    faces = [scene.image[scene.board_mask()] for scene in scenes.values()]
    assert all(not np.array_equal(faces[0], other) for other in faces[1:])  # the variant is not a no-op
    with pytest.raises(ValueError, match="cue_variant"):
        render_scene(seed, H, W, cue_variant="colours")


def test_a_cue_variant_set_records_its_variant_and_never_stands_in_for_another(tmp_path):
    default = ensure_synthetic(tmp_path / "set", train=1, val=1, height=H, width=W)
    manifest = json.loads((default / MANIFEST).read_text())
    assert "cue_variant" not in manifest and manifest["cue_boards"] == json.loads(json.dumps(CUE_BOARDS))
    before = (default / MANIFEST).stat().st_mtime_ns
    stripes = ensure_synthetic(tmp_path / "set", train=1, val=1, height=H, width=W, cue_variant="stripes")
    manifest = json.loads((stripes / MANIFEST).read_text())
    assert manifest["cue_variant"] == "stripes"
    assert {tuple(rgb) for rgb, _ in manifest["cue_boards"].values()} == {STRIPES_BOARD}
    again = ensure_synthetic(tmp_path / "set", train=1, val=1, height=H, width=W)  # the default is rewritten
    assert "cue_variant" not in json.loads((again / MANIFEST).read_text())
    assert (again / MANIFEST).stat().st_mtime_ns != before


def test_the_cue_variant_reaches_the_set_from_the_config_and_the_cli(tmp_path, capsys):
    config = load_config(Path(__file__).resolve().parents[1] / "params" / "afnb_variant.yaml")
    assert config.synthetic_cue == "stripes"
    chosen = synthetic_set_of(config.__dict__)
    assert chosen == SyntheticSet(400, 30, 128, 256, 0, "stripes") and chosen.root.name.endswith("_cue-stripes")
    assert synthetic_set_of({}).cue_variant == "boards"  # a checkpoint written before the option: the default
    assert SyntheticSet().root.name == "synthetic_cityscapes"
    with pytest.raises(ConfigError, match="synthetic_cue"):
        load_config(None, synthetic_cue="colours")
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--train", "1", "--val", "1", "--height", "64", "--width", "128"]
    assert main([*args, "--cue-variant", "stripes"]) == 0
    assert json.loads((out / MANIFEST).read_text())["cue_variant"] == "stripes"
    assert "cue variant stripes" in capsys.readouterr().out
