"""Output folders: a command writes only into a folder it holds, and never deletes or mixes what it did not write.

:func:`output_lock` keeps a second process from writing into a folder a run is using (training's ``--out``, and
every folder below); :func:`fresh_output` is the one rule for the commands that write a folder of results
(``evaluate``, ``export``, ``explore``): a folder holding files is refused unless ``--overwrite``, and then only what
an earlier run recorded writing there is replaced."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fnmatch import fnmatchcase as fnmatch
from pathlib import Path

from anncore.errors import BadInput, OutputInUse
from anncore.files import disk_full

LOCK_NAME = ".anncore.lock"
#: The files a command wrote into its ``--out`` (:func:`fresh_output`), one relative path per line.
OUTPUTS_NAME = ".anncore-outputs"


@contextmanager
def output_lock(folder: str | Path, what: str = "--out") -> Iterator[Path]:
    """Create ``folder`` and hold an exclusive lock on it (``folder/.anncore.lock``, POSIX ``flock``) for the body:
    a second process asking for the same folder gets :class:`~anncore.errors.OutputInUse` naming the holder's pid.

    ``folder`` that is a file, or lies under one, is a :class:`~anncore.errors.BadInput` naming ``what``. The lock
    goes with the process (a killed run leaves a stale file, not a held lock); the file is removed on release. On
    systems without ``fcntl`` (Windows) the folder is not locked."""
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            raise BadInput(f"{what} {folder}: {parent} is a file; expected a folder")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield folder
        return
    lock = folder / LOCK_NAME
    while True:
        handle = open(lock, "a+")  # held until the body ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputInUse(
                f"{what} {folder} is in use by a run in progress (pid {holder}); wait for it, or choose another {what}"
            ) from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()  # the holder released and removed the file between our open and our lock: lock the new one
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield folder
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a waiter that opened this file retries (above)
        handle.close()


def _files_under(folder: Path) -> set[str]:
    """Every file below ``folder`` as a POSIX path relative to it, the project's own bookkeeping files left out."""
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    return found - {LOCK_NAME, OUTPUTS_NAME}


def _recorded_outputs(folder: Path) -> set[str]:
    record = folder / OUTPUTS_NAME
    return set(record.read_text().split("\n")) - {""} if record.is_file() else set()


@contextmanager
def fresh_output(
    folder: str | Path, what: str = "--out", overwrite: bool = False, known: Sequence[str] = ()
) -> Iterator[Path]:
    """The one rule for a command's output folder: nothing it did not write is deleted or overwritten, and a new
    run's outputs are never mixed with an earlier run's.

    Holds :func:`output_lock` on ``folder`` for the body. A folder that already holds files is refused (one line
    naming one of them) unless ``overwrite``; with ``overwrite``, the files this project recorded writing there
    before (``folder/.anncore-outputs``) and those matching ``known`` (glob patterns of the command's own file names,
    for folders written before the record existed) are deleted first, and any other file is still refused. The files
    the body writes are recorded when it ends, even when it fails, so a later ``overwrite`` can clear them."""
    with output_lock(folder, what) as out:
        present = _files_under(out)
        ours = _recorded_outputs(out) | {name for name in present if any(fnmatch(name, p) for p in known)}
        if present and not overwrite:
            one = sorted(present)[0]
            raise OutputInUse(
                f"{what} {out} already holds {one} ({len(present)} files); choose a new or empty folder, or pass "
                "--overwrite to replace what an earlier run of this command wrote there"
            )
        foreign = sorted(present - ours)
        if foreign:
            raise OutputInUse(
                f"{what} {out} holds {foreign[0]}, which anncore did not write ({len(foreign)} such files); "
                "--overwrite replaces only earlier outputs: move that file or choose another folder"
            )
        for name in sorted(present):
            (out / name).unlink()
        for sub in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()
        try:
            yield out
        except OSError as err:
            if not disk_full(err):
                raise
            for name in _files_under(out):  # a half-written set of outputs: gone, so nothing mixes with it later
                (out / name).unlink(missing_ok=True)
            raise OSError(errno.ENOSPC, f"No space left on the device of {out}; this run's partial outputs there were "
                          "removed") from err  # fmt: skip
        finally:
            (out / OUTPUTS_NAME).write_text("".join(f"{name}\n" for name in sorted(_files_under(out))))
