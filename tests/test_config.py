"""Training settings: the official defaults, the shipped params files, YAML then flags, errors naming the key."""

from pathlib import Path

import pytest

from anncore.engine.config import ConfigError, TrainConfig, build_parser, load_config
from anncore.engine.losses import CITYSCAPES_CLASS_WEIGHTS

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_official_recipe_and_the_params_files_load():
    c = TrainConfig()
    official = (c.lr, c.momentum, c.weight_decay, c.poly_power, c.aux_weight, c.ohem, c.ohem_thresh, c.ohem_min_kept)
    assert official == (0.01, 0.9, 5e-4, 0.9, 0.4, True, 0.7, 100_000)
    assert (c.iters, c.batch_size, c.crop, c.backbone, c.head) == (60_000, 8, (769, 769), "resnet101", "ann")
    r101 = load_config(REPO / "params" / "cityscapes_r101.yaml")
    assert r101.class_weights == list(CITYSCAPES_CLASS_WEIGHTS) and r101.pretrained == "imagenet"
    course = load_config(REPO / "params" / "course_model.yaml")  # the synthetic CPU recipe (its header says why)
    assert (course.backbone, course.optimizer, course.scale_range, course.data_root) == (
        "small",
        "adam",
        (1.0, 1.0),
        "synthetic",
    )
    assert (c.optimizer, c.scale_range, c.warmup_iters) == ("sgd", (0.5, 2.0), 0)  # official


def test_yaml_then_flags_and_errors_naming_the_key(tmp_path):
    (tmp_path / "c.yaml").write_text("iters: 7\ncrop: [64, 128]\nlr: 1\npretrained: none\nhead: nl\n")
    args = vars(build_parser().parse_args(["--config", str(tmp_path / "c.yaml"), "--head", "fcn", "--no-ohem"]))
    config = load_config(args.pop("config"), **args)
    assert (config.iters, config.crop, config.lr, config.pretrained) == (7, (64, 128), 1.0, None)
    assert (config.head, config.ohem) == ("fcn", False)  # the flags win
    (tmp_path / "bad.yaml").write_text("iters: 7\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config keys \['learning_rate'\]"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="iters must be int, got str 'ten'"):
        TrainConfig(iters="ten")
    with pytest.raises(ConfigError, match=r"crop must be a list of 2 ints"):
        TrainConfig(crop=[1, 2, 3])
    with pytest.raises(ConfigError, match=r"class_weights\[1\] must be float"):
        TrainConfig(class_weights=[1.0, "x"])
    with pytest.raises(ConfigError, match="head must be one of"):
        TrainConfig(head="psp")
    with pytest.raises(ConfigError, match="batch_size must be > 0"):
        TrainConfig(batch_size=0)


def test_pool_sizes_from_flags_and_yaml_reach_the_model_and_bad_ones_are_refused(tmp_path):
    from anncore.engine.train import build_model

    args = vars(
        build_parser().parse_args(["--backbone", "small", "--head", "apnb", "--pool-sizes", "1", "2", "3", "6"])
    )
    args.pop("config")
    assert build_model(load_config(**args)).head.apnb.attention.pool_sizes == (1, 2, 3, 6)
    assert build_model(load_config(backbone="small")).head.apnb.attention.pool_sizes == (1, 3, 6, 8)  # the paper's
    (tmp_path / "c.yaml").write_text("pool_sizes: [2, 4]\n")
    assert load_config(tmp_path / "c.yaml").pool_sizes == [2, 4]
    for bad in ([], [0, 3], [3, -1]):
        with pytest.raises(ConfigError, match="pool_sizes must be a non-empty sequence of positive ints"):
            TrainConfig(pool_sizes=bad)
