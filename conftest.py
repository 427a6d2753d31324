"""pytest configuration shared by the unit tests and the nbval notebook run."""

import os
import shutil
import tempfile

_DATA_HOME: list[str] = []


def pytest_configure(config):
    """Generated data sets go to a temporary folder, removed at the end, so `make test` writes nothing into the
    checkout (anncore.data.root reads $ANNCORE_DATA; nbval's kernels inherit it)."""
    if not os.environ.get("ANNCORE_DATA"):
        _DATA_HOME.append(tempfile.mkdtemp(prefix="anncore-data-"))
        os.environ["ANNCORE_DATA"] = _DATA_HOME[0]


def pytest_unconfigure(config):
    for folder in _DATA_HOME:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_collectstart(collector):
    """Notebook outputs that differ on every run and carry no result: widget views (random model ids) and HTML."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("application/vnd.jupyter.widget-view+json", "text/html")
