"""The explorer bench suite (``python -m anncore bench --suite explorer``): the document it writes and what it
refuses, at --quick size. No assertion on speed: the 100 ms target is judged from the committed full-size run."""

import json
import math
import sys

import pytest
import torch

from anncore.__main__ import main
from anncore.analysis.bench import BenchConfig, run_suite
from anncore.analysis.probe import capture_attention
from anncore.course.explorer_bench import (
    EXPLORER_MODEL,
    EXPLORER_TARGET_MS,
    StandInANN,
    explorer_sample,
    explorer_widths,
    format_explorer,
    query_cells,
    run_explorer,
)
from anncore.errors import BadInput
from anncore.models.heads import HEAD_WIDTHS

pytest.importorskip("ipywidgets")  # the suite needs the course extra (the missing-extra test below fakes its absence)


def strict_json(text: str) -> dict:
    """``text`` parsed as strict JSON: NaN and Infinity tokens are an error."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One ``bench --suite explorer --quick`` through the command line: ``(path, document)``."""
    out = tmp_path_factory.mktemp("explorer")
    assert main(["bench", "--suite", "explorer", "--quick", "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    return path, strict_json(path.read_text())


def expected_blocks(config: BenchConfig) -> list[str]:
    """The blocks the quick model has (captured independently of the suite), then their "without pyramid" views."""
    torch.manual_seed(config.seed)
    model = StandInANN(config.channels, explorer_widths(config))
    image, _ = explorer_sample(*config.sizes[0], seed=config.seed)
    _, blocks = capture_attention(model, image[None])
    return [*blocks, *(f"{name} without pyramid" for name, b in blocks.items() if b.pool_sizes is not None)]


def test_the_cli_writes_one_strict_document_with_the_run_conditions(written):
    path, document = written
    assert path.name.startswith("explorer-quick-cpu-float32-")
    assert document["suite"] == "explorer" and document["quick"] is True and document["device"] == "cpu"
    assert document["threads"] == 1 and document["torch"] == torch.__version__ and document["batch"] == 1
    assert document["target_ms"] == EXPLORER_TARGET_MS == 100
    assert "stand-in backbone" in document["model"] and "scaled-down" in document["model"]
    assert document["sizes"] == [[128, 256]] and document["without_pyramid"] is True
    env = document["env"]
    assert {"torch", "device", "device_name", "cpu_threads", "load_average_1m"} <= env.keys()
    for key in ("load_average_before", "load_average_after"):
        assert len(document[key]) == 3 and all(math.isfinite(v) and v >= 0 for v in document[key])
    assert "time_step" in document["time_method"] and document["target_on"]
    (result,) = document["results"]
    assert (result["height"], result["width"], result["feature_size"]) == (128, 256, [16, 32])
    assert positive(result["load_ms"]) and positive(result["load_first_view_ms"])
    assert document["meets_target"] is result["meets_target"] is all(b["meets_target"] for b in result["blocks"])


def test_every_captured_block_is_reported_with_finite_positive_times(written):
    _, document = written
    config = BenchConfig.for_suite("explorer", "cpu", quick=True)
    (result,) = document["results"]
    blocks = result["blocks"]
    names = ["AFNB", "APNB", "AFNB without pyramid", "APNB without pyramid"]
    assert [b["block"] for b in blocks] == expected_blocks(config) == names
    assert result["first_block"] == "AFNB"
    assert [b["projections_at_load"] for b in blocks] == [True, False, False, False]
    for b in blocks:
        assert b["query_size"] == [16, 32] and b["key_size"] == [16, 32]
        assert b["keys"] == (512 if b["block"].endswith("without pyramid") else 110)
        cells = [tuple(cell) for cell in b["cells"]]
        assert len(set(cells)) == len(cells) == config.repeats and all(0 <= r < 16 and 0 <= c < 32 for r, c in cells)
        assert cells == query_cells((16, 32), config.repeats, config.seed)
        assert positive(b["first_move_select_ms"]) and positive(b["first_move_widget_ms"])
        assert b["moves"] == config.repeats - 1
        for figure in ("select_ms", "widget_ms"):
            times = b[figure]
            assert len(times["all"]) == b["moves"] and all(positive(t) for t in times["all"])
            assert positive(times["median"]) and times["median"] <= times["max"] == max(times["all"])
        assert positive(b["png_bytes"]) and isinstance(b["meets_target"], bool)
        assert b["meets_target"] is (b["select_ms"]["median"] <= EXPLORER_TARGET_MS)
    table = format_explorer(document)
    assert "explorer suite" in table and all(b["block"] in table for b in blocks)


def test_without_pyramid_false_times_only_the_captured_blocks():
    config = BenchConfig.for_suite("explorer", "cpu", quick=True, without_pyramid=False, repeats=2)
    threads = torch.get_num_threads()
    (document,) = run_explorer(config, progress=False)
    assert torch.get_num_threads() == threads
    assert [b["block"] for b in document["results"][0]["blocks"]] == ["AFNB", "APNB"]
    assert all(b["moves"] == 1 for b in document["results"][0]["blocks"])


def test_defaults_are_the_resnet101_head_at_full_cityscapes_resolution():
    config = BenchConfig.for_suite("explorer", "cpu")
    assert config.sizes == ((1024, 2048),) and config.repeats == 20 and config.warmup == 0
    assert (config.channels, config.kv_channels) == (2048, 256)
    assert explorer_widths(config) == HEAD_WIDTHS["resnet101"]
    with torch.device("meta"):
        model = StandInANN(config.channels, explorer_widths(config))
    assert model.backbone.low_channels == 1024 and model.backbone.high_channels == 2048
    assert model.head.afnb is not None and model.head.apnb is not None
    assert EXPLORER_MODEL == "stand-in backbone (avg-pool /8 + 1x1 convs) + the ResNet-101 ANN head"
    assert BenchConfig.for_suite("explorer", "cpu", quick=True).sizes == ((128, 256),)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sizes": ["100x200"]}, "multiples of 8"),
        ({"sizes": ["64x64"], "repeats": 65}, "fewer query cells"),
        ({"dtypes": ["bfloat16"]}, "dtypes"),
        ({"modes": ["forward+backward"]}, "modes"),
        ({"memory_format": "channels_last"}, "memory_format"),
        ({"warmup": 1}, "no warm-up"),
        ({"repeats": 1}, "repeats >= 2"),
        ({"channels": 30}, "multiple of 4"),
    ],
)
def test_settings_the_suite_cannot_measure_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        BenchConfig.for_suite("explorer", "cpu", quick=True, **overrides)


def test_without_the_course_extra_the_suite_names_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # `import ipywidgets` now fails as if not installed
    for module in ("anncore.course.widgets", "anncore.course.explorer_bench"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["bench", "--suite", "explorer", "--quick", "--out", str(tmp_path)]) == 2
    assert "pip install 'anncore[course]'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_the_analysis_layer_refuses_the_explorer_suite():
    """The explorer suite times a course widget, so the analysis layer's runner does not reach up for it."""
    with pytest.raises(BadInput, match="explorer_bench"):
        run_suite(BenchConfig.for_suite("explorer", "cpu", quick=True), progress=False)
