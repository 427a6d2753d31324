"""The device rule of the whole project (``device="auto"`` picks cuda, then mps, then cpu), and the two device
facts every timing and memory figure needs: waiting for queued kernels, and the peak memory of a run."""

from __future__ import annotations

import sys

import torch

from anncore.errors import BadInput


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; any other value is passed to ``torch.device`` and checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        picked = torch.device(device)
    except RuntimeError as err:
        raise BadInput(f"device must be 'auto', 'cpu', 'cuda[:i]' or 'mps', got {device!r}") from err
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU; use 'auto'")
    if picked.type == "mps" and not torch.backends.mps.is_available():
        raise BadInput(f"device {device!r} asked for, but MPS is not available here; use 'auto'")
    return picked


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (no-op on CPU), so that a wall-clock reading covers them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak-memory reading (:func:`peak_memory`) with the cache emptied; a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float | None, str]:
    """Peak memory in GiB and how it was read: allocated tensors on CUDA since the last :func:`reset_peak_memory`,
    else the process's max RSS (Unix; ``None`` on Windows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda max_memory_allocated"
    try:
        import resource  # Unix only
    except ImportError:
        return None, "unavailable"
    scale = 2**30 if sys.platform == "darwin" else 2**20  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, "process max RSS"
