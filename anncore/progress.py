"""Progress of the long commands (``train``, ``evaluate``, ``cue``, ``ablate``, ``check-data``): one rule, here.

When standard output is a terminal, a tqdm bar (on standard error, tqdm's default). Otherwise (a batch job,
``nohup``, torchrun's log, a notebook) plain lines on standard output, flushed at once, each naming what is done,
out of how many, the time per item and the estimated time left (ETA)::

    evaluate: image 50/500 (10%), 9.31 s/image, ETA 1:09:50

How often a line comes: every ``every`` items when the caller asks (``train``: every ``log_every`` iterations);
otherwise when a tenth of the work more is done and :data:`MIN_LINE_SECONDS` have passed since the last line, or
after :data:`MAX_SILENCE_SECONDS` without one, and a closing line when the work is done: a loop of a few seconds
says one line, a long one about a dozen. Time is ``time.perf_counter``, the clock of :mod:`anncore.analysis.cost`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: Plain lines at most this often when the work passes a tenth (so that fast loops say one closing line).
MIN_LINE_SECONDS = 10.0
#: A plain line at least this often while the work goes on.
MAX_SILENCE_SECONDS = 30.0
#: The share of the work between two plain lines.
LINE_FRACTION = 0.1


def on_terminal() -> bool:
    """Whether standard output is a terminal (a bar is shown) rather than a file, pipe or notebook (plain lines)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def format_duration(seconds: float) -> str:
    """``seconds`` as tqdm shows times: ``42:07``, ``1:02:03``."""
    return tqdm.format_interval(max(0.0, seconds))


class Progress:
    """Progress of ``total`` items of work (module docstring): :meth:`update` after each, :meth:`write` for a
    message between them, :meth:`close` at the end (or use it as a context manager).

    Args:
        total: items of the whole work (``initial`` of them done already: a resumed run).
        desc: what the work is, first on every line (``evaluate``, ``ann/resnet101``).
        unit: what one item is (``image``, ``iteration``); lines say ``s/<unit>``.
        initial: items done before this process started; the ETA counts only the items done here.
        enabled: ``False`` shows nothing at all (processes other than rank 0 of a torchrun job).
        every: plain lines every ``every`` items (and at the last) instead of the timed rule.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "item",
        initial: int = 0,
        enabled: bool = True,
        every: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.desc, self.unit, self.every, self.clock = total, desc, unit, every, clock
        self.done = self.start = initial
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit) if enabled and on_terminal() else None
        self.plain = enabled and self.bar is None
        self.started = self.last_line = clock()
        self.next_mark = initial + self._step()

    def _step(self) -> float:
        return max(1.0, LINE_FRACTION * self.total)

    def eta(self) -> float | None:
        """Seconds left at the mean time per item so far in this process, ``None`` before the first item."""
        done_here = self.done - self.start
        if done_here <= 0:
            return None
        return (self.clock() - self.started) / done_here * max(0, self.total - self.done)

    def _due(self, now: float) -> bool:
        if self.done >= self.total:
            return True
        if self.every is not None:
            return self.done % self.every == 0
        if self.done >= self.next_mark and now - self.last_line >= MIN_LINE_SECONDS:
            return True
        return now - self.last_line >= MAX_SILENCE_SECONDS

    def line(self, stats: dict[str, str] | None = None) -> str:
        """The plain line for the work done so far, with ``stats`` (name -> shown value) after the count."""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {self.unit} {self.done}/{self.total}{share}"]
        parts += [f"{name} {value}" for name, value in (stats or {}).items()]
        done_here, elapsed = self.done - self.start, self.clock() - self.started
        if done_here > 0:
            parts.append(f"{elapsed / done_here:.3g} s/{self.unit}")
        eta = self.eta()
        if self.done >= self.total:
            parts.append(f"done in {format_duration(elapsed)}")
        elif eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return ", ".join(parts)

    def update(self, n: int = 1, stats: dict[str, str] | None = None) -> None:
        """``n`` more items done; ``stats`` (name -> shown value: loss, lr ...) go on the bar or the line."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if stats:
                self.bar.set_postfix(stats, refresh=False)
        elif self.plain:
            now = self.clock()
            if self._due(now):
                self.write(self.line(stats))
                self.last_line = now
                while self.next_mark <= self.done:
                    self.next_mark += self._step()

    def write(self, message: str) -> None:
        """Print ``message`` on a line of its own (under the bar when there is one); nothing when disabled."""
        if self.bar is not None:
            self.bar.write(message)
        elif self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        """Close the bar, if any (so that what follows starts on a line of its own)."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], total: int, desc: str, unit: str = "item", enabled: bool = True) -> Iterator[T]:
    """``items`` (``total`` of them), reported by a :class:`Progress` as each is consumed."""
    with Progress(total, desc, unit, enabled=enabled) as shown:
        for item in items:
            yield item
            shown.update()
