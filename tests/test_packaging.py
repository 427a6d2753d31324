"""pyproject.toml is the one source of dependencies: environment.yml repeats it (names and version bounds), the core
group holds exactly what the library imports, and every third-party import of anncore is declared where it belongs."""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

import anncore

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip"}
SELF_INSTALL = "-e .[dev]"  # the last pip entry of environment.yml: the project itself, editable
CORE = {"torch", "torchvision", "numpy", "pillow", "pyyaml", "tqdm"}
# the modules behind the notebooks may import the `course` extra (the course layer, and the ablation's pandas
# tables); every other module only the core group
COURSE_MODULES = {"analysis/ablation.py"}
IMPORT_NAMES = {"PIL": "pillow", "yaml": "pyyaml"}  # import name -> distribution name, where they differ


def requirements(group: str | None = None) -> dict[str, SpecifierSet]:
    """Name -> version specifier of the core dependencies (``group=None``) or of one optional group, with a
    self-reference such as ``anncore[course]`` replaced by that group's requirements."""
    entries = PROJECT["dependencies"] if group is None else PROJECT["optional-dependencies"][group]
    found: dict[str, SpecifierSet] = {}
    for entry in entries:
        requirement = Requirement(entry)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(PROJECT["name"]):
            for extra in sorted(requirement.extras):
                found |= requirements(extra)
            continue
        assert name not in found, f"pyproject.toml names {name} twice"
        found[name] = requirement.specifier
    return found


def all_requirements() -> dict[str, SpecifierSet]:
    """Every dependency of pyproject.toml: core and all optional groups."""
    found = requirements()
    for group in PROJECT["optional-dependencies"]:
        found |= requirements(group)
    return found


def conda_requirement(spec: str) -> tuple[str, SpecifierSet]:
    """``pytorch>=2.4`` -> (``torch``, ``>=2.4``): conda-forge names mapped to PyPI names."""
    name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip()).groups()
    name = canonicalize_name(name)
    return CONDA_NAMES.get(name, name), SpecifierSet(version)


def environment_requirements() -> dict[str, SpecifierSet]:
    """Name -> version specifier of every package environment.yml installs (conda-forge and pip entries)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str) and re.split(r"[<>=!~ ]", d)[0] not in CONDA_ONLY]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml should have one pip section"
    pip = pip_sections[0]
    assert pip[-1] == SELF_INSTALL, f"environment.yml's pip section should end with {SELF_INSTALL!r}"
    found: dict[str, SpecifierSet] = {}
    entries = [conda_requirement(spec) for spec in conda]
    entries += [(canonicalize_name(r.name), r.specifier) for r in map(Requirement, pip[:-1])]
    for name, specifier in entries:
        assert name not in found, f"environment.yml names {name} twice"
        found[name] = specifier
    return found


def shown(specifier: SpecifierSet | None) -> str:
    return "absent" if specifier is None else str(specifier) or "any version"


def test_environment_yml_repeats_every_pyproject_dependency_with_its_version_bounds():
    project, env = all_requirements(), environment_requirements()
    differences = [
        f"{name}: pyproject.toml {shown(project.get(name))}, environment.yml {shown(env.get(name))}"
        for name in sorted(project.keys() | env.keys())
        if project.get(name) != env.get(name)
    ]
    assert not differences, "environment.yml and pyproject.toml differ:\n" + "\n".join(differences)


def test_dev_includes_course():
    assert requirements("course").items() <= requirements("dev").items()


def test_core_dependencies_are_what_the_library_needs():
    assert set(requirements()) == CORE


def module_level_imports(path: Path) -> set[str]:
    """Top-level names of the third-party packages ``path`` imports when it is imported: the import statements of
    the module body itself (not those in functions, nor under ``if TYPE_CHECKING:``)."""
    names = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "anncore"}


def library_modules() -> list[tuple[Path, bool]]:
    """(path, is a course module) of every module of anncore, its subpackages included."""
    paths = sorted((ROOT / "anncore").rglob("*.py"))
    package = ROOT / "anncore"

    def is_course(path: Path) -> bool:
        inside = path.relative_to(package).as_posix()
        return inside.startswith("course/") or inside in COURSE_MODULES

    return [(path, is_course(path)) for path in paths]


def test_every_module_level_import_is_declared_in_the_right_group():
    core, course = requirements(), requirements("course")
    assert library_modules()
    wrong = []
    for path, is_course in library_modules():
        allowed, group = (core | course, "core or course") if is_course else (core, "core")
        for name in sorted(module_level_imports(path)):
            distribution = canonicalize_name(IMPORT_NAMES.get(name, name))
            if distribution not in allowed:
                wrong.append(f"{path.relative_to(ROOT)} imports {name} ({distribution}), not a {group} dependency")
    assert not wrong, "\n".join(wrong)


def test_core_modules_import_without_the_course_extra():
    """The source check above, run: every core module (bench.py behind `python -m anncore bench` among them)
    imports with the notebook packages missing, so also nothing it imports from anncore needs them."""
    blocked = ["pandas", "matplotlib", "seaborn", "ipywidgets", "papermill", "nbformat", "IPython"]
    modules = []
    for path, is_course in library_modules():
        parts = path.relative_to(ROOT).with_suffix("").parts
        if not is_course:
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    code = f"import importlib, sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
    code += f"for module in {modules!r}:\n    importlib.import_module(module)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_version_flag_prints_the_version():
    assert PROJECT["version"] == anncore.__version__
    result = subprocess.run(
        [sys.executable, "-m", "anncore", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"anncore {anncore.__version__}\n"


def test_the_version_is_written_once_in_pyproject(monkeypatch):
    """``anncore.__version__`` is read, not written: from the installed metadata, else from pyproject.toml (a source
    tree on ``PYTHONPATH``)."""
    assert not re.search(r"^__version__ = ['\"]", (ROOT / "anncore" / "__init__.py").read_text(), re.MULTILINE)

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(anncore, "version", not_installed)
    assert anncore._version() == PROJECT["version"]


def test_console_script_is_the_cli():
    assert PROJECT["scripts"] == {"anncore": "anncore.__main__:main"}


def test_mit_license():
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def locked_versions() -> dict[str, str]:
    """Name -> exact version of every package ``requirements.lock`` pins (its comment lines skipped)."""
    pins: dict[str, str] = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line.strip())
        assert match, f"requirements.lock:{number}: {line!r} is not an exact pin name==version (make lock writes them)"
        name = canonicalize_name(match[1])
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = match[2]
    return pins


def lock_problems(pins: dict[str, str], sources: dict[str, dict[str, SpecifierSet]]) -> list[str]:
    """Every declared dependency (per source file) that ``pins`` lacks or pins outside its bounds."""
    return [
        f"{name}: {source} says {shown(specifier)}, requirements.lock {pins.get(name, 'has no pin')}"
        for source, declared in sources.items()
        for name, specifier in sorted(declared.items())
        if name not in pins or not specifier.contains(pins[name], prereleases=True)
    ]


def test_the_lock_pins_every_dependency_within_the_declared_bounds():
    """requirements.lock (the versions the committed outputs were made with) and pyproject.toml / environment.yml
    must agree: every declared dependency pinned, at a version its bounds allow."""
    pins = locked_versions()
    assert canonicalize_name(PROJECT["name"]) not in pins, "the lock pins the project itself"
    problems = lock_problems(
        pins, {"pyproject.toml": all_requirements(), "environment.yml": environment_requirements()}
    )
    assert not problems, "run `make lock` after changing the bounds:\n" + "\n".join(problems)


def test_the_lock_check_names_a_pin_outside_the_bounds_and_a_missing_one():
    declared = {"pyproject.toml": {"numpy": SpecifierSet(">=1.24,<2.4"), "tqdm": SpecifierSet(">=4.65")}}
    assert lock_problems({"numpy": "2.4.6"}, declared) == [
        "numpy: pyproject.toml says <2.4,>=1.24, requirements.lock 2.4.6",
        "tqdm: pyproject.toml says >=4.65, requirements.lock has no pin",
    ]


def test_make_installs_with_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c requirements.lock -e '.[dev]'" in makefile
    assert re.search(r"^\$\(STAMP\): pyproject\.toml requirements\.lock$", makefile, re.M), "a new lock reinstalls"
