"""The project's GPU measurements and checks in one unattended, time-boxed run on a CUDA machine with one GPU (the
sizes suit an H100 or H200: ``ann-train`` runs batch 8 at 769x769), from a checkout of the repository::

    python benchmarks/gpu_check.py --out DIR          # or: python -m anncore gpu-check --out DIR
    bash benchmarks/gpu_check.sh --out DIR            # the same without installing anncore (see below)

A harness, not library code: it lives beside the benchmark results it writes and uses the library's own
instruments (:func:`anncore.analysis.cost.time_step`, :func:`anncore.device.synchronize`,
:func:`anncore.device.peak_memory`, :func:`anncore.nn.attention.sdpa_backend_report`, the bench suites and the
training loop). It runs every step in one go within ``--budget-s`` (default 540 s), writes every result as strict
JSON into ``DIR``, and prints a one-screen summary. It needs anncore's core dependencies and no network. Steps, most
valuable first (:data:`STEPS`):

=================  ================================================================================================
``env``            GPU name, driver, torch / CUDA / cuDNN versions (:func:`anncore.analysis.environment.
                   environment_report`), the SDPA backends that run at Ck = Cv = 256 in fp32 and bf16, the
                   measured bf16 (and fp32) matmul peak at 8192^3 in TFLOP/s
``paper``          the paper protocol (``bench --suite paper``: 96x96, 128x128, 128x256, fp32, naive and fused):
                   NL / APNB time and memory ratios next to the paper's 6x / 28x at 128x256
``sweep``          the sweep suite in bf16, forward and forward+backward, size by size until its time is spent
``ann-inference``  ANN and the NL baseline on ResNet-101, one whole 1024x2048 image, bf16 autocast and fp32: images/s
                   and peak memory, next to mmsegmentation's V100 fp32 figures
``ann-train``      training steps of ANN R-101 at 769x769, batch 8 on one GPU, bf16 AMP and fp32: images/s, peak memory
``compile``        ``torch.compile`` of the ANN head on 1024x2048 features: speed-up over eager, max abs difference
``resume``         a short AMP run on the synthetic set, killed with SIGKILL after a checkpoint, resumed, compared
                   tensor by tensor with an uninterrupted run
``ddp``            ``torchrun --nproc_per_node=1 -m anncore train`` (NCCL), then NCCL, DDP and SyncBatchNorm's
                   synchronising kernels in a world-size-1 process group
``notebooks``      notebooks 00-04 through papermill on CUDA, into ``DIR/notebooks/`` (skipped, saying why, without
                   papermill / nbclient / ipykernel)
=================  ================================================================================================

Each step runs in its own subprocess (``python -m anncore gpu-check --step NAME``, which loads this file) under its
own time limit
(:data:`LIMITS_S`, scaled so that the total stays within ``--budget-s``; time a step leaves unused goes to the
steps after it), so a hung or slow step cannot eat the others. Its status is ``ok``, ``failed`` (with the one-line
error), ``timeout`` or ``skipped`` (with the reason), in ``DIR/<step>.json`` with its figures, and in
``DIR/summary.json``; its output is in ``DIR/logs/<step>.log``, the bench documents in ``DIR/bench/``. Training runs,
checkpoints and the synthetic set go to a temporary folder, deleted at the end, so ``DIR`` holds only results.

``--dry-run`` runs the same steps on the CPU at tiny sizes (the small backbone, 64x128 images, 2 timed
iterations, the ``--quick`` bench sizes, gloo instead of NCCL, notebook 00 alone with its defaults): it proves the
machinery in well under a minute and is what ``tests/test_gpu_check.py`` runs. Without ``--dry-run`` the check
needs CUDA.

To run it on a CUDA machine with torch but without anncore installed, from the repository root::

    make gpu-wheels  # once, where there is network: papermill, nbclient, ipykernel, nbformat wheels in .gpu-wheels/
    ANNCORE_WHEELS=.gpu-wheels bash benchmarks/gpu_check.sh --out DIR

``benchmarks/gpu_check.sh`` puts the repository on ``PYTHONPATH``, pip-installs the wheels of ``$ANNCORE_WHEELS``
(offline) into a temporary ``--target`` folder added to ``PYTHONPATH``, and runs this file with its arguments.
Without ``ANNCORE_WHEELS`` it installs nothing: where the ``course`` extra is installed, the notebooks step needs no
wheels. To keep a run's results, copy ``DIR`` to ``benchmarks/results/gpu-check-<stamp>/`` (``<stamp>`` as
:func:`anncore.files.utc_stamp` writes it, the one in ``summary.json``'s ``created``) and commit it there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from anncore.analysis.bench import PAPER_CLAIM, BenchConfig, result_path, run_suite, write_documents
from anncore.analysis.cost import attention_backend, time_step
from anncore.analysis.environment import environment_report
from anncore.device import peak_memory, reset_peak_memory, synchronize
from anncore.engine.config import TrainConfig, load_config, plain_config
from anncore.engine.losses import SegmentationLoss
from anncore.engine.train import amp_dtype, build_optimizer, train
from anncore.errors import BadInput
from anncore.files import utc_stamp, write_json
from anncore.models.backbone import UntrainedBackboneWarning
from anncore.models.checkpoint import load_checkpoint
from anncore.models.network import ANN
from anncore.nn.attention import attention, sdpa_backend_report
from anncore.outputs import output_lock

REPO = Path(__file__).resolve().parents[1]

#: The steps, in the order they run (most valuable first).
STEPS: tuple[str, ...] = (
    "env",
    "paper",
    "sweep",
    "ann-inference",
    "ann-train",
    "compile",
    "resume",
    "ddp",
    "notebooks",
)
#: Each step's time limit in seconds before scaling to the budget (:func:`step_limit`); they add up to 790.
LIMITS_S: dict[str, float] = {
    "env": 40,
    "paper": 90,
    "sweep": 120,
    "ann-inference": 90,
    "ann-train": 90,
    "compile": 90,
    "resume": 90,
    "ddp": 60,
    "notebooks": 120,
}
DEFAULT_BUDGET_S = 540.0
RESERVE_S = 5.0  # of the budget, kept for killing a step that ran out of time and writing the summary
MIN_LIMIT_S = 10.0  # a step that would get less than this (or than its own base limit, if smaller) is skipped
NO_CUDA = "gpu-check needs a CUDA device (found none); use --dry-run on a CPU"
STATUSES = ("ok", "failed", "timeout", "skipped")
STARTUP_S = 3.0  # a step process's start (Python, torch, CUDA) before it can look at its clock

#: mmsegmentation's figures for comparison (configs/ann/README.md and configs/nonlocal_net/README.md, Cityscapes,
#: R-101-D8): inference fps of the 512x1024-crop models (whole 1024x2048 images), training memory per GPU of the
#: 769x769 models (4 GPUs x 2 images); mmsegmentation measures on V100 GPUs in fp32.
MMSEG_REFERENCE: dict[str, Any] = {
    "source": "open-mmlab/mmsegmentation configs/ann/README.md, configs/nonlocal_net/README.md (Cityscapes, R-101-D8)",
    "gpu": "V100",
    "precision": "fp32",
    "inference_fps_1024x2048": {"ann": 2.55, "nl": 1.95},
    "inference_config": "512x1024 crop, 40k schedule; whole-image 1024x2048 inference, batch 1",
    "train_memory_gb_per_gpu": {"ann": 10.7, "nl": 12.8},
    "train_config": "769x769 crop, 4 GPUs x 2 images (batch 2 per GPU), 40k schedule",
    "train_memory_gb_per_gpu_512x1024": {"ann": 9.5, "nl": 10.9},
}
NOT_DETERMINISTIC = (
    "CUDA is not bitwise deterministic in general: atomic adds in backward kernels, and cudnn.benchmark (which "
    "anncore.engine.train turns on for CUDA, as the official code does) may pick different convolution algorithms in "
    "different processes. anncore.engine.train promises bitwise-exact resume on CPU only; on CUDA, tensors that differ "
    "should differ by rounding-sized amounts."
)


@dataclass(frozen=True)
class Sizes:
    """What the steps measure: the real sizes on a GPU (:data:`FULL`), tiny ones for ``--dry-run`` (:data:`DRY`)."""

    backbone: str
    image: tuple[int, int]  # whole-image inference, and the compile step's image (features at 1/8)
    crop: tuple[int, int]  # the training step's crop
    batch: int  # the training step's batch
    warmup: int
    timed: int
    matmul: int  # n of the n x n x n matmul
    matmul_calls: int  # calls per timing (CUDA events around them)
    ohem_min_kept: int
    # the resume and ddp steps: a short AMP run on the synthetic set
    run_backbone: str
    run_size: tuple[int, int]  # synthetic images (H, W); crops are the same size
    run_scenes: tuple[int, int]
    run_batch: int
    run_iters: int
    run_ohem_min_kept: int
    compile_backend: str
    notebooks: tuple[str, ...]


FULL = Sizes(
    backbone="resnet101",
    image=(1024, 2048),
    crop=(769, 769),
    batch=8,
    warmup=2,
    timed=5,
    matmul=8192,
    matmul_calls=10,
    ohem_min_kept=100_000,
    run_backbone="small",
    run_size=(128, 256),
    run_scenes=(16, 4),
    run_batch=4,
    run_iters=40,
    run_ohem_min_kept=2_000,
    compile_backend="inductor",
    notebooks=("00", "01", "02", "03", "04"),
)
DRY = Sizes(
    backbone="small",
    image=(64, 128),
    crop=(64, 128),
    batch=2,
    warmup=1,
    timed=2,
    matmul=256,
    matmul_calls=2,
    ohem_min_kept=50,
    run_backbone="small",
    run_size=(64, 128),
    run_scenes=(4, 2),
    run_batch=2,
    run_iters=8,
    run_ohem_min_kept=50,
    compile_backend="aot_eager",  # inductor's C++ build takes minutes on a 2-core CPU; the GPU step uses inductor
    notebooks=("00",),
)


class StepSkipped(Exception):
    """A step cannot run here (a missing package, no time left); the message says why."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------- planning
def check_arguments(budget_s: float, only: Sequence[str] | None) -> tuple[str, ...]:
    """The steps to run, in :data:`STEPS` order; a non-positive budget or an unknown step is a ``BadInput``."""
    if not (isinstance(budget_s, int | float) and math.isfinite(budget_s) and budget_s > 0):
        raise BadInput(f"--budget-s must be a positive number of seconds, got {budget_s!r}")
    if only is not None:
        unknown = [name for name in only if name not in STEPS]
        if unknown or not only:
            raise BadInput(
                f"--only: unknown step(s) {', '.join(map(repr, unknown)) or '(none given)'}; steps: {', '.join(STEPS)}"
            )
    return tuple(name for name in STEPS if only is None or name in only)


def step_limit(base_s: float, left_s: float, bases_left_s: float) -> float:
    """A step's time limit: its ``base_s`` scaled by ``left_s`` (budget left, reserve deducted) over ``bases_left_s``
    (the base limits of this and the later steps), never above ``base_s``. Time an earlier step left unused thus
    goes to the later ones, and the limits never add up to more than the budget."""
    if bases_left_s <= 0 or left_s <= 0:
        return 0.0
    return base_s * min(1.0, left_s / bases_left_s)


# ------------------------------------------------------------------------------------------------- orchestration
def run_check(
    out: str | Path,
    budget_s: float = DEFAULT_BUDGET_S,
    dry_run: bool = False,
    only: Sequence[str] | None = None,
    limits_s: dict[str, float] | None = None,
) -> int:
    """Run the steps (module docstring), each in its own subprocess under its limit; print the summary and return
    the exit status: 0 when no step failed or ran out of time, else 1. ``limits_s`` overrides :data:`LIMITS_S`."""
    steps = check_arguments(budget_s, only)
    if not dry_run and not torch.cuda.is_available():
        raise BadInput(NO_CUDA)
    base = {**LIMITS_S, **(limits_s or {})}
    out = Path(out).resolve()
    started, created = time.monotonic(), utc_stamp()
    rows: list[dict[str, Any]] = []
    with output_lock(out), tempfile.TemporaryDirectory(prefix="anncore-gpu-check-") as work:
        print(
            f"gpu-check{' --dry-run (CPU, tiny sizes)' if dry_run else ''}: {len(steps)} steps within "
            f"{budget_s:g} s -> {out}",
            flush=True,
        )
        for index, name in enumerate(steps):
            (out / f"{name}.json").unlink(missing_ok=True)  # an earlier check's result in this folder is not ours
            left = budget_s - RESERVE_S - (time.monotonic() - started)
            limit = step_limit(base[name], left, sum(base[s] for s in steps[index:]))
            if limit < min(MIN_LIMIT_S, base[name]):
                row = _record(out, name, "skipped", 0.0, limit, f"only {max(left, 0):.0f} s of the budget left")
            else:
                row = _run_step_process(out, Path(work), name, limit, dry_run)
            rows.append(row)
            print(f"  {_row_line(row)}", flush=True)
    total = time.monotonic() - started
    summary = {
        "created": created,
        "dry_run": dry_run,
        "budget_s": budget_s,
        "total_s": round(total, 1),
        "argv": sys.argv[1:],
        "steps": rows,
        "not_selected": [name for name in STEPS if name not in steps],
        "skipped": [row["step"] for row in rows if row["status"] == "skipped"],
        "device": _device_line(out),
    }
    path = write_json(summary, out / "summary.json")
    print(format_summary(summary, path))
    return 0 if all(row["status"] in ("ok", "skipped") for row in rows) else 1


def _run_step_process(out: Path, work: Path, name: str, limit: float, dry_run: bool) -> dict[str, Any]:
    """``python -m anncore gpu-check --step NAME`` under ``limit`` seconds, its output into ``logs/NAME.log``;
    on time-out its whole process group is killed (DataLoader workers, training subprocesses, kernels)."""
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "anncore", "gpu-check", "--step", name, "--out", str(out), "--work", str(work)]
    command += ["--limit-s", f"{limit:.1f}", *(["--dry-run"] if dry_run else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANNCORE_DATA": str(work / "data")}
    if dry_run:  # tiny tensors: more intra-op threads only add synchronisation (and stall on a busy CPU)
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    start = time.monotonic()
    timed_out = False
    with open(log, "w") as handle:
        # subprocess.run(command, timeout=limit) but with the step leading its own process group
        # (start_new_session), which is killed whole: DataLoader workers, training subprocesses, notebook kernels
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            proc.wait()
    seconds = time.monotonic() - start
    if timed_out:
        return _record(out, name, "timeout", seconds, limit, f"ran past its {limit:.0f} s limit (killed)")
    document = _read_json(out / f"{name}.json")
    if document is None or document.get("status") not in STATUSES:
        return _record(out, name, "failed", seconds, limit, _last_line(log) or "the step wrote no result")
    return _record(out, name, document["status"], seconds, limit, document.get("error"))


def _kill_group(group: int) -> None:
    """SIGKILL every process left in a step's process group (none when the step ended cleanly)."""
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _record(out: Path, name: str, status: str, seconds: float, limit: float, error: str | None) -> dict[str, Any]:
    """The summary row of a step, also merged into ``OUT/<step>.json`` (written here when the step wrote none)."""
    path = out / f"{name}.json"
    document = _read_json(path) or {"step": name}
    document.update(status=status, seconds=round(seconds, 1), limit_s=round(limit, 1), error=error)
    document.setdefault("headline", "")
    write_json(document, path)
    return {
        "step": name,
        "status": status,
        "seconds": round(seconds, 1),
        "limit_s": round(limit, 1),
        "error": error,
        "headline": document.get("headline", ""),
        "file": path.name,
        "log": f"logs/{name}.log" if (out / "logs" / f"{name}.log").is_file() else None,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _device_line(out: Path) -> str | None:
    env = _read_json(out / "env.json")
    return None if env is None else env.get("device_line")


def _row_line(row: dict[str, Any], width: int = 200) -> str:
    timing = f"{row['seconds']:>5.1f}/{row['limit_s']:>3.0f} s"
    detail = row["headline"] if row["status"] == "ok" else (row["error"] or "")
    if row["status"] != "ok" and row["headline"]:
        detail = f"{detail} | {row['headline']}"
    line = f"{row['step']:<14} {row['status']:<8} {timing}  {detail}"
    return line if len(line) <= width else line[: width - 3] + "..."


def format_summary(summary: dict[str, Any], path: Path | None = None) -> str:
    """The one-screen summary: a line per step (status, time / limit, its headline or error), what was skipped."""
    used = f"{summary['total_s']:.0f} s of {summary['budget_s']:g} s"
    lines = [
        "",
        f"gpu-check summary{' (dry run: CPU, tiny sizes)' if summary['dry_run'] else ''}: {used}",
        f"device: {summary['device'] or 'unknown (env step did not run)'}",
        f"{'step':<14} {'status':<8} {'time/limit':>11}  result",
    ]
    lines += [_row_line(row) for row in summary["steps"]]
    counts = {status: sum(row["status"] == status for row in summary["steps"]) for status in STATUSES}
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items() if count))
    if summary["skipped"]:
        lines.append(f"skipped: {', '.join(summary['skipped'])}")
    if summary["not_selected"]:
        lines.append(f"not selected (--only): {', '.join(summary['not_selected'])}")
    if path is not None:
        lines.append(f"results: {path} and one JSON per step next to it (logs/ holds each step's output)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- one step
@dataclass
class StepContext:
    """What a step function gets: where to write, the sizes, its deadline; ``doc`` is its JSON document."""

    name: str
    out: Path
    work: Path
    dry_run: bool
    deadline: float  # time.monotonic() at which the orchestrator kills the step
    doc: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> Sizes:
        return DRY if self.dry_run else FULL

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.dry_run else "cuda")

    def left(self) -> float:
        """Seconds until the orchestrator kills this step."""
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the document as it stands, so that a time-out keeps what was measured."""
        write_json(self.doc, self.out / f"{self.name}.json")

    def problem(self, text: str) -> None:
        """Something that makes the step ``failed`` (the step goes on with its other parts)."""
        self.problems.append(text)
        self.doc["problems"] = self.problems


def run_step(name: str, out: str | Path, limit_s: float, dry_run: bool, work: str | Path | None = None) -> int:
    """Run one step in this process (what the orchestrator's subprocess does); exit status 0 ok or skipped, 1
    failed. The document ``OUT/<name>.json`` gets ``status`` and ``error``."""
    if name not in STEPS:
        raise BadInput(f"--step: unknown step {name!r}; steps: {', '.join(STEPS)}")
    if not dry_run and not torch.cuda.is_available():
        raise BadInput(NO_CUDA)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = None if work is not None else tempfile.TemporaryDirectory(prefix="anncore-gpu-check-")
    work_dir = Path(work if work is not None else scratch.name)  # type: ignore[union-attr]
    # the orchestrator's clock started before this process imported torch: a few seconds are already gone
    ctx = StepContext(name, out, work_dir, dry_run, time.monotonic() + limit_s - STARTUP_S)
    ctx.doc = {"step": name, "status": "running", "dry_run": dry_run, "created": utc_stamp(), "limit_s": limit_s}
    ctx.doc |= {"device": str(ctx.device), "torch": torch.__version__, "headline": "", "error": None}
    ctx.save()
    status = 0
    try:
        STEP_FUNCTIONS[name](ctx)
        if ctx.problems:
            ctx.doc.update(status="failed", error="; ".join(ctx.problems)[:300])
            status = 1
        else:
            ctx.doc["status"] = "ok"
    except StepSkipped as reason:
        ctx.doc.update(status="skipped", error=str(reason))
    except Exception as err:  # the step's failure is its result: recorded, and the next step runs
        ctx.doc.update(status="failed", error=one_line(err))
        ctx.save()
        raise
    finally:
        ctx.save()
        if scratch is not None:
            scratch.cleanup()
    return status


# ---------------------------------------------------------------------------------------------- measuring helpers
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _build_ann(num_classes: int, backbone: str, head: str) -> ANN:
    """:class:`anncore.models.network.ANN` with random weights (the "no pretrained weights" warning silenced)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        return ANN(num_classes, backbone, head)


def _fmt_gib(value: float | None, prefix: str = "") -> str:
    return "" if value is None else f"{prefix}{value:.1f} GiB"


# -------------------------------------------------------------------------------------------------------- env
def sdpa_pick(device: torch.device, dtype: torch.dtype, channels: int = 256, n: int = 4096) -> str | None:
    """The backend PyTorch's dispatcher picks for ``attention(..., "sdpa")`` on ``(1, n, channels)`` (read from the
    profiled op names as :mod:`anncore.analysis.bench` does)."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, n, channels, device=device, dtype=dtype)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attention(q, q, q, attn_implementation="sdpa")
        synchronize(device)
    return attention_backend(event.name for event in prof.events())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, calls: int, repeats: int = 5) -> dict[str, Any]:
    """Measured throughput of ``n x n @ n x n`` in ``dtype``: ``repeats`` timings of ``calls`` back-to-back matmuls
    (CUDA events on a GPU, synchronised wall clock on a CPU) after 3 warm-up calls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty_like(a)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    per_call_ms = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(calls):
                torch.matmul(a, b, out=c)
            end.record()
            end.synchronize()
            per_call_ms.append(start.elapsed_time(end) / calls)
        else:
            begin = time.perf_counter()
            for _ in range(calls):
                torch.matmul(a, b, out=c)
            per_call_ms.append((time.perf_counter() - begin) * 1e3 / calls)
    flop = 2 * n**3
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "calls_per_timing": calls,
        "ms_per_call": per_call_ms,
        "tflops_best": flop / (min(per_call_ms) * 1e-3) / 1e12,
        "tflops_median": flop / (statistics.median(per_call_ms) * 1e-3) / 1e12,
        "method": "CUDA events around the calls" if device.type == "cuda" else "perf_counter around the calls",
    }


def _nvidia_smi() -> dict[str, str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "name,driver_version,memory.total,power.limit,clocks.max.sm"
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=15, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    first = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
    return dict(zip(query.split(","), (v.strip() for v in first.split(",")), strict=False))


def _step_env(ctx: StepContext) -> None:

    device, doc = ctx.device, ctx.doc
    report = environment_report(device)
    doc["report"] = report
    gpu: dict[str, Any] = {"name": report["device_name"]}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu |= {"capability": list(torch.cuda.get_device_capability(device)), "sms": props.multi_processor_count}
        gpu |= {"memory_gib": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
        driver_api = getattr(torch._C, "_cuda_getDriverVersion", None)
        gpu["cuda_driver_api"] = driver_api() if callable(driver_api) else None
        gpu["nvidia_smi"] = _nvidia_smi()
        gpu["driver"] = (gpu["nvidia_smi"] or {}).get("driver_version")
        gpu["bf16_supported"] = torch.cuda.is_bf16_supported()
    doc["gpu"] = gpu
    doc["precision_flags"] = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    ctx.save()
    sdpa: dict[str, Any] = {
        "channels": 256,
        "shape": "q = k = v (1, 16, 256)",
        "method": "each backend forced through anncore.nn.attention.attention (the forcing logic of "
        "available_sdpa_backends, which probes at 64 channels: see sdpa_backends_64)",
    }
    for dtype in (torch.float32, torch.bfloat16):
        key = str(dtype).removeprefix("torch.")
        runs, why = sdpa_backend_report(device, dtype, 256)
        sdpa[key], sdpa[f"{key}_why_not"] = runs, why
        try:
            sdpa[f"{key}_auto_pick_n4096"] = sdpa_pick(device, dtype, 256)
        except Exception as err:  # informative only
            sdpa[f"{key}_auto_pick_n4096"] = f"unknown ({one_line(err, 120)})"
    doc["sdpa_backends"] = sdpa
    doc["sdpa_backends_64"] = {key: report[key] for key in report if str(key).startswith("sdpa_")}
    ctx.save()
    sizes = ctx.sizes
    doc["matmul"] = {"bfloat16": matmul_peak(device, torch.bfloat16, sizes.matmul, sizes.matmul_calls)}
    ctx.save()
    doc["matmul"]["float32"] = matmul_peak(device, torch.float32, sizes.matmul, max(1, sizes.matmul_calls // 2))
    fused = {key: ",".join(k for k, ok in sdpa[key].items() if ok) or "none" for key in ("float32", "bfloat16")}
    name = gpu["name"]
    driver = f", driver {gpu['driver']}" if gpu.get("driver") else ""
    doc["device_line"] = f"{name}{driver}; torch {torch.__version__}, CUDA {report['cuda']}, cuDNN {report['cudnn']}"
    bf16 = doc["matmul"]["bfloat16"]["tflops_best"]
    fp32 = doc["matmul"]["float32"]["tflops_best"]
    doc["headline"] = (
        f"{name}{driver}; matmul bf16 {bf16:.3g} / fp32 {fp32:.3g} TFLOP/s; SDPA@256 fp32 {fused['float32']}, "
        f"bf16 {fused['bfloat16']}"
    )


# ----------------------------------------------------------------------------------------------------- bench suites
def _step_paper(ctx: StepContext) -> None:

    config = BenchConfig.for_suite("paper", ctx.device, quick=ctx.dry_run)
    ctx.doc["protocol"] = {"sizes": [list(hw) for hw in config.sizes], "dtypes": list(config.dtypes)}
    ctx.doc["protocol"] |= {"variants": [v.name for v in config.variants], "repeats": config.repeats}
    ctx.save()
    documents = run_suite(config, progress=False)
    paths = write_documents(documents, ctx.out / "bench")
    document = documents[0]
    ctx.doc["files"] = [str(p.relative_to(ctx.out)) for p in paths]
    ctx.doc["paper_claim"] = PAPER_CLAIM
    ctx.doc["ratios"] = document["ratios"]
    ctx.doc["rows"] = [
        {key: row[key] for key in ("variant", "height", "width", "status", "time_ms", "peak_bytes", "backend", "note")}
        for row in document["results"]
    ]
    failed = [f"{r['variant']} {r['height']}x{r['width']}: {r['status']}" for r in document["results"]
              if r["status"] != "ok"]  # fmt: skip
    if failed:
        ctx.problem(f"not measured: {', '.join(failed)}")
    last = document["ratios"][-1] if document["ratios"] else None
    if last is not None:

        def x(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}x"

        ctx.doc["headline"] = (
            f"{last['height']}x{last['width']} NL/APNB naive/fused: time {x(last['time_ratio_naive'])}/"
            f"{x(last['time_ratio_fused'])} (paper 6x), memory {x(last['memory_ratio_naive'])}/"
            f"{x(last['memory_ratio_fused'])} (paper 28x)"
        )


def _step_sweep(ctx: StepContext) -> None:
    """The sweep suite in bf16, both modes, one size at a time (smallest first), merged into one document that is
    rewritten after each size; a size whose estimated time exceeds what is left is not started."""

    base = BenchConfig.for_suite("sweep", ctx.device, quick=ctx.dry_run, dtypes=["bfloat16"])
    ctx.doc["protocol"] = {"sizes": [list(hw) for hw in base.sizes], "modes": list(base.modes), "dtype": "bfloat16"}
    ctx.doc["protocol"] |= {"variants": [v.name for v in base.variants], "repeats": base.repeats}
    ctx.doc["time_limit_rule"] = (
        "sizes run smallest first; the next size starts only if (time of the last size) x (N ratio)^1.5 fits in the "
        "time left"
    )
    merged: dict[str, Any] | None = None
    path: Path | None = None
    last_s, last_n = 0.0, 0
    done, not_run = [], []
    for hw in base.sizes:
        n = hw[0] * hw[1]
        estimate = last_s * (n / last_n) ** 1.5 if last_n else 0.0  # between overhead-bound (1) and N^2 (2)
        if merged is not None and estimate > ctx.left() - 5:
            not_run.append(list(hw))
            continue
        begin = time.monotonic()
        (document,) = run_suite(replace(base, sizes=(hw,)), progress=False)
        last_s, last_n = time.monotonic() - begin, n
        if merged is None:
            merged, path = document, result_path(ctx.out / "bench", document)
        else:
            merged["results"] += document["results"]
        done.append(list(hw))
        merged["sizes"] = done
        merged["sizes_not_run_for_time"] = not_run
        assert path is not None
        write_json(merged, path)
        ctx.doc["files"] = [str(path.relative_to(ctx.out))]
        ctx.doc["sizes_done"], ctx.doc["sizes_not_run_for_time"] = done, not_run
        ctx.doc["reach"] = _sweep_reach(merged["results"])
        ctx.save()
    if merged is None:
        raise StepSkipped("no time left for the smallest size")
    if path is not None:
        merged["sizes_not_run_for_time"] = not_run
        write_json(merged, path)
    ctx.doc["sizes_not_run_for_time"] = not_run
    crashed = [r for r in merged["results"] if r["status"] not in ("ok", "oom", "unavailable", "skipped")]
    if crashed:
        ctx.problem(f"{len(crashed)} sweep rows with status {crashed[0]['status']}")
    reach = ctx.doc["reach"]
    parts = []
    for mode in base.modes:
        naive, fused = reach.get(f"{mode} nl-naive") or {}, reach.get(f"{mode} nl-sdpa") or {}
        parts.append(
            f"{'fwd' if mode == 'forward' else 'fwd+bwd'} {naive.get('max_n') or '-'} / {fused.get('max_n') or '-'} "
            f"({fused.get('backend') or '-'})"
        )
    more = f"; {len(not_run)} sizes not run for time" if not_run else ""
    ctx.doc["headline"] = "largest N naive / sdpa NL: " + ", ".join(parts) + more


def _sweep_reach(results: list[dict]) -> dict[str, dict[str, Any]]:
    """Per ``mode variant``: the largest N that ran, its backend and time, and where it ran out of memory."""
    reach: dict[str, dict[str, Any]] = {}
    for row in results:
        key = f"{row['mode']} {row['variant']}"
        entry = reach.setdefault(key, {"max_n": None, "backend": None, "time_ms": None, "oom_at_n": None})
        if row["status"] == "ok" and (entry["max_n"] is None or row["n"] > entry["max_n"]):
            entry.update(max_n=row["n"], backend=row["backend"], time_ms=row["time_ms"])
        if row["status"] == "oom" and entry["oom_at_n"] is None:
            entry["oom_at_n"] = row["n"]
        if row["status"] == "unavailable":
            entry["unavailable"] = (row.get("note") or "")[:200]
    return reach


# ---------------------------------------------------------------------------------------------------- the network
def _step_ann_inference(ctx: StepContext) -> None:
    device, sizes = ctx.device, ctx.sizes
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as mmsegmentation's fps benchmark and anncore.engine.train do
    height, width = sizes.image
    ctx.doc["setup"] = {"backbone": sizes.backbone, "image": [height, width], "batch": 1, "num_classes": 19}
    ctx.doc["setup"] |= {"attn_implementation": "auto (sdpa)", "mode": "eval, no_grad, whole image"}
    ctx.doc["setup"] |= {
        "warmup": sizes.warmup,
        "timed": sizes.timed,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    ctx.doc["setup"]["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    ctx.doc["mmseg_reference"] = MMSEG_REFERENCE
    results: list[dict[str, Any]] = []
    ctx.doc["results"] = results
    image = torch.randn(1, 3, height, width, device=device)
    for head in ("ann", "nl"):
        model = _build_ann(19, sizes.backbone, head).to(device).eval()
        weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
        for dtype in (torch.bfloat16, None):
            row: dict[str, Any] = {"head": head, "precision": "bf16 autocast" if dtype else "fp32"}
            reset_peak_memory(device)

            def forward(model: torch.nn.Module = model, dtype: torch.dtype | None = dtype) -> None:
                with torch.no_grad(), _autocast(device, dtype):
                    model(image)

            try:
                times = time_step(forward, device, sizes.timed, warmup=sizes.warmup)
            except torch.OutOfMemoryError as err:
                row |= {"status": "oom", "note": one_line(err)}
                ctx.problem(f"{head} {row['precision']}: out of memory")
            else:
                median = statistics.median(times)
                row |= {"status": "ok", "times_ms": times, "median_ms": median, "images_per_s": 1e3 / median}
                row |= {"peak_memory_gib": peak_memory(device)[0], "weights_gib": weights_gib}
            results.append(row)
            ctx.save()
        del model
    fps = {(r["head"], r["precision"]): r.get("images_per_s") for r in results}

    def f(head: str, precision: str) -> str:
        value = fps.get((head, precision))
        return "-" if value is None else f"{value:.1f}"

    peak = max((r.get("peak_memory_gib") or 0.0 for r in results), default=0.0)
    ctx.doc["headline"] = (
        f"img/s bf16/fp32: ann {f('ann', 'bf16 autocast')}/{f('ann', 'fp32')}, nl {f('nl', 'bf16 autocast')}/"
        f"{f('nl', 'fp32')} (mmseg V100 fp32 2.55, 1.95){_fmt_gib(peak if peak else None, '; peak ')}"
    )


def _step_ann_train(ctx: StepContext) -> None:
    """Training steps as ``anncore.engine.train`` takes them (autocast forward, fp32 loss, SGD with the official
    settings, a gradient scaler for fp16 only) on random images and labels."""

    device, sizes = ctx.device, ctx.sizes
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # anncore.engine.train's setting on CUDA
    height, width = sizes.crop
    recipe = TrainConfig(ohem_min_kept=sizes.ohem_min_kept)  # the official SGD, OHEM and aux-loss settings
    ctx.doc["setup"] = {"backbone": sizes.backbone, "head": "ann", "crop": [height, width], "batch": sizes.batch}
    ctx.doc["setup"] |= {
        "optimizer": "SGD lr 0.01 momentum 0.9 weight decay 5e-4 (anncore.engine.train.build_optimizer)"
    }
    ctx.doc["setup"] |= {"loss": f"OHEM CE (0.7, {sizes.ohem_min_kept}/image) + 0.4 aux CE (SegmentationLoss)"}
    ctx.doc["setup"] |= {"data": "random images, random labels with an ignored band", "warmup": sizes.warmup}
    ctx.doc["setup"] |= {"timed": sizes.timed, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    ctx.doc["mmseg_reference"] = {key: MMSEG_REFERENCE[key] for key in ("source", "gpu", "precision")}
    ctx.doc["mmseg_reference"] |= {"train_memory_gb_per_gpu": 10.7, "batch_per_gpu": 2, "crop": [769, 769]}
    model = _build_ann(19, sizes.backbone, "ann").to(device).train()
    criterion = SegmentationLoss(
        recipe.aux_weight, recipe.ohem, recipe.ohem_thresh, recipe.ohem_min_kept, None, 255
    ).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(sizes.batch, 3, height, width, generator=generator).to(device)
    labels = torch.randint(0, 19, (sizes.batch, height, width), generator=generator)
    labels[:, : height // 10] = 255  # an ignored band, as Cityscapes' void pixels
    labels = labels.to(device)
    results: list[dict[str, Any]] = []
    ctx.doc["results"] = results
    for amp in (True, False):
        dtype = amp_dtype(amp, device)
        row: dict[str, Any] = {"precision": f"{str(dtype).removeprefix('torch.')} AMP" if dtype else "fp32"}
        optimizer = build_optimizer(model, recipe)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
        losses: list[float] = []

        def step(
            optimizer: torch.optim.Optimizer = optimizer,
            scaler: Any = scaler,
            dtype: Any = dtype,
            losses: list = losses,
        ) -> None:
            with _autocast(device, dtype):
                outputs = model(images)
            loss, _ = criterion(outputs, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())

        reset_peak_memory(device)
        try:
            times = time_step(step, device, sizes.timed, warmup=sizes.warmup)
        except torch.OutOfMemoryError as err:
            row |= {"status": "oom", "note": one_line(err)}
            ctx.problem(f"{row['precision']}: out of memory")
        else:
            median = statistics.median(times)
            row |= {"status": "ok", "times_ms": times, "median_ms": median}
            row |= {"images_per_s": sizes.batch * 1e3 / median, "peak_memory_gib": peak_memory(device)[0]}
            row["losses"] = losses
            if not all(math.isfinite(v) for v in losses):
                ctx.problem(f"{row['precision']}: non-finite loss {losses}")
        results.append(row)
        del optimizer, scaler
        ctx.save()
    parts = [
        f"{r['precision']} {r.get('images_per_s', float('nan')):.1f} img/s{_fmt_gib(r.get('peak_memory_gib'), ' ')}"
        for r in results
    ]
    ctx.doc["headline"] = f"batch {sizes.batch} {height}x{width}: " + ", ".join(parts) + " (mmseg 10.7 GB at 2)"


def _step_compile(ctx: StepContext) -> None:
    device, sizes = ctx.device, ctx.sizes
    torch.manual_seed(0)
    model = _build_ann(19, sizes.backbone, "ann")
    head = model.head.to(device).eval()
    low_c, high_c = model.backbone.low_channels, model.backbone.high_channels
    del model
    h, w = (-(-s // 8) for s in sizes.image)  # output stride 8
    low = torch.randn(1, int(low_c), h, w, device=device)
    high = torch.randn(1, int(high_c), h, w, device=device)
    backend = sizes.compile_backend
    ctx.doc["setup"] = {"module": "ANN(19, backbone, 'ann').head (ANNHead: AFNB, bottleneck, APNB, classifier)"}
    ctx.doc["setup"] |= {"backbone": sizes.backbone, "image": list(sizes.image), "features": [h, w]}
    ctx.doc["setup"] |= {"low": list(low.shape), "high": list(high.shape), "backend": backend, "mode": "default"}
    ctx.doc["setup"] |= {"eval": True, "no_grad": True, "timed": sizes.timed + 3}
    results: list[dict[str, Any]] = []
    ctx.doc["results"] = results
    compiled = torch.compile(head, backend=backend)
    for dtype in (None, torch.bfloat16):
        if results and ctx.left() < 1.5 * results[-1]["first_call_s"] + 10:  # bf16 compiles again
            results.append({"precision": "bf16 autocast", "status": "not run: no time left to compile again"})
            break
        row: dict[str, Any] = {"precision": "bf16 autocast" if dtype else "fp32", "status": "running"}
        results.append(row)  # saved as it fills, so that a time-out keeps the eager figures

        def run(module: Any, dtype: torch.dtype | None = dtype) -> torch.Tensor:
            with torch.no_grad(), _autocast(device, dtype):
                return module(low, high)

        eager_out = run(head)
        eager = time_step(lambda: run(head), device, sizes.timed + 3, warmup=sizes.warmup)
        row |= {"eager_ms": statistics.median(eager)}
        ctx.save()
        begin = time.monotonic()
        compiled_out = run(compiled)
        synchronize(device)
        row["first_call_s"] = time.monotonic() - begin  # compilation included
        fast = time_step(lambda: run(compiled), device, sizes.timed + 3, warmup=sizes.warmup)
        diff = (compiled_out.float() - eager_out.float()).abs().max().item()
        row |= {"compiled_ms": statistics.median(fast), "speedup": statistics.median(eager) / statistics.median(fast)}
        row |= {"max_abs_diff": diff, "max_abs_output": eager_out.float().abs().max().item(), "status": "ok"}
        tolerance = 1e-3 if dtype is None else 5e-1
        row["within_tolerance"] = diff <= tolerance * max(1.0, row["max_abs_output"])
        if not row["within_tolerance"]:
            ctx.problem(f"{row['precision']}: compiled output differs by {diff:.3g}")
        ctx.save()
    done = [r for r in results if r.get("status") == "ok"]
    ctx.doc["headline"] = f"{backend}: " + "; ".join(
        f"{r['precision'].split()[0]} {r['speedup']:.2f}x ({r['eager_ms']:.3g}->{r['compiled_ms']:.3g} ms, "
        f"compile {r['first_call_s']:.0f} s, diff {r['max_abs_diff']:.0e})"
        for r in done
    )


# ------------------------------------------------------------------------------------------------------ training runs
def _run_config(ctx: StepContext, out: Path, **settings: Any) -> Any:
    """A short AMP training run on the synthetic set (written under ``$ANNCORE_DATA``), via ``load_config``."""

    sizes = ctx.sizes
    values: dict[str, Any] = {
        "data_root": "synthetic",
        "synthetic_size": list(sizes.run_size),
        "synthetic_scenes": list(sizes.run_scenes),
        "backbone": sizes.run_backbone,
        "head": "ann",
        "iters": sizes.run_iters,
        "batch_size": sizes.run_batch,
        "crop": list(sizes.run_size),
        "scale_range": [1.0, 1.0],
        "photometric": False,
        "ohem_min_kept": sizes.run_ohem_min_kept,
        "amp": True,
        "device": ctx.device.type,
        "workers": 0,
        "threads": 1 if ctx.dry_run else 0,
        "checkpoint_every": 1,
        "val_every": max(1, sizes.run_iters // 2),
        "log_every": 1,
        "seed": 7,
        "out": str(out),
    }
    return load_config(None, **{**values, **settings})


def _write_yaml_config(config: Any, path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plain_config(config), sort_keys=False))
    return path


def _train_command(config_file: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "anncore", "train", "--config", str(config_file), "--out", str(out), *extra]


def _train_records(out: Path) -> int:
    try:
        text = (out / "log.jsonl").read_text()
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"kind": "train"' in line)


def compare_states(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Tensor by tensor: which are bitwise equal, and the largest absolute difference among the others."""
    different: dict[str, float] = {}
    equal = 0
    for key, value in a.items():
        other = b[key]
        if torch.equal(value, other):
            equal += 1
        else:
            different[key] = (value.double() - other.double()).abs().max().item() if value.is_floating_point() else 1.0
    worst = max(different.items(), key=lambda item: item[1]) if different else None
    return {
        "tensors": len(a),
        "bitwise_equal": equal,
        "different": len(different),
        "max_abs_diff": worst[1] if worst else 0.0,
        "max_abs_diff_tensor": worst[0] if worst else None,
        "different_tensors": sorted(different)[:20],
    }


def _step_resume(ctx: StepContext) -> None:
    """An uninterrupted run (``load_config`` + ``train`` in this process); the same run as ``python -m anncore
    train`` in a subprocess, killed with SIGKILL once a few checkpoints exist; then ``resume=True`` (``--resume``)
    in this process: the two final checkpoints compared tensor by tensor."""

    work = ctx.work / "resume"
    straight = _run_config(ctx, work / "straight")
    config_file = _write_yaml_config(_run_config(ctx, work / "killed"), work / "config.yaml")
    ctx.doc["setup"] = {"config": plain_config(straight), "kill_after_train_records": max(2, straight.iters // 4)}
    ctx.doc["note"] = NOT_DETERMINISTIC
    begin = time.monotonic()
    straight_metrics = train(straight)
    ctx.doc["straight"] = {"seconds": time.monotonic() - begin, "final_miou": straight_metrics["final_miou"]}
    ctx.doc["straight"]["amp_dtype"] = straight_metrics["amp_dtype"]
    ctx.save()

    killed_out = work / "killed"
    kill_after = max(2, straight.iters // 4)
    command = _train_command(config_file, killed_out)
    killed_log = work / "killed.log"
    with open(killed_log, "w") as handle:
        proc = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + max(10.0, ctx.left() / 2)
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed_out / "checkpoint.pt").exists() and _train_records(killed_out) >= kill_after:
            break
        time.sleep(0.005)
    ended = proc.poll() is not None
    if not ended:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if ended:
        raise RuntimeError(
            f"the run to kill ended by itself (status {proc.returncode}) before it could be killed: "
            f"{_tail(killed_log.read_text(errors='replace'))}"
        )
    if not (killed_out / "checkpoint.pt").exists():
        raise RuntimeError(f"killed the run, but it had written no checkpoint: {_tail(killed_log.read_text())}")
    killed_at = load_checkpoint(killed_out / "checkpoint.pt")["iteration"]
    ctx.doc["killed"] = {"signal": "SIGKILL", "returncode": proc.returncode, "checkpoint_iteration": killed_at}
    ctx.doc["killed"]["metrics_json_written"] = (killed_out / "metrics.json").exists()
    ctx.save()

    resumed_log = io.StringIO()
    with contextlib.redirect_stderr(resumed_log):  # where train() says it resumed
        train(_run_config(ctx, killed_out, resume=True))
    said = f"resuming {killed_out / 'checkpoint.pt'} at iteration {killed_at}"
    ctx.doc["resumed"] = {"how": "load_config(..., resume=True) + train() in this process"}
    ctx.doc["resumed"]["says_where_it_resumed"] = said in resumed_log.getvalue()
    if not ctx.doc["resumed"]["says_where_it_resumed"]:
        ctx.problem(f"the resumed run did not say {said!r}")
    a, b = load_checkpoint(work / "straight" / "checkpoint.pt"), load_checkpoint(killed_out / "checkpoint.pt")
    momentum_a = {str(k): v["momentum_buffer"] for k, v in a["optimizer"]["state"].items() if "momentum_buffer" in v}
    momentum_b = {str(k): v["momentum_buffer"] for k, v in b["optimizer"]["state"].items() if "momentum_buffer" in v}
    again = json.loads((killed_out / "metrics.json").read_text())
    model_cmp = compare_states(a["model"], b["model"])
    momentum_cmp = compare_states(momentum_a, momentum_b) if momentum_a else None
    comparison: dict[str, Any] = {
        "iterations": [a["iteration"], b["iteration"]],
        "model": model_cmp,
        "optimizer_momentum": momentum_cmp,
        "final_miou": [straight_metrics["final_miou"], again["final_miou"]],
        "final_miou_equal": straight_metrics["final_miou"] == again["final_miou"],
        "resumed_from": again["resumed_from"],
        "bitwise_identical": model_cmp["different"] == 0 and (momentum_cmp is None or momentum_cmp["different"] == 0),
    }
    ctx.doc["comparison"] = comparison
    if a["iteration"] != b["iteration"] or again["resumed_from"] != killed_at:
        ctx.problem(f"resumed run ended at {b['iteration']} (from {again['resumed_from']}), expected {a['iteration']}")
    if ctx.device.type == "cpu" and not comparison["bitwise_identical"]:
        ctx.problem("on CPU the resumed run must equal the uninterrupted one bitwise, and it does not")
    model = model_cmp
    ctx.doc["headline"] = (
        f"SIGKILL at {killed_at}/{a['iteration']}, resumed: {model['bitwise_equal']}/{model['tensors']} tensors "
        f"bitwise equal (max diff {model['max_abs_diff']:.1e}), mIoU "
        f"{'equal' if comparison['final_miou_equal'] else 'differs'}"
    )


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept)[:300]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _step_ddp(ctx: StepContext) -> None:
    """``torchrun --nproc_per_node=1 -m anncore train`` on a tiny synthetic config, then, because at world size 1
    ``anncore.engine.train`` joins no process group (it converts to SyncBatchNorm only for several GPU processes), a
    world-size-1 process group in this process: all_reduce, a DDP training step with SyncBatchNorm layers, and
    SyncBatchNorm's synchronising function (statistics -> all_gather -> gathered statistics) against BatchNorm."""
    device = ctx.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    out = ctx.work / "ddp"
    config = _run_config(ctx, out, iters=3, val_every=2, checkpoint_every=1)
    config_file = _write_yaml_config(config, ctx.work / "ddp-config.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "anncore",
               "train", "--config", str(config_file), "--out", str(out)]  # fmt: skip
    ctx.doc["torchrun"] = {"command": " ".join(["torchrun", *command[3:]]), "expected_backend": backend}
    # torchrun starts its worker in a new session: on our own time-out, SIGTERM torchrun, which stops the worker
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=max(10.0, ctx.left() * 0.6))
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        print(f"--- torchrun output (tail) ---\n{output[-4000:]}")
        raise RuntimeError("torchrun did not finish in its share of the step's time") from None
    print(f"--- torchrun output (tail) ---\n{output[-4000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode}: {_tail(output)}")
    metrics = json.loads((out / "metrics.json").read_text())
    found = {key: metrics.get(key) for key in ("world_size", "sync_batchnorm", "device", "amp_dtype", "final_miou")}
    ctx.doc["torchrun"] |= {"metrics": found}
    ctx.doc["torchrun"]["sync_batchnorm_rule"] = (
        "anncore.engine.distributed.sync_batchnorm converts BatchNorm only when world_size > 1 on CUDA, and "
        "init_distributed joins a process group only when WORLD_SIZE > 1: at --nproc_per_node=1 metrics.json says "
        "sync_batchnorm false by design; SyncBatchNorm and NCCL are checked below instead"
    )
    expected_sync = found["world_size"] and found["world_size"] > 1 and device.type == "cuda"
    if found["sync_batchnorm"] != bool(expected_sync):
        ctx.problem(
            f"metrics.json sync_batchnorm {found['sync_batchnorm']}, anncore.engine.train's rule says {expected_sync}"
        )
    ctx.save()
    ctx.doc["process_group"] = _process_group_checks(ctx, backend)
    group = ctx.doc["process_group"]
    syncbn = group.get("syncbn_function", {})
    sync_text = (
        f"SyncBN sync path = BN to {syncbn['max_abs_diff']:.0e}"
        if "max_abs_diff" in syncbn
        else f"SyncBN sync path {syncbn.get('status', 'not run')[:40]}"
    )
    ctx.doc["headline"] = (
        f"torchrun ws={found['world_size']} ok (sync_batchnorm={found['sync_batchnorm']}: ws>1 only); {backend} "
        f"all_reduce {'ok' if group.get('all_reduce_ok') else 'FAILED'}, DDP step with "
        f"{group.get('syncbn_layers', 0)} SyncBN {'ok' if group.get('ddp_step_ok') else 'FAILED'}, {sync_text}"
    )


def _process_group_checks(ctx: StepContext, backend: str) -> dict[str, Any]:
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    device = ctx.device
    result: dict[str, Any] = {"backend": backend, "world_size": 1}
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    if device.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        value = torch.ones(4, device=device)
        dist.all_reduce(value)
        result["all_reduce_ok"] = bool((value == 1).all())
        if not result["all_reduce_ok"]:
            ctx.problem("all_reduce at world size 1 changed the tensor")
        model = _build_ann(19, "small", "ann").to(device)
        if device.type == "cuda":  # PyTorch's SyncBatchNorm runs on GPUs only (as anncore.engine.train says)
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        result["syncbn_layers"] = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        net = DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        images = torch.randn(2, 3, 64, 128, device=device)
        labels = torch.randint(0, 19, (2, 64, 128), device=device)
        loss, _ = SegmentationLoss(ohem_min_kept=50).to(device)(net(images), labels)
        loss.backward()
        optimizer.step()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        result["ddp_step_ok"] = math.isfinite(loss.item()) and all(torch.isfinite(g).all() for g in grads)
        result["ddp_loss"] = loss.item()
        if not result["ddp_step_ok"]:
            ctx.problem("the DDP step gave a non-finite loss or gradient")
        if device.type == "cuda":
            result["syncbn_function"] = _syncbn_function_check(device, ctx)
        else:
            result["syncbn_function"] = {"status": "not run: SyncBatchNorm runs on CUDA only"}
    finally:
        dist.destroy_process_group()
    return result


def _syncbn_function_check(device: torch.device, ctx: StepContext) -> dict[str, Any]:
    """SyncBatchNorm's synchronising autograd function at world size 1 (nn.SyncBatchNorm itself falls back to plain
    batch norm there): forward and backward against ``F.batch_norm``. It is a private PyTorch API; if it moved,
    the check says so instead of failing the step."""
    import torch.distributed as dist
    import torch.nn.functional as F

    try:
        from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction
    except ImportError as err:
        return {"status": f"not run: {one_line(err)}"}
    torch.manual_seed(0)
    x = torch.randn(4, 8, 16, 16, device=device, requires_grad=True)
    weight = torch.rand(8, device=device, requires_grad=True)
    bias = torch.rand(8, device=device, requires_grad=True)
    mean_a, var_a = torch.zeros(8, device=device), torch.ones(8, device=device)
    mean_b, var_b = mean_a.clone(), var_a.clone()
    try:
        synced = SyncBatchNormFunction.apply(x, weight, bias, mean_a, var_a, 1e-5, 0.1, dist.group.WORLD, 1)
        grads_synced = torch.autograd.grad(synced.square().sum(), (x, weight, bias))
    except TypeError as err:  # the private signature changed: not this project's failure
        return {"status": f"not run: {one_line(err)}"}
    except Exception as err:
        ctx.problem(f"SyncBatchNorm's sync path failed: {one_line(err, 150)}")
        return {"status": f"failed: {one_line(err)}"}
    plain = F.batch_norm(x, mean_b, var_b, weight, bias, True, 0.1, 1e-5)
    grads_plain = torch.autograd.grad(plain.square().sum(), (x, weight, bias))
    diff = (synced - plain).abs().max().item()
    grad_diff = max((g - h).abs().max().item() for g, h in zip(grads_synced, grads_plain, strict=True))
    stats_diff = max((mean_a - mean_b).abs().max().item(), (var_a - var_b).abs().max().item())
    ok = diff < 1e-4 and grad_diff < 1e-3 and stats_diff < 1e-4
    if not ok:
        ctx.problem(f"SyncBatchNorm's sync path differs from BatchNorm (out {diff:.1e}, grad {grad_diff:.1e})")
    return {"status": "ok" if ok else "differs", "max_abs_diff": diff, "max_abs_grad_diff": grad_diff,
            "running_stats_max_abs_diff": stats_diff}  # fmt: skip


# --------------------------------------------------------------------------------------------------------- notebooks
NOTEBOOK_RUNNER = ("papermill", "nbclient", "nbformat", "ipykernel")


def notebook_imports(path: Path) -> list[str]:
    """The top-level modules the code cells of a notebook import (a plain scan of ``import`` / ``from`` lines)."""
    cells = json.loads(path.read_text())["cells"]
    names: set[str] = set()
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        for line in "".join(cell.get("source", "")).splitlines():
            match = re.match(r"\s*(?:from|import)\s+([A-Za-z_][\w.]*)", line)
            if match:
                names.add(match.group(1).split(".")[0])
    return sorted(names)


def _missing(modules: Sequence[str]) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _step_notebooks(ctx: StepContext) -> None:
    missing = _missing(NOTEBOOK_RUNNER)
    if missing:
        raise StepSkipped(
            f"{', '.join(missing)} not importable: install the course extra, or run `make gpu-wheels` where there "
            "is network and then benchmarks/gpu_check.sh with ANNCORE_WHEELS=.gpu-wheels"
        )
    import papermill

    from anncore.course.runner import QUIET_KERNEL, load_parameters

    notebooks_dir, params_dir = REPO / "notebooks", REPO / "params"
    target = ctx.out / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    ctx.doc["notebooks"] = rows
    ctx.doc["parameters"] = "the notebooks' own defaults" if ctx.dry_run else "params/NN_slug.yaml (DEVICE auto: cuda)"
    for prefix in ctx.sizes.notebooks:
        found = sorted(notebooks_dir.glob(f"{prefix}_*.ipynb"))
        if not found:
            rows.append({"notebook": prefix, "status": "failed", "error": f"no notebooks/{prefix}_*.ipynb"})
            ctx.problem(f"notebook {prefix} is missing")
            continue
        notebook = found[0]
        row: dict[str, Any] = {"notebook": notebook.name}
        rows.append(row)
        lacking = _missing(notebook_imports(notebook))
        if lacking:
            row |= {"status": "skipped", "error": f"needs {', '.join(lacking)}, not importable here"}
            ctx.save()
            continue
        if ctx.left() < 15:
            row |= {"status": "skipped", "error": "no time left in this step"}
            continue
        params = {} if ctx.dry_run else load_parameters(params_dir / f"{notebook.stem}.yaml", notebook)
        begin = time.monotonic()
        try:
            papermill.execute_notebook(
                str(notebook), str(target / notebook.name), parameters=params, cwd=str(notebooks_dir),
                progress_bar=False, extra_arguments=QUIET_KERNEL, execution_timeout=int(max(10, ctx.left())),
            )  # fmt: skip
            row["status"] = "ok"
        except Exception as err:  # papermill's execution error names the cell's exception
            evalue = getattr(err, "evalue", None)
            ename = getattr(err, "ename", type(err).__name__)
            row |= {"status": "failed", "error": f"{ename}: {evalue}" if evalue is not None else one_line(err)}
            if "No package metadata was found for anncore" in row["error"]:
                row["hint"] = (
                    "notebook 00 checks anncore's installed requirements (importlib.metadata); a checkout on "
                    "PYTHONPATH has no metadata: pip install -e '.[course]' there to pass it"
                )
            ctx.problem(f"{notebook.name}: {row['error'][:150]}")
        row |= {"seconds": round(time.monotonic() - begin, 1), "output": f"notebooks/{notebook.name}"}
        ctx.save()
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    ctx.doc["headline"] = (
        ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + ": "
        + " ".join(f"{r['notebook'][:2]}:{r['status']}" for r in rows)
    )
    if rows and counts["skipped"] == len(rows):
        raise StepSkipped("; ".join(f"{r['notebook']}: {r.get('error')}" for r in rows)[:300])


STEP_FUNCTIONS: dict[str, Callable[[StepContext], None]] = {
    "env": _step_env,
    "paper": _step_paper,
    "sweep": _step_sweep,
    "ann-inference": _step_ann_inference,
    "ann-train": _step_ann_train,
    "compile": _step_compile,
    "resume": _step_resume,
    "ddp": _step_ddp,
    "notebooks": _step_notebooks,
}


if __name__ == "__main__":
    if importlib.util.find_spec("anncore") is None:  # pragma: no cover - run from a checkout without installing
        sys.path.insert(0, str(REPO))
    from anncore.__main__ import main

    sys.exit(main(["gpu-check", *sys.argv[1:]]))
