"""Training: ``python -m anncore train [--config FILE] [flags]``, one process or ``torchrun`` with DDP.

Size (~560 lines): the loop itself (:func:`_train`, one screen) and the state of one run (``_Run``: data, model,
optimiser, checkpoints, metrics) belong together; DDP setup, preemption, the run log and the resume rules are in
their own modules of :mod:`anncore.engine`.

The official recipe (paper Sec. 4; MendelXu/ANN ``hypes/seg/cityscapes/fs_annn_cityscapes_seg.json`` and
``run_fs_annn_cityscapes_seg.sh``) is the default of :class:`TrainConfig`: SGD lr 0.01, momentum 0.9, weight decay
5e-4 on every parameter, poly decay ``lr * (1 - it / iters) ** 0.9`` per iteration, batch 8, 769x769 crops, 60k
iterations, OHEM cross-entropy (0.7, 100000) on the main output + 0.4 x cross-entropy on the auxiliary output,
validation every 4000 and a checkpoint every 1000 iterations. ``params/cityscapes_r101.yaml`` adds the official
class weights and ImageNet weights; ``params/course_model.yaml`` is the CPU recipe on the synthetic set.

Outputs in ``OUT`` (written by rank 0 only):

* ``config.yaml``: the effective configuration, and under ``data`` what the run reads: the data root (absolute),
  the numbers of train and val images and a fingerprint of the file list
  (:func:`~anncore.data.cityscapes.data_record`; also in ``metrics.json`` and the checkpoint, and printed at start);
* ``log.jsonl``: one JSON record per line, ``{"kind": "train", "iter", "loss", "loss_main", "loss_aux", "lr",
  "images_per_s", ...}`` every ``log_every`` iterations and ``{"kind": "val", "iter", "miou", "pixel_acc", "iou"}``
  after each validation;
* ``checkpoint.pt``: written atomically (:mod:`anncore.models.checkpoint`) every ``checkpoint_every`` iterations and at
the   end; ``--resume`` continues from it;
* ``metrics.json``: at the end, final and best mIoU, per-class IoU, images/s, peak memory, wall time, the config.

**Progress.** Rank 0 shows it (:mod:`anncore.progress`): a tqdm bar when standard output is a terminal, else one
line every ``log_every`` iterations: ``ann/resnet101: iteration 50/60000 (0%), loss 2.871, lr 9.99e-03, images/s
15.2, peak memory 21.3 GiB, 0.526 s/iteration, ETA 8:45:31`` (peak memory on GPUs: allocated tensors, as in
``metrics.json``). Under torchrun every message
comes from rank 0 alone: the other processes print nothing and their warnings are silenced (an error still ends the
job with its traceback).

**Resuming on the same data.** ``--resume`` compares the fingerprint of the files it would read with the one the
checkpoint recorded and refuses, naming both, when they differ (other data behind the same ``--data-root`` or
``$CITYSCAPES_DATASET``); ``--allow-other-data`` continues anyway, and the run then records the new data. The same
files moved elsewhere keep their fingerprint. A checkpoint written before runs recorded their data resumes with one
line saying the data is not checked.

**Exact resume.** The batch of iteration ``i`` is a pure function of ``(seed, i)``: a permutation of the training
set per epoch from ``(seed, epoch)``, and every sample's augmentation runs under RNGs seeded from
``(seed, i, position)`` (:class:`ResumableBatchSampler`), whatever the number of workers. Model, optimiser,
scheduler, gradient scaler, iteration and the RNG states of every process are checkpointed. So a run killed at any
moment (even ``kill -9``) and resumed with ``--resume`` reaches bitwise the same weights as an uninterrupted run on
the same machine and device (tested on CPU).

**Interrupts and preemption.** Ctrl-C (SIGINT) and SIGTERM (what SLURM, Kubernetes and cloud preemption send before
SIGKILL) stop a run the same way: one arriving during an iteration's step is held back until that step is done (a
half-done update would be no state to resume from), then the DataLoader workers are stopped, a checkpoint of the
iterations completed is written (one process; under DDP the last periodic checkpoint stands, a collective write
could not be agreed on mid-run) and one line says ``interrupted at iteration i of n by SIGTERM: ... --resume
continues from it``. The exit status is the shell's for that signal: 130 for SIGINT, 143 for SIGTERM (128 + the
signal's number). Resumed, such a run reaches bitwise the weights of an uninterrupted one, like after ``kill -9``.

**Precision.** ``--amp``: bf16 autocast on CUDA (fp16 with a gradient scaler on GPUs without bf16), fp16 on MPS, and
bf16 on CPU (only when asked: CPU bf16 autocast is slower than fp32 on many CPUs). Losses are computed in fp32.

**Distributed.** Under ``torchrun`` (``WORLD_SIZE`` > 1) each process drives one device: DistributedDataParallel,
NCCL on GPUs and gloo on CPUs, SyncBatchNorm on GPUs (PyTorch's SyncBatchNorm runs on GPUs only, so CPU processes
keep per-process BN), the global batch ``batch_size`` split evenly over the processes, validation sharded and its
confusion matrices summed. ``OUT`` must be a folder all processes see (resume reads it on every rank).
"""

from __future__ import annotations

import math
import random
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from anncore.data import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    CityscapesSegmentation,
    train_transforms,
    val_transforms,
)
from anncore.data.cityscapes import check_data, data_record, describe_data
from anncore.data.root import is_synthetic
from anncore.device import peak_memory, reset_peak_memory
from anncore.engine.config import (
    TrainConfig,
    build_parser,
    data_root_of,
    load_config,
    plain_config,
)
from anncore.engine.distributed import Dist, init_distributed, sync_batchnorm
from anncore.engine.evaluate import confusion_over, model_logits
from anncore.engine.losses import SegmentationLoss
from anncore.engine.preemption import TrainingInterrupted, sigterm_raises, worker_stops_on_sigterm
from anncore.engine.resume import check_same_data, resume_state
from anncore.engine.rng import capture_rng_state, restore_rng_state
from anncore.engine.runlog import RunLog, read_metrics
from anncore.engine.sampler import ResumableBatchSampler, SeededSamples
from anncore.errors import BadInput
from anncore.files import write_json
from anncore.interrupts import interrupts_held_back
from anncore.models.checkpoint import non_finite, save_checkpoint
from anncore.models.network import ANN
from anncore.nn.attention import SDPA_BACKENDS, AttnImplementation, available_sdpa_backends
from anncore.nn.pyramid import DEFAULT_POOL_SIZES
from anncore.outputs import output_lock
from anncore.progress import Progress


def build_model(config: TrainConfig, num_classes: int | None = None) -> ANN:
    """The :class:`~anncore.models.network.ANN` a configuration trains (Cityscapes' 19 classes unless told
    otherwise)."""
    if num_classes is None:
        num_classes = NUM_CLASSES
    impl = cast("AttnImplementation", config.attn_implementation)  # TrainConfig checks it is one of them
    pool_sizes = DEFAULT_POOL_SIZES if config.pool_sizes is None else config.pool_sizes
    return ANN(
        num_classes, config.backbone, config.head, config.pretrained, impl, config.aux_weight > 0, pool_sizes=pool_sizes
    )


#: Data sets of at most this many images (train + val) are decoded in full before training, ``--check-data`` or not
#: (the generated synthetic set excepted).
CHECK_DATA_UP_TO = 500


def _datasets(config: TrainConfig, ctx: Dist) -> tuple[CityscapesSegmentation, CityscapesSegmentation]:

    if not ctx.main:
        ctx.barrier()  # rank 0 writes the synthetic set (and checks the files) first
    root = data_root_of(config)
    augment = train_transforms(config.crop, config.scale_range, photometric=config.photometric)
    train_set = CityscapesSegmentation(root, split="train", transforms=augment)
    val_set = CityscapesSegmentation(root, split="val", transforms=val_transforms())
    if ctx.main:
        small = len(train_set) + len(val_set) <= CHECK_DATA_UP_TO
        if config.check_data or (small and not is_synthetic(root)):  # the synthetic set is written by us, whole
            check_data([train_set, val_set])
        ctx.barrier()
    return train_set, val_set


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the update, keeping the last checkpoint."""


def amp_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (module docstring), ``None`` for full precision."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device.type == "mps" else torch.bfloat16


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The official SGD (momentum, L2 weight decay on every parameter), or Adam for the synthetic CPU recipe
    (``params/course_model.yaml`` says why: under SGD from scratch the zero-initialised output conv of the
    context blocks, official, stays near zero for the short CPU budget and the cue board is never read)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _poly(iters: int, power: float, warmup: int = 0):
    """Official ``lambda_poly``: ``(1 - it / iters) ** power`` at iteration ``it`` (0-based), times
    ``(it + 1) / warmup`` during a linear warm-up of ``warmup`` iterations (none officially)."""
    return lambda it: min(1.0, (it + 1) / warmup if warmup else 1.0) * (1.0 - it / iters) ** power


@torch.no_grad()
def validate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    workers: int = 0,
    ctx: Dist | None = None,
) -> dict[str, Any]:
    """Whole-image, single-scale mIoU on ``dataset`` (official validation), sharded over processes: the one
    evaluation loop (:func:`anncore.engine.evaluate.confusion_over`) with autocast and the memory format of training.

    Leaves ``model`` in eval mode; the caller puts it back in training mode.
    """
    ctx = ctx or Dist()
    shard = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]
    # Own generator: creating the loader must not draw from the global RNG (exact resume).
    loader = DataLoader(
        shard, batch_size=1, num_workers=workers, generator=torch.Generator(), worker_init_fn=worker_stops_on_sigterm
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    logits = model_logits(model.eval())

    def predict(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            return logits(images.contiguous(memory_format=memory_format)).argmax(1)

    confusion = confusion_over(predict, loader, device)
    if ctx.world_size > 1:
        dist.all_reduce(confusion.matrix)
    return confusion.compute()


def _check_backend(requested: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before building anything, an SDPA backend (``--attn-implementation flash`` ...) that cannot run on
    ``device``."""
    if requested not in SDPA_BACKENDS:
        return
    available = available_sdpa_backends(device, dtype)
    if not available[requested]:
        runs = [name for name, ok in available.items() if ok]
        raise BadInput(
            f"--attn-implementation {requested}: that SDPA backend cannot run on {device.type} in {dtype} with this "
            f"PyTorch (backends that can: {', '.join(runs) or 'none'}); use auto, sdpa or naive"
        )


class _Run:
    """One training process: data, model, optimiser and bookkeeping, restored from ``OUT/checkpoint.pt`` when
    resuming. :func:`train` drives it one iteration at a time."""

    def __init__(self, config: TrainConfig, ctx: Dist, device: torch.device) -> None:

        self.config, self.ctx, self.device = config, ctx, device
        self.started = time.perf_counter()
        self.out = Path(config.out)
        self.checkpoint_path = self.out / "checkpoint.pt"
        resumed = resume_state(config, self.checkpoint_path, ctx.main)
        self.train_set, self.val_set = _datasets(config, ctx)
        self.data = data_record(data_root_of(config), [self.train_set, self.val_set])
        check_same_data(resumed, self.data, config, self.checkpoint_path, ctx.main)
        if ctx.main:
            print(f"data: {describe_data(self.data, relative=True)}", flush=True)
            self.out.mkdir(parents=True, exist_ok=True)
            recorded = {**plain_config(config), "data": self.data}  # load_config skips "data" (RECORDED_KEYS)
            (self.out / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))

        random.seed(config.seed)
        np.random.seed(config.seed)  # noqa: NPY002 - the global RNG third-party augmentation may use
        torch.manual_seed(config.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # official; exact resume is promised on CPU only
        self.autocast_dtype = amp_dtype(config.amp, device)
        _check_backend(config.attn_implementation, device, self.autocast_dtype or torch.float32)
        model = build_model(config, NUM_CLASSES).to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.synced = sync_batchnorm(model, ctx.world_size, device)
        self.criterion = SegmentationLoss(
            config.aux_weight, config.ohem, config.ohem_thresh, config.ohem_min_kept, config.class_weights, IGNORE_INDEX
        ).to(device)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _poly(config.iters, config.poly_power, config.warmup_iters)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast_dtype is torch.float16)
        self.progress: dict[str, Any] = {"best_miou": math.nan, "best_iter": 0, "last_val": None, "wall_time_s": 0.0}
        self.start = 0
        if resumed is not None:
            self._restore(resumed)
        elif config.resume and ctx.main:
            print(f"--resume: no {self.checkpoint_path} yet, starting from scratch", file=sys.stderr)
        self.resumed_from = self.start if resumed is not None else None
        self.last_saved = self.resumed_from
        self.wall_before = self.progress["wall_time_s"]
        self.net: nn.Module = self.model
        if ctx.world_size > 1:
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.log = RunLog(self.out / "log.jsonl", ctx.main, keep_until=self.resumed_from)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.train_seconds, self.images_seen = 0.0, 0
        reset_peak_memory(device)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.progress, self.start = state["progress"], state["iteration"]
        # lr and iters may change on resume: the schedule continues from here with the new values
        self.scheduler.base_lrs = [self.config.lr for _ in self.optimizer.param_groups]
        for group, schedule in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas, strict=True):
            group["initial_lr"], group["lr"] = self.config.lr, self.config.lr * schedule(self.scheduler.last_epoch)
        rng = state["rng"]
        if len(rng) != self.ctx.world_size:
            warnings.warn(
                f"resuming a {len(rng)}-process run with {self.ctx.world_size} processes: the data order is kept, "
                "but random draws (dropout) differ from an uninterrupted run",
                stacklevel=3,
            )
        restore_rng_state(rng[self.ctx.rank % len(rng)])
        if self.ctx.main:
            print(f"resuming {self.checkpoint_path} at iteration {self.start} of {self.config.iters}", file=sys.stderr)

    def loader(self) -> DataLoader:
        """The training batches of the remaining iterations (:class:`ResumableBatchSampler`)."""
        config, ctx = self.config, self.ctx
        sampler = ResumableBatchSampler(
            len(self.train_set), config.batch_size, config.seed, self.start, config.iters, ctx.rank, ctx.world_size
        )
        return DataLoader(
            SeededSamples(self.train_set),
            batch_sampler=sampler,
            num_workers=config.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator(),  # creating the iterator must not draw from the global RNG
            worker_init_fn=worker_stops_on_sigterm,
        )

    def step(self, done: int, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        """One SGD step on a batch; returns the losses (averaged over processes) and the lr it used.

        Raises :class:`NonFiniteLossError` before touching the weights if the loss is NaN/inf on any process.
        """
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        masks = masks.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            outputs = self.net(images)
        loss, parts = self.criterion(outputs, masks)
        values = torch.stack([loss.detach(), parts["main"], parts.get("aux", torch.zeros_like(parts["main"]))])
        if self.ctx.world_size > 1:
            dist.all_reduce(values)  # every process sees the same values, so all stop together on a NaN
            values /= self.ctx.world_size
        total, main, aux = values.tolist()
        if not math.isfinite(total):
            self.log.write({"kind": "error", "iter": done, "loss": total})
            raise NonFiniteLossError(self._non_finite_message(done, total))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used
        self.scheduler.step()
        return {"loss": total, "loss_main": main, "loss_aux": aux, "lr": lr}

    def kept(self) -> str:
        """What a stopped run leaves to continue from, in the words every stop message uses."""
        if self.last_saved is None:
            return "no checkpoint was written yet"
        return f"{self.checkpoint_path} holds iteration {self.last_saved}; --resume continues from it"

    def _non_finite_message(self, done: int, loss: float) -> str:
        advice = "" if self.last_saved is None else " (it may change --lr, --iters and --amp), e.g. --resume --lr 0.001"
        return (
            f"non-finite loss ({loss}) at iteration {done} of {self.config.iters}: training stopped before updating "
            f"the weights; {self.kept()}{advice}"
        )

    def validate(self, done: int, shown: Progress) -> dict[str, Any]:
        """Validate after ``done`` iterations, log it, track the best mIoU, and say it (under the bar, if any)."""
        config = self.config
        result = validate(
            self.model, self.val_set, self.device, self.autocast_dtype, config.channels_last, config.workers, self.ctx
        )
        self.net.train()
        self.progress["last_val"] = {"iter": done, **result}
        if math.isnan(self.progress["best_miou"]) or result["miou"] > self.progress["best_miou"]:
            self.progress["best_miou"], self.progress["best_iter"] = result["miou"], done
        self.log.write({"kind": "val", "iter": done, **result})
        if self.ctx.main:
            shown.write(f"iteration {done}: val mIoU {result['miou']:.4f}, pixel accuracy {result['pixel_acc']:.4f}")
        return result

    def save(self, done: int) -> None:
        """Checkpoint after ``done`` iterations (collective: every process hands its RNG state to rank 0)."""
        rng = self.ctx.all_gather(capture_rng_state())
        poisoned = non_finite({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()["state"]})
        if poisoned:
            raise NonFiniteLossError(
                f"non-finite values in {', '.join(poisoned[:5])} at iteration {done} (the run diverged): not writing "
                f"a poisoned checkpoint; {self.kept()}, with a lower --lr"
            )
        with interrupts_held_back():  # a Ctrl-C or SIGTERM now lands after last_saved names what is on disk
            if self.ctx.main:
                self.progress["wall_time_s"] = self.wall_before + time.perf_counter() - self.started
                state = {
                    "iteration": done,
                    "model": self.model.state_dict(),
                    "model_config": self.model.config,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": rng,
                    "progress": self.progress,
                    "config": plain_config(self.config),
                    "data": self.data,
                }
                save_checkpoint(state, self.checkpoint_path)
            self.last_saved = done

    def interrupted(self, completed: int, signum: int) -> TrainingInterrupted:
        """After a Ctrl-C or SIGTERM between steps: a checkpoint of the ``completed`` iterations unless one holds them
        already (or under DDP, module docstring), and the error that says where the work is."""
        if self.ctx.world_size == 1 and completed > 0 and completed != self.last_saved:
            try:
                self.save(completed)
            except KeyboardInterrupt:  # a second signal, held back until the checkpoint was whole: stopping anyway
                pass
        name = signal.Signals(signum).name
        return TrainingInterrupted(
            f"interrupted at iteration {completed} of {self.config.iters} by {name}: {self.kept()}", signum
        )

    def metrics(self) -> dict[str, Any]:
        """What ``OUT/metrics.json`` holds (module docstring)."""

        final, elapsed = self.progress["last_val"], time.perf_counter() - self.started
        peak, peak_kind = peak_memory(self.device)
        dtype = self.autocast_dtype
        return {
            "final_miou": final["miou"],
            "best_miou": self.progress["best_miou"],
            "best_iter": self.progress["best_iter"],
            "pixel_acc": final["pixel_acc"],
            "iou_per_class": dict(zip(CLASS_NAMES, final["iou"], strict=True)),
            "iterations": self.config.iters,
            "resumed_from": self.resumed_from,
            "images_per_s": self.images_seen / self.train_seconds if self.train_seconds else None,
            "peak_memory_gib": peak,
            "peak_memory_kind": peak_kind,
            "wall_time_s": elapsed,
            "wall_time_total_s": self.wall_before + elapsed,
            "device": str(self.device),
            "world_size": self.ctx.world_size,
            "sync_batchnorm": self.synced,
            "amp_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "config": plain_config(self.config),
            "data": self.data,
        }


def _stop_workers(batches: Iterator[Any] | None) -> None:
    """Stop the DataLoader workers of ``batches`` now (PyTorch's own shutdown: workers told to stop, joined), not
    whenever the iterator is garbage-collected; nothing for ``workers=0`` or an iterator already shut down."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _shown_stats(record: dict[str, float], device: torch.device) -> dict[str, str]:
    """What the progress bar or line shows of an iteration's ``record``: loss, lr, images/s, and peak memory on a
    GPU."""
    stats = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.2e}", "images/s": f"{record['images_per_s']:.1f}"}
    if device.type == "cuda":
        stats["peak memory"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
    return stats


def _train(config: TrainConfig, ctx: Dist, device: torch.device) -> dict[str, Any]:
    """:func:`train` inside the lock on ``OUT``."""
    run = _Run(config, ctx, device)
    if run.start >= config.iters and (finished := read_metrics(run.out / "metrics.json")) is not None:
        return finished  # a finished run resumed: nothing to train; its metrics (throughput, wall time) as measured
    bar = Progress(
        config.iters, f"{config.head}/{config.backbone}", "iteration", run.start, ctx.main, every=config.log_every
    )
    run.net.train()
    tick = time.perf_counter()
    done = completed = run.start
    batches: Iterator[Any] | None = None
    try:
        batches = iter(run.loader())
        for iteration, (images, masks) in enumerate(batches, start=run.start):
            done = iteration + 1
            with interrupts_held_back():  # a Ctrl-C or SIGTERM lands once the step is done and logged
                record = run.step(done, images, masks)
                seconds = time.perf_counter() - tick  # data wait included: end-to-end throughput
                run.train_seconds += seconds
                run.images_seen += config.batch_size
                record["images_per_s"] = config.batch_size / seconds
                bar.update(1, _shown_stats(record, device))
                if done % config.log_every == 0 or done == config.iters:
                    record["time_s"] = time.perf_counter() - run.started
                    run.log.write({"kind": "train", "iter": done, **record})
                completed = done
            save = (config.checkpoint_every and done % config.checkpoint_every == 0) or done == config.iters
            if save:
                run.save(done)  # before validating: a validation file that fails to load costs no training
            if (config.val_every and done % config.val_every == 0) or done == config.iters:
                run.validate(done, bar)
                if save:
                    run.save(done)  # again, with this validation in its progress
            tick = time.perf_counter()  # validation and checkpoints are not training time
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Preempted), between two steps
        _stop_workers(batches)
        bar.close()
        raise run.interrupted(completed, getattr(err, "signum", signal.SIGINT)) from None
    except BaseException:
        bar.close()  # so that the error is printed on a line of its own, not at the end of the bar
        raise
    finally:
        _stop_workers(batches)
    bar.close()
    if done >= config.iters and (run.progress["last_val"] or {}).get("iter") != config.iters:
        run.validate(done, bar)  # a run stopped between its final checkpoint and its final validation
        run.save(done)
    metrics = run.metrics()
    if ctx.main:
        write_json(metrics, run.out / "metrics.json")
    return metrics


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) the training that ``config`` describes; returns what ``OUT/metrics.json`` holds.

    Raises:
        NonFiniteLossError: the loss was NaN/inf at some iteration (named in the message); nothing was updated
            with it and ``OUT/checkpoint.pt`` still holds the last good state.
        TrainingInterrupted: Ctrl-C or SIGTERM during the iterations; ``OUT/checkpoint.pt`` holds those completed
            (module docstring). One before the first iteration or after the last raises ``KeyboardInterrupt``
            (:class:`Preempted` for SIGTERM): there was nothing to save.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx, device = init_distributed(config.device)
    try:
        with sigterm_raises(), output_lock(config.out) if ctx.main else nullcontext(), warnings.catch_warnings():
            if not ctx.main:
                warnings.simplefilter("ignore")  # rank 0 says it once for the job (module docstring)
            return _train(config, ctx, device)
    finally:
        if ctx.world_size > 1:
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m anncore train`` (module docstring); returns the exit status. A user's mistake propagates to
    :func:`anncore.__main__.main`, which prints it as one line (exit 2)."""
    args = vars(build_parser().parse_args(argv))
    config = load_config(args.pop("config", None), **args)
    try:
        train(config)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"{err}", file=sys.stderr)
        return 128 + err.signum  # the shell's status for that signal: 130 SIGINT, 143 SIGTERM
    except KeyboardInterrupt as err:  # setting up, or the final validation of a resumed run: no iteration was lost
        signum = getattr(err, "signum", signal.SIGINT)
        print(
            f"interrupted by {signal.Signals(signum).name} outside the training iterations: no training was lost; "
            f"--resume continues from {Path(config.out) / 'checkpoint.pt'} if there is one",
            file=sys.stderr,
        )
        return 128 + signum
    return 0
