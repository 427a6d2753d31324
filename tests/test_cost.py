"""Cost instruments and the bench suites: analytic formulas against FlopCounterMode, memory that sees the N x N
matrix, backend detection, OOM and unavailable kernels as results, and the CLI writing JSON (no timing asserts)."""

import json

import pytest
import torch

from anncore import APNB, NonLocal2d
from anncore.__main__ import main
from anncore.analysis.bench import (
    PAPER_CLAIM,
    BenchConfig,
    Variant,
    format_ratios,
    load_documents,
    paper_ratios,
    parse_size,
    results_frame,
    run_suite,
)
from anncore.analysis.cost import (
    Cost,
    attention_backend,
    attention_flops,
    attention_matrix_bytes,
    flop_counter,
    measure,
)
from anncore.nn.attention import attention


def qkv(n, s, ck, cv, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, n, ck, generator=g),
        torch.randn(batch, s, ck, generator=g),
        torch.randn(batch, s, cv, generator=g),
    )


def counted(impl, q, k, v):
    with flop_counter() as fc:
        attention(q, k, v, impl)
    return fc.get_total_flops()


@pytest.mark.parametrize("n,s,ck,cv", [(35, 110, 16, 16), (64, 64, 8, 24), (1, 3, 4, 4)])
def test_attention_flops_match_flop_counter_on_the_naive_path(n, s, ck, cv):
    assert counted("naive", *qkv(n, s, ck, cv)) == attention_flops(2, n, s, ck, cv)


@pytest.mark.parametrize("impl", ["sdpa", "math", "flash"])
def test_fused_implementations_count_the_same_flops(impl):
    q, k, v = qkv(50, 110, 16, 16)
    assert counted(impl, q, k, v) == counted("naive", q, k, v) == attention_flops(2, 50, 110, 16, 16)


def test_paper_arithmetic():
    # 128x256: N = 2**15; NL core 2*N*N*(256+256) = 2**40 FLOP (1.10 TFLOP); fp32 score matrix 4 GiB (reference §6)
    n = 128 * 256
    assert attention_flops(1, n, n, 256, 256) == 2**40
    assert attention_matrix_bytes(1, n, n) == 4 * 2**30
    assert attention_matrix_bytes(1, n, 110, torch.bfloat16) == n * 110 * 2
    assert attention_flops(1, n, 110, 256, 256) == 2 * n * 110 * 512
    with pytest.raises(ValueError, match="key_channels"):
        attention_flops(1, n, n, 0, 256)


def test_backend_detection_from_op_names():
    assert attention_backend(["aten::conv2d", "aten::_scaled_dot_product_flash_attention_for_cpu"]) == "flash"
    assert attention_backend(["aten::_scaled_dot_product_efficient_attention", "aten::softmax"]) == "efficient"
    assert attention_backend(["aten::_scaled_dot_product_cudnn_attention"]) == "cudnn"
    assert attention_backend(["aten::_scaled_dot_product_attention_math", "aten::_softmax"]) == "math"
    assert attention_backend(["aten::bmm", "aten::softmax"]) == "naive"
    assert attention_backend(["aten::add"]) is None


@pytest.mark.parametrize("impl,backend", [("naive", "naive"), ("math", "math"), ("flash", "flash")])
def test_measure_reports_backend_flops_and_the_score_matrix_in_memory(impl, backend):
    q, k, v = qkv(2048, 2048, 8, 8, batch=1)
    cost = measure(lambda *t: attention(*t, impl)[0], q, k, v, warmup=1, repeats=2)
    assert cost.status == "ok" and cost.backend == backend
    assert cost.flops == attention_flops(1, 2048, 2048, 8, 8)
    assert len(cost.times_ms) == 2 and cost.time_ms is not None
    scores = attention_matrix_bytes(1, 2048, 2048)
    if impl == "flash":  # the fused kernel never stores the 16 MiB score matrix
        assert 0 < cost.peak_bytes < scores / 4
    else:
        assert cost.peak_bytes >= scores


@pytest.mark.parametrize("block", [NonLocal2d, APNB])
def test_measure_forward_backward_counts_the_backward_kernels_and_drops_grads(block):
    torch.manual_seed(0)
    module = block(16, 16, 8, 8, attn_implementation="flash").train()
    x = torch.randn(1, 16, 6, 6, requires_grad=True)
    forward = measure(module, x.detach(), warmup=0, repeats=1)
    both = measure(module, x, backward=True, warmup=1, repeats=1)
    assert both.flops > 2 * forward.flops
    assert "aten._scaled_dot_product_flash_attention_for_cpu_backward" in both.flops_by_op
    assert x.grad is None and all(p.grad is None for p in module.parameters())
    assert both.as_dict()["time_ms"] == both.time_ms


def test_out_of_memory_is_a_result_and_other_errors_propagate():
    x = torch.ones(1)
    assert measure(lambda t: torch.empty(2**62, dtype=torch.uint8), x, repeats=1).status == "oom"

    def cuda_oom(t):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    cost = measure(cuda_oom, x, repeats=1)
    assert cost.status == "oom" and "8.00 GiB" in cost.note
    with pytest.raises(RuntimeError, match="boom"):
        measure(lambda t: (_ for _ in ()).throw(RuntimeError("boom")), x, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda t: t, x, repeats=0)


def tiny(suite, **overrides):
    return BenchConfig.for_suite(suite, "cpu", quick=True, **overrides)


def test_sweep_records_unavailable_kernels_and_skips_sizes_after_oom(monkeypatch):
    config = tiny("sweep", sizes=["2x2", "4x4", "3x3"], modes=["forward"])
    config.variants = (Variant("nl", "efficient"), Variant("apnb", "naive"))
    real = measure

    def oom_above_4(fn, x, **kwargs):  # a fake out-of-memory for APNB above N = 4
        return (
            Cost(status="oom", note="fake") if isinstance(fn, APNB) and x[0, 0].numel() > 4 else real(fn, x, **kwargs)
        )

    monkeypatch.setattr("anncore.analysis.bench.measure", oom_above_4)
    (document,) = run_suite(config, progress=False)
    status = {(r["variant"], r["n"]): r["status"] for r in document["results"]}
    assert status == {
        ("nl-efficient", 4): "unavailable",  # no memory-efficient kernel on CPU: recorded, not raised
        ("nl-efficient", 9): "unavailable",
        ("nl-efficient", 16): "unavailable",
        ("apnb-naive", 4): "ok",
        ("apnb-naive", 9): "oom",
        ("apnb-naive", 16): "skipped",  # sizes run smallest first; larger ones are skipped after an OOM
    }


def test_cpu_guard_skips_a_score_matrix_larger_than_free_memory(monkeypatch):
    config = tiny("sweep", sizes=["8x8"], modes=["forward"])
    config.variants = (Variant("nl", "naive"), Variant("nl", "flash"))
    monkeypatch.setattr("anncore.analysis.bench.os.sysconf", lambda name: 1)
    (document,) = run_suite(config, progress=False)
    assert [r["status"] for r in document["results"]] == ["skipped", "ok"]


def test_paper_ratios_subtract_the_identity_block():
    def row(variant, ms, peak, params=0):
        where = {"variant": variant, "height": 128, "width": 256, "mode": "forward", "status": "ok", "backend": None}
        return where | {"time_ms": ms, "peak_bytes": peak, "param_bytes": params}

    results = [row("identity", 1.0, 0), row("nl-naive", 61.0, 270, 10), row("apnb-naive", 11.0, 0, 10)]
    results += [row("nl-sdpa", 21.0, 30, 10), row("apnb-sdpa", 11.0, 5, 5)]
    (ratio,) = paper_ratios(results)
    assert ratio["time_ratio_naive"] == 6.0 and ratio["memory_ratio_naive"] == 28.0
    assert ratio["time_ratio_fused"] == 2.0 and ratio["memory_ratio_fused"] == 4.0
    assert (ratio["paper_time_ratio"], ratio["paper_memory_ratio"]) == (PAPER_CLAIM["time_ratio"], 28.0)
    assert "6x / 28x" in format_ratios({"ratios": [ratio]})
    results[1] |= {"status": "oom"}
    assert paper_ratios(results)[0]["time_ratio_naive"] is None


def test_config_errors_name_the_parameter():
    assert parse_size("128x256") == (128, 256)
    with pytest.raises(ValueError, match="HxW"):
        parse_size("128")
    with pytest.raises(ValueError, match="suite must be one of"):
        BenchConfig.for_suite("fast", "cpu")
    with pytest.raises(ValueError, match="dtypes must be"):
        tiny("sweep", dtypes=["float64"])
    with pytest.raises(ValueError, match="repeats must be a positive int"):
        tiny("paper", repeats=0)
    with pytest.raises(ValueError, match="threads must be None"):
        tiny("paper", threads=0)


def test_threads_apply_to_the_run_only():
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    config = tiny("paper", sizes=["2x2"], threads=threads)
    config.variants = (Variant("identity"),)
    (document,) = run_suite(config, progress=False)
    assert document["env"]["cpu_threads"] == threads and torch.get_num_threads() == before


def test_bench_cli_writes_json(tmp_path, capsys):
    assert main(["bench", "--suite", "paper", "--quick", "--out", str(tmp_path)]) == 0
    assert main(["bench", "--suite", "sweep", "--quick", "--modes", "forward", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "NL / APNB under the official protocol" in out and "nl-math" in out
    paper, sweep = (json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json")))
    assert sorted(p.name.split("-")[:4] for p in tmp_path.glob("*.json")) == [
        ["paper", "quick", "cpu", "float32"],
        ["sweep", "quick", "cpu", "float32"],
    ]
    for document in (paper, sweep):
        env = document["env"]
        assert {"torch", "cuda", "cudnn", "device_name", "tf32_matmul", "tf32_cudnn"} <= env.keys()
        assert document["dtype"] == "float32" and "profiler" in document["memory_method"]
        assert all(r["status"] in ("ok", "unavailable") for r in document["results"])
    assert {r["backend"] for r in paper["results"]} == {None, "naive", "flash"}
    assert len(paper["ratios"]) == 2 and all(r["time_ratio_naive"] is not None for r in paper["ratios"])
    by_variant = {r["variant"]: r for r in sweep["results"]}
    assert by_variant["nl-cudnn"]["status"] == "unavailable" and by_variant["nl-math"]["backend"] == "math"
    frame = results_frame(load_documents(tmp_path))
    assert set(frame["suite"]) == {"paper", "sweep"} and (frame["peak_mib"] >= 0).any()
