"""Measured and analytic cost of a block: FLOPs, peak memory, latency, and the attention kernel that really ran.

The paper's efficiency claim (abstract: at 256x128, APNB is "around 6 times faster than a non-local block on GPU
while 28 times smaller in GPU running memory") was measured by the official ``efficiency_statics/`` harness
(official repository). This module holds the measuring instruments; :mod:`anncore.analysis.bench` holds the suites.

How each figure is obtained (one :func:`measure` call, after ``warmup`` plain calls):

FLOPs
    ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-accumulate; convolutions, matmuls and the
    fused SDPA kernels; softmax, BN and pooling count zero). Its registry has no formula for the CPU flash kernel
    ``aten::_scaled_dot_product_flash_attention_for_cpu`` and would count it as 0 FLOPs; :func:`flop_counter` adds
    torch's own SDPA formulas for it, so every path counts the same ``2*B*N*S*(Ck+Cv)`` (:func:`attention_flops`).
peak memory
    bytes allocated during the call above what was allocated before it (weights and inputs are not counted).
    CUDA: ``reset_peak_memory_stats`` then ``max_memory_allocated`` minus ``memory_allocated`` before the call.
    CPU: ``torch.profiler`` with ``profile_memory=True``; the peak of the running sum of the CPU allocator's
    allocation (+) and free (-) events, in time order. See :func:`memory_method`.
time
    median of at least ``repeats`` calls (cheap calls are repeated until they add up to ``min_seconds``), each
    timed with ``time.perf_counter`` between device synchronisations (so CUDA kernels are included).
backend
    the attention kernel read from the profiler's op names (:func:`attention_backend`): ``flash``, ``efficient``,
    ``cudnn``, ``math``, ``naive`` (explicit softmax), or ``None`` when no attention ran.

Out-of-memory is a result, not a crash: :func:`measure` returns ``Cost(status="oom")``.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal, cast

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from anncore.device import synchronize

if TYPE_CHECKING:
    from torch._C._autograd import _ProfilerResult

Status = Literal["ok", "oom", "unavailable", "skipped"]


def _cpu_flash_flops(query: torch.Size, key: torch.Size, value: torch.Size, *args: object, **kwargs: object) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_backward_flops(
    grad_out: torch.Size, query: torch.Size, key: torch.Size, value: torch.Size, *args: object, **kwargs: object
) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# Kernels torch's FlopCounterMode registry leaves out (it counts them as 0): the CPU flash attention pair, counted
# with torch's own SDPA formulas (FlopCounterMode passes the formulas shapes, not tensors).
_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
}

# Profiler op-name fragment -> attention backend, first match wins (``..._flash_attention`` also matches the CPU
# ``..._flash_attention_for_cpu`` and every ``..._backward``).
_BACKEND_OPS = (
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_flash_attention_forward", "flash"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_efficient_attention_forward", "efficient"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_attention_math", "math"),
    ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
)


def _check_positive(**sizes: int) -> None:
    bad = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
    if bad:
        raise ValueError(f"{', '.join(bad)} must be positive ints, got {bad}")


def attention_flops(batch: int, n: int, s: int, key_channels: int, value_channels: int) -> int:
    """FLOPs of the attention core ``softmax(q k^T) v`` (paper Eq. 1-2), forward, 2 FLOPs per multiply-add.

    ``q k^T`` is ``B*N*S*Ck`` MACs and ``sim v`` is ``B*N*S*Cv``: ``2*B*N*S*(Ck+Cv)``. ``S = N`` for the non-local
    block, ``S = 110`` anchors for APNB. At 128x256 (``N = 32768``, ``Ck = Cv = 256``) the non-local core is
    1.10 TFLOP, APNB's 3.7 GFLOP (counted by ``FlopCounterMode``).
    """
    _check_positive(batch=batch, n=n, s=s, key_channels=key_channels, value_channels=value_channels)
    return 2 * batch * n * s * (key_channels + value_channels)


def attention_matrix_bytes(batch: int, n: int, s: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one ``(B, N, S)`` attention matrix in ``dtype``; the naive path holds two (scores, softmax).

    4 GiB in fp32 for the non-local block at 128x256, the official code's memory wall; fused SDPA kernels never
    store it.
    """
    _check_positive(batch=batch, n=n, s=s)
    return batch * n * s * torch.empty((), dtype=dtype).element_size()


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU flash-attention kernels (module docstring)."""
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)


def attention_backend(op_names: Iterable[str]) -> str | None:
    """The attention kernel that ran, from profiler op names (``aten::_scaled_dot_product_flash_attention`` ...).

    An SDPA kernel wins over everything else; an explicit ``softmax`` (the official code's path) means ``naive``;
    ``None`` when neither appears (e.g. the identity block).
    """
    names = list(op_names)
    for fragment, backend in _BACKEND_OPS:
        if any(fragment in name for name in names):
            return backend
    return "naive" if any(name.endswith("softmax") for name in names) else None


def memory_method(device: torch.device) -> str:
    """How :func:`measure` measures peak memory on ``device`` (recorded next to every figure)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated before the call"
    if device.type == "cpu":
        return "torch.profiler(profile_memory=True): peak of the running sum of CPU allocator events during the call"
    return f"not measured on {device.type}"


@dataclass
class Cost:
    """What :func:`measure` found. ``status`` is ``ok``, ``oom`` (out of memory), ``unavailable`` (a forced
    kernel cannot run) or ``skipped``; ``note`` says why when it is not ``ok``."""

    status: Status
    flops: int | None = None
    flops_by_op: dict[str, int] = field(default_factory=dict)
    peak_bytes: int | None = None
    times_ms: list[float] = field(default_factory=list)
    backend: str | None = None
    note: str = ""

    @property
    def time_ms(self) -> float | None:
        """Median latency in milliseconds, ``None`` when nothing was timed."""
        return statistics.median(self.times_ms) if self.times_ms else None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields, with the median ``time_ms``."""
        return {**asdict(self), "time_ms": self.time_ms}


def is_out_of_memory(err: BaseException) -> bool:
    """``True`` for the allocator failures of CUDA (``torch.OutOfMemoryError``), CPU and MPS."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    message = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _step(fn: Callable[..., object], inputs: tuple[torch.Tensor, ...], backward: bool) -> Callable[[], None]:
    """One call of ``fn(*inputs)``: under ``no_grad``, or followed by ``out.sum().backward()``; the gradients it
    leaves on the parameters and inputs are dropped at the end, so that every call allocates (and frees) the same."""
    if not backward:

        def forward() -> None:
            with torch.no_grad():
                fn(*inputs)

        return forward
    params = list(fn.parameters()) if isinstance(fn, nn.Module) else []
    leaves = list({id(t): t for t in [*params, *inputs] if t.requires_grad}.values())
    if not leaves:
        raise ValueError("backward=True needs fn to have parameters or inputs with requires_grad=True")

    def forward_backward() -> None:
        out = cast("torch.Tensor | tuple[torch.Tensor, ...]", fn(*inputs))
        (out[0] if isinstance(out, tuple) else out).sum().backward()
        for leaf in leaves:
            leaf.grad = None

    return forward_backward


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Kineto writes a line straight to file descriptor 2 at every profiler start and stop (and on CPU-only
    machines an error about missing GPUs), bypassing Python; silence descriptor 2 around those two moments only."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _peak_of_cpu_allocations(prof: profile) -> int:
    """Peak of the running sum of the CPU allocator's events (+ allocation, - free) recorded by the profiler."""
    # prof has been started and stopped: its autograd profiler and that profiler's kineto results are set
    results = cast("_ProfilerResult", cast("torch.autograd.profiler.profile", prof.profiler).kineto_results)
    events = [e for e in results.events() if e.name() == "[memory]"]
    events = sorted((e for e in events if e.device_type() == torch.autograd.DeviceType.CPU), key=lambda e: e.start_ns())
    # _KinetoEvent.nbytes() exists at runtime but is missing from torch's _C stub
    return max(itertools.accumulate(e.nbytes() for e in events), default=0)  # type: ignore[attr-defined]


def _inspect(step: Callable[[], None], device: torch.device) -> Cost:
    """One profiled call: FLOPs, peak memory and the attention backend (not timed: the profiler slows it)."""
    synchronize(device)
    if device.type == "cuda":
        gc.collect()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=device.type == "cpu")
    with _native_stderr_silenced():
        prof.start()
    try:
        with flop_counter() as fc:
            step()
            synchronize(device)
    finally:
        with _native_stderr_silenced():
            prof.stop()
            op_names = {event.name for event in prof.events()}
    peak: int | None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = _peak_of_cpu_allocations(prof) if device.type == "cpu" else None
    return Cost(
        status="ok",
        flops=fc.get_total_flops(),
        flops_by_op={str(op): count for op, count in fc.get_flop_counts().get("Global", {}).items()},
        peak_bytes=peak,
        backend=attention_backend(op_names),
    )


# Cap on timed calls when ``min_seconds`` asks for more than ``repeats`` (a microsecond kernel would loop forever).
MAX_TIMED_CALLS = 200


def time_step(
    step: Callable[[], object], device: torch.device, repeats: int, min_seconds: float = 0.0, warmup: int = 0
) -> list[float]:
    """The project's timer. After ``warmup`` untimed calls, wall-clock times in milliseconds, each between two
    device synchronisations: ``repeats`` calls, and more (up to :data:`MAX_TIMED_CALLS`) until they add up to
    ``min_seconds``, so that cheap calls get a median that a busy machine's occasional stall cannot move."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds * 1e3 and len(times) < MAX_TIMED_CALLS):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def measure(
    fn: Callable[..., object],
    *inputs: torch.Tensor,
    backward: bool = False,
    warmup: int = 2,
    repeats: int = 10,
    min_seconds: float = 0.0,
) -> Cost:
    """Measure ``fn(*inputs)`` (a module or any function of tensors) on the inputs' device.

    Args:
        fn: the block or function; its output (or the first element of a tuple output) is summed for backward.
        inputs: tensors already on the device, in the dtype and memory format to measure.
        backward: measure forward+backward (gradients w.r.t. ``fn``'s parameters and inputs with
            ``requires_grad``) instead of a ``no_grad`` forward. The caller sets ``train()``/``eval()``.
        warmup: plain calls before measuring (allocator growth, lazy initialisation, kernel selection).
        repeats: timed calls; the median is reported.
        min_seconds: keep timing past ``repeats`` until the calls add up to this (see :func:`time_step`).

    Returns:
        A :class:`Cost` with ``status="ok"``, or ``status="oom"`` when the device ran out of memory at any point.
        Other errors (a forced SDPA backend that cannot run, bad shapes) propagate.
    """
    if not inputs:
        raise ValueError("measure needs at least one input tensor")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    device = inputs[0].device
    step = _step(fn, inputs, backward)
    oom_note = ""
    try:
        for _ in range(warmup):
            step()
        cost = _inspect(step, device)
        cost.times_ms = time_step(step, device, repeats, min_seconds)
    except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(err):
            raise
        oom_note = str(err).splitlines()[0][:300]
    if oom_note:  # outside the except block, so the traceback's tensors can be freed
        _release(device)
        return Cost(status="oom", note=oom_note)
    return cost
