"""The environment report of ``python -m anncore info``, notebook 00 and every benchmark document: versions, the
device ``auto`` picks, its memory, and which SDPA backends run there."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from anncore.device import pick_device
from anncore.nn.attention import available_sdpa_backends

REPORTED_PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "papermill")


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
