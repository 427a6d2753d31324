"""pyproject.toml is the one source of dependencies; environment.yml must name the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip"}
PIP_ONLY = {"cityscapesscripts", "playwright"}  # come through `pip install -e .[dev]` in environment.yml


def names(requirements):
    return {re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_environment_yml_names_the_pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = names(project["dependencies"])
    dev = names(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = {CONDA_NAMES.get(n, n) for n in names(d for d in env["dependencies"] if isinstance(d, str))} - CONDA_ONLY
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[dev]"]
    assert conda | PIP_ONLY == runtime | dev, "environment.yml and pyproject.toml name different packages"
    assert not conda & PIP_ONLY
