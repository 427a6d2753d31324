"""The networks: backbones, the four heads, the ANN network that joins them, checkpoint files, loading and
exporting trained models (the shipped course model among them), and converting the official and mmsegmentation
checkpoints.

May import :mod:`anncore.nn`, :mod:`anncore.data` (its constants) and the shared modules at the package root
(errors, files, device, interrupts, progress); never the engine, the analyses or the course.
"""

from anncore.models.loading import COURSE_MODEL, export_model, load_model, resolve_checkpoint
from anncore.models.network import ANN

__all__ = ["ANN", "COURSE_MODEL", "export_model", "load_model", "resolve_checkpoint"]
