"""Ctrl-C and SIGTERM (what SLURM, Kubernetes and cloud preemption send before SIGKILL) stop a training run the same
way: as a ``KeyboardInterrupt`` in the main thread, which the loop turns into a checkpoint and one line
(:mod:`anncore.engine.train`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


# -------------------------------------------------------------------------------------------------------- training
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training; the message says which checkpoint holds the work done (``--resume``
    continues), ``signum`` which signal it was (the exit status is ``128 + signum``)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class Preempted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while :func:`train` runs, as Python raises ``KeyboardInterrupt`` for
    Ctrl-C, so that both stop a run the same way (module docstring)."""

    signum = signal.SIGTERM


def _raise_preempted(signum: int, frame: object) -> None:
    raise Preempted(f"signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Run the body with SIGTERM raising :class:`Preempted` instead of ending the process on the spot; the handler
    in place before is restored after. Only the main thread can install signal handlers; elsewhere (a run started
    in a thread) SIGTERM keeps its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_preempted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def worker_stops_on_sigterm(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a SIGTERM sent to the whole process group (SLURM does) makes a worker end as
    PyTorch's workers end on Ctrl-C (a ``KeyboardInterrupt`` their loop takes as the order to stop, exit status 0),
    not die of the signal, which the main process would report as a crashed worker instead of the preemption. (Under
    the default fork start method the workers inherit this from :func:`sigterm_raises` anyway; spawned ones need it.)"""
    signal.signal(signal.SIGTERM, _raise_preempted)
