"""The one data-root rule: the given root, else $CITYSCAPES_DATASET, else the synthetic set; relative to the working
directory; generated sets under $ANNCORE_DATA (which conftest.py points at a temporary folder for every test)."""

from pathlib import Path

import pytest

from anncore.data.root import (
    DATA_HOME_VARIABLE,
    SyntheticSet,
    generated_home,
    is_synthetic,
    resolve_data_root,
    synthetic_set_of,
)
from anncore.data.synthetic import MANIFEST
from anncore.engine.config import TrainConfig, data_root_of

TINY = SyntheticSet(train=2, val=1, height=32, width=64)


def test_the_given_root_wins_and_relative_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root("relative/cs") == tmp_path / "relative" / "cs"
    assert resolve_data_root("") == resolve_data_root(None) == tmp_path / "env"


def test_without_a_root_or_the_variable_the_synthetic_set_is_written_under_the_data_home(tmp_path, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    monkeypatch.setenv(DATA_HOME_VARIABLE, str(tmp_path / "home"))
    assert generated_home() == tmp_path / "home"
    root = resolve_data_root(None, TINY)
    assert root == tmp_path / "home" / "synthetic_cityscapes_32x64_2+1_seed0" and (root / MANIFEST).is_file()
    assert SyntheticSet().root == tmp_path / "home" / "synthetic_cityscapes"  # the default set's short name
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "env"))
    assert resolve_data_root("synthetic", TINY) == root  # the word asks for the synthetic set over the variable


def test_the_package_never_writes_data_into_the_checkout_under_test():
    home = generated_home()
    assert DATA_HOME_VARIABLE and home != Path(__file__).resolve().parents[1] / "data" / "generated", home


def test_training_configs_and_checkpoints_follow_the_same_rule(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_VARIABLE, str(tmp_path))
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    config = TrainConfig(data_root="synthetic", synthetic_size=[32, 64], synthetic_scenes=[2, 1])
    assert synthetic_set_of({"synthetic_size": [32, 64], "synthetic_scenes": [2, 1]}) == TINY
    assert data_root_of(config) == TINY.root
    assert data_root_of(TrainConfig(data_root=str(tmp_path / "cs"))) == tmp_path / "cs"
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "env"))
    assert data_root_of(TrainConfig()) == tmp_path / "env"  # train honours the variable, as evaluate does


@pytest.mark.parametrize("settings", [{}, {"synthetic_size": [64, 128]}])
def test_a_config_without_synthetic_keys_reads_the_defaults(settings):
    expected = SyntheticSet(height=64, width=128) if settings else SyntheticSet()
    assert synthetic_set_of(settings) == expected


def test_is_synthetic(tmp_path):
    root = resolve_data_root("synthetic", SyntheticSet(train=1, val=1, height=32, width=64))
    assert is_synthetic(root) and not is_synthetic(tmp_path)
