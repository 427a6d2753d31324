"""The machine the course runs on: device choice and an environment report (``python -m anncore info``)."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from anncore.attention import available_sdpa_backends
from anncore.errors import BadInput

REPORTED_PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "papermill")


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


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report(device: str | torch.device = "auto") -> dict[str, object]:
    """Versions, the device ``auto`` picks, its memory, and which SDPA backends run there (fp32 and half)."""
    dev = pick_device(device)
    report: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in REPORTED_PACKAGES},
        "device": str(dev),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        report["device_name"] = torch.cuda.get_device_name(dev)
        report["memory_free_gib"] = round(free / 2**30, 2)
        report["memory_total_gib"] = round(total / 2**30, 2)
    else:
        report["device_name"] = platform.processor() or platform.machine()
    half = torch.bfloat16 if dev.type != "mps" else torch.float16
    report["sdpa_float32"] = available_sdpa_backends(dev, torch.float32)
    report[f"sdpa_{str(half).removeprefix('torch.')}"] = available_sdpa_backends(dev, half)
    return report
