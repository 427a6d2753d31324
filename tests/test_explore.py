"""`python -m anncore explore`: the explorer's figures for a user's own photos, and the errors for bad photos."""

import numpy as np
import pytest
import torch
from PIL import Image

from anncore.__main__ import main
from anncore.course.explore import photo_samples, query_cells


@pytest.fixture(scope="module")
def checkpoint(small_model_file):
    return small_model_file("ann", aux=False)


def test_photos_are_normalised_resized_and_unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    [(image, label)] = photo_samples([tmp_path / "street.png"], max_side=250)
    assert tuple(image.shape) == (3, 150, 250) and image.dtype == torch.float32
    assert abs(float(image.mean())) < 1.0 and bool((label == 255).all())  # ImageNet-normalised; no label


def test_query_cells_spread_over_the_grid():
    assert query_cells((16, 32), 2) == [(4, 8), (4, 24), (12, 8), (12, 24)]


def test_explore_writes_a_figure_per_block_and_cell(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(tmp_path / f"{name}.jpg")
    out = tmp_path / "figures"
    argv = ["explore", "--checkpoint", str(checkpoint), str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    figures = sorted(p.name for p in out.glob("*.png"))  # beside them, .anncore-outputs records what was written
    assert len(figures) == 2 * 2 * 4  # photos x blocks (AFNB, APNB) x 2x2 query cells
    assert figures[0].startswith("a_AFNB_") and Image.open(out / figures[0]).size[0] > 200
    assert "16 figures" in capsys.readouterr().out


@pytest.mark.parametrize(("photo", "message"), [("nowhere.jpg", "does not exist"), ("text.jpg", "not an image")])
def test_a_bad_photo_is_one_line(checkpoint, tmp_path, capsys, photo, message):
    (tmp_path / "text.jpg").write_text("not an image")
    argv = ["explore", "--checkpoint", str(checkpoint), str(tmp_path / photo), "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
