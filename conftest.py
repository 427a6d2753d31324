"""pytest configuration shared by the unit tests and the nbval notebook run."""


def pytest_collectstart(collector):
    """Notebook outputs that differ on every run and carry no result: widget views (random model ids) and HTML."""
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("application/vnd.jupyter.widget-view+json", "text/html")
