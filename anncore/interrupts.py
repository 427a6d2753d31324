"""The signals that ask a run to stop, and holding them back while a file is written.

Training turns Ctrl-C and SIGTERM into a checkpoint at the interrupted iteration (:mod:`anncore.engine.train`);
:func:`interrupts_held_back` makes sure neither lands inside a checkpoint write
(:func:`anncore.models.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The signals that ask a run to stop: Ctrl-C, and SIGTERM, what SLURM, Kubernetes and cloud preemption send
#: (seconds) before SIGKILL.
INTERRUPTS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_held_back() -> Iterator[None]:
    """Run the body with SIGINT and SIGTERM deferred: one that arrives during it is delivered again, to the handler
    that was in place (Python's ``KeyboardInterrupt`` for SIGINT by default, training's for SIGTERM, or an enclosing
    ``interrupts_held_back``), once the body is done; a body that raises drops it (its error goes up instead).

    Only the main thread can install signal handlers; elsewhere the body runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler not set from Python; the default stands in
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    for pending in dict.fromkeys(received):  # each signal once, in the order they came
        signal.raise_signal(pending)
