"""The benchmark suites behind ``python -m anncore bench`` (instruments in :mod:`anncore.analysis.cost`).

Size (~550 lines): one settings class checks every suite's settings, and the two suites share their variants, their
documents and their tables; the explorer suite, which times a course widget, is
:mod:`anncore.course.explorer_bench`.

``paper``
    The official ``efficiency_statics/totaltime_test.py`` protocol (paper abstract): the attention branch
    alone (its ``_SelfAttentionBlock``, here :class:`~anncore.nn.blocks.SelfAttention2d`, without the fusion conv) on
    ``1x2048xHxW`` for 96x96, 128x128 and 128x256; APNB(2048, 2048, 256, 256) against the base-OC non-local block
    with the same channels; fp32, ``eval()``, ``no_grad``; time and memory of an identity block subtracted; memory
    counts the weights, as ``max_memory_allocated`` did there. The non-local block runs the paper's naive
    implementation and, beyond the paper, PyTorch's fused SDPA. Deliberate deviations: time is the median of
    ``repeats`` calls after ``warmup`` (official: the mean of 20 calls, the first included); the query is projected
    once, as everywhere in :mod:`anncore.nn.blocks` (official: ``f_query`` and ``f_key`` run separately, one more
    2048->256 conv per block).
``sweep``
    ``N = H*W`` from small to as large as fits for the :class:`~anncore.nn.blocks.NonLocal2d` and
    :class:`~anncore.nn.blocks.APNB` blocks (the network's 512 channels by default): naive and fused non-local, each
    SDPA backend forced in turn (flash, efficient, cudnn, math), naive and fused APNB; forward and
    forward+backward; one run per dtype. A forced backend that cannot run is recorded ``unavailable``; an
    out-of-memory size is recorded ``oom`` and the variant's larger sizes ``skipped``.
``explorer``
    Whether :class:`anncore.course.widgets.AttentionExplorer` stays responsive at full Cityscapes resolution (default
    one 1024x2048 image; ``sizes`` are image sizes here): the real explorer on the real ResNet-101 ANN head
    (:class:`~anncore.models.heads.ANNHead`) fed by a stand-in backbone (:class:`StandInBackbone`: average pooling
    by 8 and fixed random 1x1 convs to layer3 and layer4 widths), so that no ResNet-101 forward at 1024x2048 is needed.
    Timed: opening the explorer on the image (one forward, the capture, the prediction and the first view) and, per
    captured block (AFNB, APNB and their "without pyramid" non-local views), ``repeats`` slider moves to distinct
    query cells (:meth:`~anncore.course.widgets.AttentionExplorer.select`), as the whole call and as the widget's own
    ``last_update_ms``. The first move of a block pays its projections and is reported apart; the target
    (:data:`EXPLORER_TARGET_MS`) is on the median of the others. Needs the ``course`` extra (ipywidgets).

Each run (one suite, one dtype) is a JSON document with the environment, the protocol and every figure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

import torch
from torch import nn
from tqdm import tqdm

from anncore.analysis.cost import (
    MAX_TIMED_CALLS,
    Cost,
    attention_flops,
    attention_matrix_bytes,
    measure,
    memory_method,
)
from anncore.analysis.environment import environment_report
from anncore.device import pick_device
from anncore.errors import BadInput
from anncore.files import utc_stamp, write_json
from anncore.nn.attention import SDPA_BACKENDS, AttnImplementation
from anncore.nn.blocks import APNB, NonLocal2d, SelfAttention2d
from anncore.nn.pyramid import DEFAULT_POOL_SIZES, num_anchors

if TYPE_CHECKING:  # pandas is a `course` extra; `python -m anncore bench` runs without it
    import pandas as pd

SUITES = ("paper", "sweep", "explorer")
MODES = ("forward", "forward+backward")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}

PAPER_SIZES = ((96, 96), (128, 128), (128, 256))
EXPLORER_SIZES = ((1024, 2048),)  # image sizes: full Cityscapes resolution
EXPLORER_MOVES = 20  # query cells per block, the first one (which pays the block's projections) included
EXPLORER_STRIDE = 8  # the dilated ResNet's output stride, which the stand-in backbone reproduces
EXPLORER_NEEDS = "the explorer suite needs the course extra: pip install 'anncore[course]'"
PAPER_CLAIM = {
    "size": [128, 256],
    "time_ratio": 6.0,
    "memory_ratio": 28.0,
    "source": "abstract: 'for a 256x128 input, APNB is around 6 times faster than a non-local block on GPU while "
    "28 times smaller in GPU running memory occupation'",
}


class _SweepDefaults(TypedDict):
    sizes: tuple[tuple[int, int], ...]
    repeats: int
    halves: bool


class _Quick(TypedDict):
    sizes: tuple[tuple[int, int], ...]
    channels: int
    kv_channels: int
    warmup: int
    repeats: int
    min_seconds: float
    threads: int


# Sweep defaults per device class: sizes (N from 64 up; the GPU list runs past where the naive non-local block runs
# out of memory), timed repeats, and dtypes (bf16 runs on CPU too, but slowly without AMX: opt in with --dtypes).
SWEEP_DEFAULTS: dict[str, _SweepDefaults] = {
    "cpu": {"sizes": ((8, 8), (16, 16), (32, 32), (48, 48), (64, 64)), "repeats": 5, "halves": False},
    "gpu": {
        "sizes": ((32, 32), (64, 64), (96, 96), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)),
        "repeats": 10,
        "halves": True,
    },
}
# --quick: tiny and single-threaded, so that it takes seconds even on a busy CI machine.
QUICK: _Quick = {
    "sizes": ((4, 4), (8, 8)),
    "channels": 32,
    "kv_channels": 16,
    "warmup": 1,
    "repeats": 2,
    "min_seconds": 0.0,
    "threads": 1,
}


class _ExplorerQuick(TypedDict):
    sizes: tuple[tuple[int, int], ...]
    warmup: int
    repeats: int


# --quick for the explorer suite, on top of QUICK (whose channels it keeps): one small image, a few moves per block
EXPLORER_QUICK: _ExplorerQuick = {"sizes": ((128, 256),), "warmup": 0, "repeats": 6}


@dataclass(frozen=True)
class Variant:
    """One measured unit: ``kind`` is ``identity``, ``nl`` or ``apnb``; ``attn_implementation`` how it attends."""

    kind: str
    attn_implementation: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.attn_implementation}" if self.attn_implementation else self.kind

    @property
    def forced(self) -> bool:
        """A forced SDPA backend, which raises where it cannot run (recorded ``unavailable``)."""
        return self.attn_implementation in SDPA_BACKENDS


PAPER_VARIANTS: tuple[Variant, ...] = (Variant("identity"), Variant("nl", "naive"), Variant("apnb", "naive"))
PAPER_VARIANTS += (Variant("nl", "sdpa"), Variant("apnb", "sdpa"))
SWEEP_VARIANTS: tuple[Variant, ...] = (Variant("nl", "naive"), Variant("nl", "sdpa"))
SWEEP_VARIANTS += tuple(Variant("nl", name) for name in SDPA_BACKENDS)
SWEEP_VARIANTS += (Variant("apnb", "naive"), Variant("apnb", "sdpa"))


def parse_size(text: str) -> tuple[int, int]:
    """``"128x256"`` -> ``(128, 256)`` (height x width of the feature map)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"size must be HxW with positive ints, e.g. 128x256; got {text!r}")
    return int(match[1]), int(match[2])


def dtype_supported(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether a small matmul runs in ``dtype`` on ``device`` (bf16 needs Ampere or newer on CUDA)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return torch.cuda.is_bf16_supported()
    try:
        torch.ones(2, 2, dtype=dtype, device=device) @ torch.ones(2, 2, dtype=dtype, device=device)
    except (RuntimeError, TypeError):
        return False
    return True


@dataclass
class BenchConfig:
    """Everything one ``bench`` invocation measures; :meth:`for_suite` fills the suite's defaults."""

    suite: str
    device: torch.device
    sizes: tuple[tuple[int, int], ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    channels: int
    kv_channels: int
    memory_format: str
    warmup: int
    repeats: int
    min_seconds: float = 0.25
    threads: int | None = None
    batch: int = 1
    seed: int = 0
    quick: bool = False
    variants: tuple[Variant, ...] = ()
    without_pyramid: bool = True  # explorer suite: also time the "without pyramid" non-local views

    @classmethod
    def for_suite(
        cls, suite: str, device: str | torch.device = "auto", quick: bool = False, **overrides: object
    ) -> BenchConfig:
        """The suite's defaults on ``device`` (``--quick``: tiny sizes and channels), then ``overrides`` that are
        not ``None`` (``sizes`` may be ``"HxW"`` strings)."""
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
        dev = pick_device(device)
        if suite == "paper":
            config = cls(suite, dev, PAPER_SIZES, ("float32",), ("forward",), 2048, 256, "contiguous", 2, 20)
            config.variants = PAPER_VARIANTS
        elif suite == "explorer":  # channels: layer4's (layer3 has half); no warm-up: the first move is apart
            config = cls(suite, dev, EXPLORER_SIZES, ("float32",), ("forward",), 2048, 256, "contiguous", 0, 0)
            config = replace(config, repeats=EXPLORER_MOVES, min_seconds=0.0)
        else:
            defaults = SWEEP_DEFAULTS["cpu" if dev.type == "cpu" else "gpu"]
            halves = ("bfloat16",) if defaults["halves"] and dtype_supported(torch.bfloat16, dev) else ()
            sizes, repeats = defaults["sizes"], defaults["repeats"]
            config = cls(suite, dev, sizes, ("float32", *halves), MODES, 512, 256, "channels_last", 2, repeats)
            config.variants = SWEEP_VARIANTS
        if quick:
            config = replace(config, quick=True, **QUICK)
            if suite == "explorer":
                config = replace(config, **EXPLORER_QUICK)
        given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
        if "sizes" in given:
            given["sizes"] = tuple(parse_size(s) if isinstance(s, str) else tuple(s) for s in given["sizes"])
        fields: dict[str, Any] = {key: tuple(v) if isinstance(v, list) else v for key, v in given.items()}
        return replace(config, **fields).checked()

    def checked(self) -> BenchConfig:
        """Validate every field; errors name the field and the expected values."""
        for name, allowed, values in (
            ("dtypes", tuple(DTYPES), self.dtypes),
            ("modes", MODES, self.modes),
            ("memory_format", tuple(MEMORY_FORMATS), (self.memory_format,)),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name} must be one or more of {allowed}, got {values!r}")
        for name in ("channels", "kv_channels", "repeats", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None (torch's default) or a positive int, got {self.threads!r}")
        if self.warmup < 0 or self.min_seconds < 0:
            raise ValueError(f"warmup and min_seconds must be >= 0, got {self.warmup!r} and {self.min_seconds!r}")
        if not self.sizes:
            raise ValueError("sizes must name at least one HxW size")
        if self.suite == "explorer":
            self._check_explorer()
        self.sizes = tuple(sorted(self.sizes, key=lambda hw: (hw[0] * hw[1], hw)))
        return self

    def _check_explorer(self) -> None:
        """What the explorer suite can run: float32 forwards of one image, sizes multiples of the stride 8 with at
        least ``repeats`` query cells, layer4 channels a multiple of 4 (layer3 has half, the head a quarter)."""
        fixed = {"dtypes": ("float32",), "modes": ("forward",), "memory_format": "contiguous", "batch": 1}
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(f"the explorer suite measures {name}={value!r} only, got {getattr(self, name)!r}")
        if self.warmup != 0:
            raise ValueError(f"the explorer suite has no warm-up (its first move is reported apart), got {self.warmup}")
        if self.repeats < 2:
            raise ValueError(
                f"the explorer suite needs repeats >= 2 moves per block (the first is apart), got {self.repeats}"
            )
        if self.channels % 4:
            raise ValueError(f"explorer channels (layer4's) must be a multiple of 4, got {self.channels}")
        for h, w in self.sizes:
            if h % EXPLORER_STRIDE or w % EXPLORER_STRIDE or h < 64 or w < 64:
                raise ValueError(f"explorer image sizes must be multiples of 8, at least 64x64, got {h}x{w}")
            if (h // EXPLORER_STRIDE) * (w // EXPLORER_STRIDE) < self.repeats:
                raise ValueError(f"a {h}x{w} image has fewer query cells than repeats={self.repeats} distinct moves")


def _unit(variant: Variant, config: BenchConfig) -> nn.Module:
    """The measured module: the bare attention branch for the paper suite, the full block for the sweep."""
    c, kv = config.channels, config.kv_channels
    if variant.kind == "identity":
        return nn.Identity()
    impl = cast(AttnImplementation, variant.attn_implementation)  # one of the names of SWEEP/PAPER_VARIANTS
    if config.suite == "paper":
        pools = DEFAULT_POOL_SIZES if variant.kind == "apnb" else None
        return SelfAttention2d(c, c, kv, kv, c, pools, True, impl)
    block = APNB if variant.kind == "apnb" else NonLocal2d
    return block(c, c, kv, kv, 0.05, attn_implementation=impl)


def _host_shortfall(variant: Variant, n: int, config: BenchConfig, backward: bool) -> str:
    """On CPU, why a naive/math non-local run would exhaust host memory, else ``""``. Linux overcommits, so the
    OOM killer would end the whole process instead of raising; the score matrices (fp32, two live forward, about
    four with backward) are checked against free memory first."""
    if (
        config.device.type != "cpu"
        or variant.kind != "nl"
        or variant.attn_implementation not in ("naive", "math", "sdpa")
    ):
        return ""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return ""
    need = (4 if backward else 2) * attention_matrix_bytes(config.batch, n, n, torch.float32)
    if need <= 0.8 * free:
        return ""
    return f"the N x N score matrices need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB of host memory free"


def _measure_one(variant: Variant, hw: tuple[int, int], dtype: str, mode: str, config: BenchConfig) -> Cost:
    backward = mode == "forward+backward"
    n = hw[0] * hw[1]
    shortfall = _host_shortfall(variant, n, config, backward)
    if shortfall:
        return Cost(status="skipped", note=shortfall)
    torch.manual_seed(config.seed)
    fmt = MEMORY_FORMATS[config.memory_format]
    # Module.to accepts device, dtype and memory_format together at runtime; torch's overloads only list them apart
    module = _unit(variant, config).to(config.device, DTYPES[dtype], memory_format=fmt)  # type: ignore[call-overload]
    module = module.train(backward)
    x = torch.randn(config.batch, config.channels, *hw, device=config.device, dtype=DTYPES[dtype])
    x = x.contiguous(memory_format=fmt).requires_grad_(backward)
    inputs = (x, x) if isinstance(module, SelfAttention2d) else (x,)
    try:
        return measure(
            module,
            *inputs,
            backward=backward,
            warmup=config.warmup,
            repeats=config.repeats,
            min_seconds=config.min_seconds,
        )
    except RuntimeError as err:
        if not variant.forced:
            raise
        return Cost(status="unavailable", note=str(err).splitlines()[0][:300])


def _record(variant: Variant, hw: tuple[int, int], dtype: str, mode: str, config: BenchConfig, cost: Cost) -> dict:
    """One result row: the measurement plus the analytic attention FLOPs/bytes and the weights' bytes."""
    n = hw[0] * hw[1]
    row: dict[str, object] = {
        "variant": variant.name,
        "kind": variant.kind,
        "attn_implementation": variant.attn_implementation,
    }
    row |= {"height": hw[0], "width": hw[1], "n": n, "mode": mode}
    if variant.kind != "identity":
        s = n if variant.kind == "nl" else num_anchors(DEFAULT_POOL_SIZES)
        row["attention_flops"] = attention_flops(config.batch, n, s, config.kv_channels, config.kv_channels)
        row["attention_matrix_bytes"] = attention_matrix_bytes(config.batch, n, s, DTYPES[dtype])
    with torch.device("meta"):  # count the weights without allocating them
        params = sum(p.numel() for p in _unit(variant, config).parameters())
    row["param_bytes"] = params * torch.empty((), dtype=DTYPES[dtype]).element_size()
    return row | cost.as_dict()


def environment_of(device: torch.device) -> dict[str, object]:
    report = environment_report(device)
    report["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    report["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    report["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    report["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    report["load_average_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work skews time
    return report


def paper_ratios(results: Sequence[dict]) -> list[dict]:
    """NL / APNB time and memory ratios per size and mode under the official protocol: identity subtracted from
    both, memory = peak above baseline + weights (what ``max_memory_allocated`` saw there). ``naive`` is the
    paper's comparison; ``fused`` compares the two blocks on PyTorch's SDPA. ``None`` where a run did not finish."""
    table = {(r["height"], r["width"], r["mode"], r["variant"]): r for r in results}
    ratios = []
    for base in (r for r in results if r["variant"] == "identity"):
        h, w, mode = base["height"], base["width"], base["mode"]
        row: dict[str, object] = {"height": h, "width": w, "n": h * w, "mode": mode}
        for path in ("naive", "sdpa"):
            nl, apnb = table.get((h, w, mode, f"nl-{path}")), table.get((h, w, mode, f"apnb-{path}"))
            label = "naive" if path == "naive" else "fused"
            for metric in ("time", "memory"):
                row[f"{metric}_ratio_{label}"] = _ratio(nl, apnb, base, metric)
            row[f"nl_backend_{label}"] = nl["backend"] if nl else None
        claim = [h, w] == PAPER_CLAIM["size"] and mode == "forward"
        row["paper_time_ratio"] = PAPER_CLAIM["time_ratio"] if claim else None
        row["paper_memory_ratio"] = PAPER_CLAIM["memory_ratio"] if claim else None
        ratios.append(row)
    return ratios


def _protocol_figure(row: dict, base: dict, metric: str) -> float:
    if metric == "time":
        return row["time_ms"] - base["time_ms"]
    return row["peak_bytes"] + row["param_bytes"] - base["peak_bytes"] - base["param_bytes"]


def _ratio(nl: dict | None, apnb: dict | None, base: dict, metric: str) -> float | None:
    if nl is None or apnb is None or any(r["status"] != "ok" for r in (nl, apnb, base)):
        return None
    if metric == "memory" and any(r["peak_bytes"] is None for r in (nl, apnb, base)):
        return None
    denominator = _protocol_figure(apnb, base, metric)
    return _protocol_figure(nl, base, metric) / denominator if denominator > 0 else None


@contextmanager
def threads_of(config: BenchConfig) -> Iterator[None]:
    """With ``config.threads`` set, torch's CPU thread count is that number inside the block and restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_suite(config: BenchConfig, progress: bool = True) -> list[dict]:
    """Measure every variant x size x mode of the paper or sweep suite, one JSON-ready document per dtype (see the
    module docstring), under :func:`threads_of`. The explorer suite runs in
    :func:`anncore.course.explorer_bench.run_explorer`."""
    if config.suite == "explorer":
        raise BadInput("the explorer suite times the course's widget: run it with anncore.course.explorer_bench")
    with threads_of(config):
        return _run_suite(config, progress)


def _run_suite(config: BenchConfig, progress: bool) -> list[dict]:
    created = utc_stamp()
    env = environment_of(config.device)
    documents = []
    for dtype in config.dtypes:
        jobs = [(m, v, hw) for m in config.modes for v in config.variants for hw in config.sizes]
        results: list[dict] = []
        oom_at: dict[tuple[str, Variant], int] = {}  # (mode, variant) -> the N that ran out of memory
        bar = tqdm(jobs, desc=f"bench {config.suite} {dtype}", disable=None if progress else True, leave=False)
        for mode, variant, hw in bar:
            bar.set_postfix_str(f"{mode} {variant.name} {hw[0]}x{hw[1]}")
            if (mode, variant) in oom_at:
                cost = Cost(status="skipped", note=f"out of memory at the smaller N={oom_at[mode, variant]}")
            else:
                cost = _measure_one(variant, hw, dtype, mode, config)
                if cost.status == "oom":
                    oom_at[mode, variant] = hw[0] * hw[1]
            results.append(_record(variant, hw, dtype, mode, config, cost))
        document = _document(config, dtype, created, env, results)
        documents.append(document)
    return documents


def _document(config: BenchConfig, dtype: str, created: str, env: dict, results: list[dict]) -> dict:
    document: dict[str, object] = {"suite": config.suite, "quick": config.quick, "created": created}
    document |= {"device": str(config.device), "dtype": dtype, "memory_format": config.memory_format}
    document |= {"channels": config.channels, "kv_channels": config.kv_channels, "batch": config.batch}
    document |= {"sizes": [list(hw) for hw in config.sizes], "modes": list(config.modes), "seed": config.seed}
    document |= {"warmup": config.warmup, "repeats": config.repeats, "min_seconds": config.min_seconds}
    document["variants"] = [v.name for v in config.variants]
    document["unit"] = (
        "attention branch alone (official efficiency_statics _SelfAttentionBlock: SelfAttention2d)"
        if config.suite == "paper"
        else "full block (NonLocal2d / APNB, fusion conv included)"
    )
    document["env"] = env
    document["flop_method"] = "torch.utils.flop_counter.FlopCounterMode (+ CPU flash formulas), 2 FLOPs per MAC"
    document["memory_method"] = memory_method(config.device)
    document["time_method"] = (
        f"median of >= {config.repeats} calls (more, up to {MAX_TIMED_CALLS}, until {config.min_seconds} s) after "
        f"{config.warmup} warm-up calls, device-synchronised perf_counter"
    )
    document["results"] = results
    if config.suite == "paper":
        document["paper_claim"] = PAPER_CLAIM
        document["ratios"] = paper_ratios(results)
    return document


def result_path(out_dir: Path, document: dict) -> Path:
    """``<suite>[-quick]-<device>-<dtype>-<UTC timestamp>.json``; the device is ``cpu`` or ``cuda-<gpu name>``."""
    device = str(document["device"]).split(":")[0]
    if device != "cpu":
        device += "-" + re.sub(r"[^a-z0-9]+", "-", str(document["env"]["device_name"]).lower()).strip("-")
    quick = "-quick" if document["quick"] else ""
    return out_dir / f"{document['suite']}{quick}-{device}-{document['dtype']}-{document['created']}.json"


def write_documents(documents: Sequence[dict], out_dir: Path) -> list[Path]:
    """Write each run document as JSON under ``out_dir``; returns the paths."""
    return [write_json(document, result_path(out_dir, document)) for document in documents]


def load_documents(folder: Path, pattern: str = "*.json") -> list[dict]:
    """The run documents under ``folder`` whose file names match ``pattern`` (e.g. ``"sweep-*cuda*.json"``)."""
    return [json.loads(path.read_text()) for path in sorted(Path(folder).glob(pattern))]


_RENAMED = {"path": "attn_implementation"}


def results_frame(documents: Sequence[dict]) -> pd.DataFrame:
    """Every result row of ``documents`` as one table, with the run's suite, device, dtype, memory format and
    torch version on each row, and ``peak_mib``, ``gflop`` columns for plotting (needs pandas, a `course` extra)."""
    import pandas as pd

    rows = []
    for document in documents:
        env = document["env"]
        run = {"suite": document["suite"], "device": document["device"], "device_name": env["device_name"]}
        run |= {"dtype": document["dtype"], "memory_format": document["memory_format"], "torch": env["torch"]}
        # documents written before the name was unified call attn_implementation "path"
        rows += [run | {_RENAMED.get(k, k): v for k, v in row.items()} for row in document["results"]]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["peak_mib"] = frame["peak_bytes"] / 2**20
        frame["gflop"] = frame["flops"] / 1e9
    return frame


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_results(document: dict) -> str:
    """A readable table of every row of a run document (status instead of figures where a run did not finish)."""
    env = document["env"]
    lines = [
        f"{document['suite']} suite, {document['unit']}; {document['dtype']}, {document['memory_format']}, "
        f"C={document['channels']}, Ck=Cv={document['kv_channels']}, batch {document['batch']}",
        f"{env['device']} ({env['device_name']}), torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, "
        f"{env['cpu_threads']} CPU threads; {document['time_method']}",
        f"{'mode':<17}{'variant':<15}{'size':>9}{'N':>8}  {'status':<12}{'backend':<10}"
        f"{'GFLOP':>9}{'peak MiB':>10}{'ms':>10}",
    ]
    for r in document["results"]:
        flops = None if r["flops"] is None else r["flops"] / 1e9
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        lines.append(
            f"{r['mode']:<17}{r['variant']:<15}{r['height']:>4}x{r['width']:<4}{r['n']:>8}  {r['status']:<12}"
            f"{r['backend'] or '-':<10}{_fmt(flops, '.4g'):>9}{_fmt(peak, '.4g'):>10}{_fmt(r['time_ms'], '.4g'):>10}"
        )
    return "\n".join(lines)


def format_ratios(document: dict) -> str:
    """The paper-protocol table: NL / APNB time and memory ratios, naive and fused, next to the paper's."""
    lines = [
        "NL / APNB under the official protocol (identity subtracted; memory includes the weights)",
        f"{'size':<9}{'N':>7}{'mode':>9}  {'time naive':>10}{'fused':>8}  {'memory naive':>12}{'fused':>8}  paper",
    ]
    for r in document["ratios"]:
        paper = "-" if r["paper_time_ratio"] is None else f"{r['paper_time_ratio']:g}x / {r['paper_memory_ratio']:g}x"
        cells = [_fmt(r[key], ".2f") for key in ("time_ratio_naive", "time_ratio_fused")]
        cells += [_fmt(r[key], ".2f") for key in ("memory_ratio_naive", "memory_ratio_fused")]
        size = f"{r['height']}x{r['width']}"
        lines.append(
            f"{size:<9}{r['n']:>7}{r['mode'][:8]:>9}  {cells[0]:>10}{cells[1]:>8}  {cells[2]:>12}{cells[3]:>8}  {paper}"
        )
    return "\n".join(lines)
