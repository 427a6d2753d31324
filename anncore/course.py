"""The main job: execute every course notebook headless with papermill (``python -m anncore course``).

Each ``notebooks/NN_slug.ipynb`` runs with the parameters in ``params/NN_slug.yaml`` when that file exists (else its
own CPU-sized defaults) into ``runs/<timestamp>/``; a summary of time and status per notebook is printed and written
to ``summary.json``. ``--in-place`` re-executes the committed notebooks themselves and strips run metadata, which is
how their committed outputs are refreshed (``make notebooks``).
"""

from __future__ import annotations

import ast
import json
import shutil
import time
from pathlib import Path

import nbformat
import papermill
import yaml

from anncore.errors import BadInput, MissingInput
from anncore.files import utc_stamp, write_json

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


#: Kernel flags: its start-up warnings (a local kernel "running over TCP without encryption") would bury the summary.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


class CourseInterrupted(KeyboardInterrupt):
    """Ctrl-C during the course; the message says where, and where the summary of the finished notebooks is."""


def run_course(
    notebooks_dir: Path = Path("notebooks"),
    params_dir: Path = Path("params"),
    out_root: Path = Path("runs"),
    in_place: bool = False,
    only: list[str] | None = None,
) -> list[dict]:
    """Execute the notebooks in order; returns (and prints) one summary row per notebook. Stops at the first
    failure, since later notebooks build on earlier ones."""
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
    rows = []
    for nb in notebooks:
        target = out_dir / nb.name
        start = time.perf_counter()
        status = "ok"
        try:
            papermill.execute_notebook(
                str(nb), str(target), parameters=params[nb], cwd=str(notebooks_dir), progress_bar=False,
                extra_arguments=QUIET_KERNEL,
            )  # fmt: skip
        except papermill.PapermillExecutionError as err:  # the kernel, hit by the same Ctrl-C, reports it as an error
            status = "interrupted" if err.ename == "KeyboardInterrupt" else f"failed: {err.ename}: {err.evalue}"
        except KeyboardInterrupt:
            status = "interrupted"
        row = {"notebook": nb.name, "seconds": round(time.perf_counter() - start, 1), "status": status}
        if not in_place:
            row.update(_collect_metrics(nb, params[nb], notebooks_dir, out_dir))
        rows.append(row)
        miou = f"  mIoU {row['miou']:.4f}" if row.get("miou") is not None else ""
        print(f"{nb.name:<40} {row['seconds']:>7.1f} s  {status}{miou}", flush=True)
        if in_place:
            strip_run_metadata(target)
        if status != "ok":
            break
    summary = "" if in_place else f"; summary of what ran: {write_json(rows, out_dir / 'summary.json')}"
    if rows[-1]["status"] == "interrupted":
        raise CourseInterrupted(f"interrupted in {rows[-1]['notebook']} after {rows[-1]['seconds']} s{summary}")
    print(f"outputs in {out_dir.resolve()}")
    return rows
