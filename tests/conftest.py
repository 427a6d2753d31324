"""Fixtures several test modules share."""

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from anncore.models.checkpoint import save_checkpoint
from anncore.models.network import ANN


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation on a 2-core machine (and on a busy one, a lot of it).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_model_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``small_model_file(head, **options)``: a model file (untrained small backbone) that ``load_model`` reads."""

    def write(head: str = "ann", **options: object) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ANN(19, "small", head, **options)
        path = tmp_path_factory.mktemp("model") / "model.pt"
        save_checkpoint({"model": model.state_dict(), "model_config": model.config}, path)
        return path

    return write
