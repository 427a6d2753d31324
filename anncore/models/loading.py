"""Trained models as files: the shipped course model, rebuilding a model from a checkpoint, exporting one.

A checkpoint (:mod:`anncore.models.checkpoint`) carries ``model_config``, the arguments of
:class:`~anncore.models.network.ANN`, beside the weights, so :func:`load_model` needs nothing from the training
code; :func:`export_model` keeps only what it reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from anncore.errors import BadInput, MissingInput
from anncore.models.backbone import UntrainedBackboneWarning
from anncore.models.checkpoint import check_finite, load_checkpoint, save_checkpoint
from anncore.models.network import ANN

#: The course model shipped with the repository (``models/course/``): the ``ann`` head trained by
#: ``python -m anncore train --config params/course_model.yaml``; ``"course"`` names it wherever a checkpoint is asked.
COURSE_MODEL = Path(__file__).resolve().parents[2] / "models" / "course" / "model.pt"


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path; the word ``"course"`` means :data:`COURSE_MODEL`."""
    if str(checkpoint) == "course":
        if not COURSE_MODEL.is_file():
            raise MissingInput(f"the course model {COURSE_MODEL} is missing: this checkout lacks models/course/")
        return COURSE_MODEL
    return Path(checkpoint)


def weights_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """How ``found`` (a checkpoint's state dict) differs from ``expected`` (the model's), naming the keys and, for a
    tensor of the wrong shape, both shapes."""
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    shapes = [(k, tuple(found[k].shape), tuple(v.shape)) for k, v in expected.items() if k in found
              and tuple(found[k].shape) != tuple(v.shape)]  # fmt: skip
    parts = []
    if shapes:
        key, got, want = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        parts.append(f"{key} has shape {got}, the model's is {want}{more}")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(parts) or "no key or shape differs"


def load_model(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> ANN:
    """Rebuild a trained model from a training checkpoint (``OUT/checkpoint.pt``), in eval mode.

    ``checkpoint`` may be ``"course"``, the shipped course model (:data:`COURSE_MODEL`). Needs nothing from the
    training code: the checkpoint's ``model_config`` gives the architecture and ``model`` the weights. The backbone
    is built without pretrained weights, since the checkpoint replaces them.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path, map_location)
    if "model" not in state or "model_config" not in state:
        raise BadInput(f"{path} holds no model (keys {sorted(state)}); expected a training checkpoint or model.pt")
    check_finite(state["model"], f"{path} holds a poisoned model (a diverged run?)")
    config = dict(state["model_config"])
    if "path" in config:  # checkpoints written before the name was unified
        config["attn_implementation"] = config.pop("path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedBackboneWarning)
        model = ANN(**config, pretrained=None)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # load_state_dict lists every missing, unexpected and mis-shaped tensor
        raise BadInput(
            f"{path}: its weights do not fit the model its model_config describes ({config}): "
            f"{weights_mismatch(model.state_dict(), state['model'])}; was the checkpoint edited?"
        ) from err
    return model.to(map_location).eval()


#: What :func:`export_model` keeps of a training checkpoint: enough to rebuild, evaluate and describe the model.
MODEL_KEYS = ("iteration", "model", "model_config", "progress", "config")


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the model of a training checkpoint, without optimiser, scheduler and RNG states (a third of the size
    under Adam), to ``out``; :func:`anncore.models.loading.load_model` reads it like the full checkpoint. Refuses a
    model with non-finite weights or BatchNorm statistics."""
    state = load_checkpoint(checkpoint)
    check_finite(state["model"], f"{checkpoint}: not exporting a poisoned model")
    save_checkpoint({key: state[key] for key in MODEL_KEYS if key in state}, out)
    return Path(out)
