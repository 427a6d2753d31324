"""The board-swap test counts what it says: checked with models whose answer is known in advance (one class
everywhere; an oracle that reads the board's colour from the pixels), and through the ``cue`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from anncore.__main__ import main
from anncore.analysis.cue import VEHICLE_IDS, VEHICLES, board_swap, vehicle_confusion
from anncore.data import CLASS_NAMES, IMAGENET_MEAN, IMAGENET_STD
from anncore.data.synthetic import CUE_BOARDS
from anncore.engine.config import load_config
from anncore.engine.train import train

SIZE = (64, 128)


class Constant(nn.Module):
    """Predicts one class on every pixel."""

    def __init__(self, cls: int) -> None:
        super().__init__()
        self.cls = cls

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = torch.zeros(images.shape[0], len(CLASS_NAMES), *images.shape[2:])
        logits[:, self.cls] = 1.0
        return {"out": logits}


class BoardOracle(nn.Module):
    """Reads the board as a human would: the cue colour with the most nearly-matching pixels decides every pixel."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        rgb = (images * std + mean) * 255
        logits = torch.zeros(images.shape[0], len(CLASS_NAMES), *images.shape[2:])
        for b in range(images.shape[0]):
            votes = [
                ((rgb[b] - torch.tensor(colour, dtype=torch.float32)[:, None, None]).norm(dim=0) < 45).sum()
                for colour, _ in CUE_BOARDS.values()
            ]
            logits[b, VEHICLE_IDS[int(np.argmax(votes))]] = 1.0
        return {"out": logits}


def test_vehicle_confusion_counts_rows_by_truth_and_columns_by_prediction() -> None:
    car, truck, bus = VEHICLE_IDS
    target = torch.tensor([[car, car, truck, 0], [bus, bus, bus, 255]])
    pred = torch.tensor([[car, truck, truck, car], [bus, 0, car, car]])
    expected = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 1]])
    np.testing.assert_array_equal(vehicle_confusion(pred, target), expected)


def test_a_model_blind_to_the_board_follows_it_a_third_of_the_time() -> None:
    result = board_swap(Constant(VEHICLE_IDS[0]), scenes=3, size=SIZE)
    assert result.follow_rate == pytest.approx(1 / 3)
    assert result.follow_rate_per_cue == {"car": 1.0, "truck": 0.0, "bus": 0.0}
    assert (result.confusion[:, 0] == result.vehicle_pixels).all() and result.confusion[:, 1:].sum() == 0
    assert board_swap(Constant(CLASS_NAMES.index("road")), scenes=2, size=SIZE).follow_rate == 0.0


def test_a_model_that_reads_the_board_follows_it() -> None:
    result = board_swap(BoardOracle(), scenes=4, size=SIZE)
    assert result.follow_rate == 1.0
    np.testing.assert_array_equal(np.diag(result.confusion), result.confusion.sum(axis=1))
    document = result.as_dict()
    assert document["confusion"]["columns"] == [*VEHICLES, "other"] and document["scenes"] == 4


def test_board_swap_rejects_no_scenes() -> None:
    with pytest.raises(ValueError, match="scenes"):
        board_swap(BoardOracle(), scenes=0)


def test_cue_command_writes_the_follow_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(
        data_root="synthetic", synthetic_size=list(SIZE), synthetic_scenes=[4, 2], backbone="small", iters=1,
        batch_size=2, crop=list(SIZE), ohem_min_kept=100, photometric=False, workers=0, device="cpu",
        out=str(tmp_path / "run"),
    )  # fmt: skip
    train(config)
    out = tmp_path / "cue.json"
    assert (
        main(["cue", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--scenes", "2", "--json", str(out)]) == 0
    )
    document = json.loads(out.read_text())
    assert 0.0 <= document["follow_rate"] <= 1.0 and document["size"] == list(SIZE)
    assert "follow rate:" in capsys.readouterr().out
