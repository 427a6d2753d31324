"""The main job: execute every course notebook headless with papermill (``python -m anncore course``).

Each ``notebooks/NN_slug.ipynb`` runs with the parameters in ``params/NN_slug.yaml`` when that file exists (else its
own CPU-sized defaults) into ``runs/<timestamp>/``; a summary of time and status per notebook is printed and written
to ``summary.json``. ``--in-place`` re-executes the committed notebooks themselves and strips run metadata, which is
how their committed outputs are refreshed (``make notebooks``).

A notebook that fails (a cell's error, a kernel that died, e.g. killed for memory, a cell over ``--cell-timeout``,
Ctrl-C) ends with one line naming it, the cell and the cause; its executed copy is kept up to that cell. The run then
stops, listing the notebooks it skipped, or with ``--keep-going`` runs the rest (Ctrl-C always stops it); the
summary is written either way (after every notebook, so even a killed run leaves one) and the command exits non-zero.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import nbformat
import papermill
import yaml
from papermill.execute import raise_for_execution_errors

from anncore.errors import BadInput, MissingInput
from anncore.files import disk_full, utc_stamp, write_json

# Notebook and cell metadata that records a run rather than the content; stripped before committing.
_RUN_METADATA = ("papermill", "execution", "widgets")


def strip_run_metadata(path: Path) -> None:
    """Remove papermill/execution/widget metadata from a notebook file, keeping tags (the ``parameters`` cell)."""
    nb = nbformat.read(path, as_version=4)
    for key in _RUN_METADATA:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
    nbformat.write(nb, path)


def declared_parameters(notebook: Path) -> dict[str, object]:
    """Names and default values assigned in the notebook's ``parameters``-tagged cell (literals only)."""
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise BadInput(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    declared = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            declared[node.targets[0].id] = ast.literal_eval(node.value)
    return declared


def _same_kind(default: object, value: object) -> bool:
    """YAML values against notebook defaults: ints pass for floats, lists for tuples, anything for ``None``."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))


def load_parameters(path: Path, notebook: Path) -> dict:
    """Papermill parameters for ``notebook`` from a YAML mapping (a missing file gives none), checked at once
    against the notebook's ``parameters`` cell: an unknown name or a value of the wrong type is a ``ValueError``
    naming the parameter, the file and what was expected."""
    if not path.exists():
        return {}
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise BadInput(f"{path}: not valid YAML ({getattr(err, 'problem', None) or err})") from err
    if not isinstance(params, dict):
        raise BadInput(f"{path}: expected a YAML mapping of parameter names to values, got {type(params).__name__}")
    declared = declared_parameters(notebook)
    for name, value in params.items():
        if name not in declared:
            raise BadInput(f"{path}: unknown parameter {name!r} for {notebook.name}; it declares {sorted(declared)}")
        if not _same_kind(declared[name], value):
            raise BadInput(
                f"{path}: parameter {name!r} must be like the default {declared[name]!r} "
                f"({type(declared[name]).__name__}), got {value!r} ({type(value).__name__})"
            )
    return params


def _collect_metrics(notebook: Path, params: dict, notebooks_dir: Path, out_dir: Path) -> dict:
    """A notebook that writes ``OUT_DIR/metrics.json`` (training, evaluation) gets it copied next to the executed
    notebook as ``<stem>_metrics.json``, and its final mIoU into the summary."""
    out = params.get("OUT_DIR", declared_parameters(notebook).get("OUT_DIR"))
    metrics_file = notebooks_dir / str(out) / "metrics.json" if out else None
    if metrics_file is None or not metrics_file.is_file():
        return {}
    metrics = json.loads(metrics_file.read_text())
    shutil.copyfile(metrics_file, out_dir / f"{notebook.stem}_metrics.json")
    return {"miou": metrics.get("final_miou", metrics.get("miou")), "metrics": str(metrics_file.resolve())}


#: Kernel flags: its start-up warnings (a local kernel "running over TCP without encryption") and the traceback of a
#: reply it cannot send when stopped mid-cell (a timeout) would bury the summary; a cell's errors are in the notebook.
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


class CourseInterrupted(KeyboardInterrupt):
    """Ctrl-C during the course; the message says where, and where the summary of the finished notebooks is."""


class PeakMemory:
    """The peak resident memory of one process among this one's children (the kernel, its DataLoader workers) while a
    notebook runs: sampled with psutil where it is installed, and read from ``getrusage`` (exact, for a child that
    has ended: a dead kernel) where that rose during the notebook above this process's own peak (a child's count
    starts from its parent's size at the fork). ``None`` when neither knows."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.sampled = 0
        self._before = _max_rss()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        try:
            import psutil  # installed with ipykernel; optional here
        except ImportError:
            return self
        self._thread = threading.Thread(target=self._sample, args=(psutil,), daemon=True, name="course-peak-memory")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _sample(self, psutil: ModuleType) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                for child in me.children(recursive=True):
                    self.sampled = max(self.sampled, child.memory_info().rss)
            except Exception:  # noqa: BLE001 - a child that ended between listing and reading; sample again
                pass
            self._stop.wait(self.interval_s)

    @property
    def peak_bytes(self) -> int | None:
        after, mine = _max_rss(), _max_rss("RUSAGE_SELF")
        ended = 0
        if after is not None and self._before is not None and mine is not None and after > max(self._before, mine):
            ended = after
        return max(self.sampled, ended) or None


def _max_rss(who: str = "RUSAGE_CHILDREN") -> int | None:
    """The peak resident set, in bytes, of this process (``RUSAGE_SELF``) or of the largest of its ended children
    (``RUSAGE_CHILDREN``); ``None`` without ``resource`` (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(getattr(resource, who)).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def _total_memory() -> int | None:
    """This machine's physical memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"


def dead_kernel_cause(peak_bytes: int | None, total_bytes: int | None = None) -> str:
    """Why a kernel dies without a word, the likeliest first, with the peak memory seen when it is known."""
    if peak_bytes is None:
        seen = "its peak memory is not known"
    else:
        seen = f"its peak was {_gib(peak_bytes)}" + (f" of {_gib(total_bytes)}" if total_bytes else "")
    return f"the kernel died: likely out of memory ({seen}), else a crash in native code or a kill from outside"


class _QuietKernelDeath(logging.Filter):
    """Drops nbclient's own log lines about a dead or timed-out kernel: the runner's one line says it instead."""

    SAID = ("Kernel died", "Timeout waiting for execute reply", "Interrupting kernel")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.SAID)


def started_cell(target: Path) -> int | None:
    """0-based index, in the executed notebook papermill kept, of the last cell that started; ``None`` without one."""
    try:
        nb = nbformat.read(target, as_version=4)
    except (OSError, ValueError):
        return None
    started = [i for i, cell in enumerate(nb.cells) if cell.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def _mark_failed_cell(target: Path, index: int, ename: str, evalue: str) -> None:
    """Write the cause into the kept notebook as that cell's error output, with papermill's own markers (a note at
    the top linking to the cell), as papermill does for a cell's error."""
    try:
        nb = nbformat.read(target, as_version=4)
    except (OSError, ValueError):
        return
    cell = nb.cells[index]
    if cell.cell_type != "code":
        return
    cell.outputs.append(nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]))
    try:
        raise_for_execution_errors(nb, str(target))
    except papermill.PapermillExecutionError:
        pass


def _cell_position(cell: int | None) -> str:
    """`` at cell N`` (1-based, in the executed notebook, papermill's note cells not counted), or nothing."""
    return "" if cell is None else f" at cell {cell}"


def _execute(nb: Path, target: Path, parameters: dict, cwd: Path, cell_timeout: int | None) -> dict:
    """Run one notebook; the row's ``status`` (ok, failed, interrupted) and, when it did not finish, the 1-based
    ``cell`` of the executed notebook it stopped at and the ``cause``."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError  # papermill's engine, installed with it

    quiet = _QuietKernelDeath()
    logging.getLogger("papermill").addFilter(quiet)
    watch = PeakMemory()
    index: int | None = None
    row: dict[str, object]
    timeout = {} if cell_timeout is None else {"execution_timeout": cell_timeout}
    try:
        with watch:
            papermill.execute_notebook(
                str(nb), str(target), parameters=parameters, cwd=str(cwd), progress_bar=False,
                extra_arguments=QUIET_KERNEL, **timeout,
            )  # fmt: skip
        return {"status": "ok"}
    except papermill.PapermillExecutionError as err:  # the kernel, hit by the same Ctrl-C, reports it as an error
        index = err.cell_index
        evalue = (str(err.evalue).strip().splitlines() or [""])[0]
        if err.ename == "KeyboardInterrupt":
            row = {"status": "interrupted", "cause": "Ctrl-C"}
        else:
            row = {"status": "failed", "cause": f"{err.ename}: {evalue}" if evalue else err.ename}
    except KeyboardInterrupt:
        index = started_cell(target)
        row = {"status": "interrupted", "cause": "Ctrl-C"}
    except DeadKernelError:
        index, peak = started_cell(target), watch.peak_bytes
        cause = dead_kernel_cause(peak, _total_memory())
        row = {"status": "failed", "cause": cause} | ({} if peak is None else {"peak_memory_mib": round(peak / 2**20)})
        if index is not None:
            _mark_failed_cell(target, index, "DeadKernelError", cause)
    except CellTimeoutError:
        index = started_cell(target)
        limit = f"ran past --cell-timeout {cell_timeout} s" if cell_timeout else "stopped sending its output"
        cause = f"the cell {limit}; the kernel was stopped"
        row = {"status": "failed", "cause": cause}
        if index is not None:
            _mark_failed_cell(target, index, "CellTimeoutError", cause)
    except Exception as err:  # noqa: BLE001 - the kernel would not start, say: that notebook failed, the run goes on
        index = started_cell(target)
        message = (str(err).strip().splitlines() or [""])[0]
        row = {"status": "failed", "cause": f"{type(err).__name__}: {message}" if message else type(err).__name__}
        if disk_full(err):  # papermill saves the executed notebook after every cell: name where it was writing
            row["cause"] = f"no space left on the device of {target.parent} while writing {target.name}"
    finally:
        logging.getLogger("papermill").removeFilter(quiet)
    return row | ({} if index is None else {"cell": index + 1})


def _print_row(row: dict) -> None:
    """The notebook's line of the table: time and status; where it stopped and why; its mIoU."""
    if row["status"] == "skipped":
        print(f"{row['notebook']:<40} {'':>9}  skipped ({row['cause']})", flush=True)
        return
    where = f"{_cell_position(row.get('cell'))}: {row['cause']}" if "cause" in row else ""
    miou = f"  mIoU {row['miou']:.4f}" if row.get("miou") is not None else ""
    print(f"{row['notebook']:<40} {row['seconds']:>7.1f} s  {row['status']}{where}{miou}", flush=True)


def run_course(
    notebooks_dir: Path = Path("notebooks"),
    params_dir: Path = Path("params"),
    out_root: Path = Path("runs"),
    in_place: bool = False,
    only: list[str] | None = None,
    keep_going: bool = False,
    cell_timeout: int | None = None,
) -> list[dict]:
    """Execute the notebooks in order; returns (and prints) one summary row per notebook. Stops at the first
    failure, since later notebooks build on earlier ones, listing the rest as ``skipped``; ``keep_going`` runs them
    anyway. Ctrl-C stops the run (:class:`CourseInterrupted`) after writing the summary. ``cell_timeout`` (seconds)
    fails a notebook whose cell runs longer."""
    if cell_timeout is not None and cell_timeout <= 0:
        raise BadInput(f"--cell-timeout {cell_timeout}: expected a positive number of seconds")
    notebooks = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(prefix) for prefix in only)]
    if not notebooks:
        raise MissingInput(
            f"no notebooks named NN_slug.ipynb under {notebooks_dir.resolve()}"
            + (f" starting with {' or '.join(only)}" if only else "")
        )
    if not in_place and not params_dir.is_dir():
        raise MissingInput(f"--params {params_dir}: no such folder of NN_slug.yaml parameter files")
    # check every parameter file before running anything, so a typo fails at once, not after an hour of training
    params = {nb: {} if in_place else load_parameters(params_dir / f"{nb.stem}.yaml", nb) for nb in notebooks}
    out_dir = notebooks_dir if in_place else out_root / utc_stamp()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_file = None if in_place else out_dir / "summary.json"
    rows: list[dict] = []
    stopped: dict | None = None  # the row that ends the run
    for nb in notebooks:
        if stopped is not None:
            after = "the interrupt" if stopped["status"] == "interrupted" else f"{stopped['notebook']} failed"
            rows.append({"notebook": nb.name, "status": "skipped", "cause": f"not run: {after}"})
            _print_row(rows[-1])
            continue
        target = out_dir / nb.name
        start = time.perf_counter()
        result = _execute(nb, target, params[nb], notebooks_dir, cell_timeout)
        row = {"notebook": nb.name, "seconds": round(time.perf_counter() - start, 1)} | result
        if not in_place:
            row.update(_collect_metrics(nb, params[nb], notebooks_dir, out_dir))
        rows.append(row)
        _print_row(row)
        if in_place and target.is_file():
            strip_run_metadata(target)
        if summary_file is not None:  # after every notebook: a run killed from outside still leaves one
            write_json(rows, summary_file)
        if row["status"] == "interrupted" or (row["status"] != "ok" and not keep_going):
            stopped = row
    summary = "" if summary_file is None else f"; summary of what ran: {write_json(rows, summary_file)}"
    if stopped is not None and stopped["status"] == "interrupted":
        where = _cell_position(stopped.get("cell"))
        raise CourseInterrupted(f"interrupted in {stopped['notebook']}{where} after {stopped['seconds']} s{summary}")
    print(f"outputs in {out_dir.resolve()}" + ("" if summary_file is None else f", summary in {summary_file.name}"))
    return rows
