"""The package layout: the import graph of anncore's modules has no cycle, counting every import, including the ones
inside functions (a lazy import is no excuse for two modules that need each other)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anncore"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The anncore modules ``path`` imports anywhere in it (``from anncore.data import X`` names the package's
    ``__init__`` unless ``X`` is a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anncore"):
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= subs or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("anncore")}
    return found & modules


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    edges = {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}
    packages = {m for m in modules if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").is_file()}
    # a package's __init__ re-exports its submodules: a module importing a sibling through the package is not a cycle
    return {m: {t for t in targets if not (t in packages and m.startswith(t + "."))} for m, targets in edges.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: The layers from the bottom up (README, "Package layout"): a module may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("anncore.errors", "anncore.files", "anncore.outputs", "anncore.device", "anncore.interrupts", "anncore.progress"),
    ("anncore.nn",),
    ("anncore.data",),
    ("anncore.models",),
    ("anncore.engine",),
    ("anncore.analysis",),
    ("anncore.course",),
    ("anncore", "anncore.__main__"),
)


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``module``: the layer of the longest prefix that names it."""
    matches = [(len(prefix), i) for i, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} belongs to no layer of LAYERS: add it there and to the README's layout table"
    return max(matches)[1]


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets if layer_of(t) > layer_of(m))


def test_no_module_imports_a_higher_layer():
    assert upward_imports(graph()) == []


def test_the_layer_check_finds_an_upward_import():
    assert upward_imports({"anncore.nn.blocks": {"anncore.engine.train"}, "anncore.course.viz": {"anncore.nn"}}) == [
        "anncore.nn.blocks -> anncore.engine.train"
    ]


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 100, f"{init} needs a docstring: what the layer holds and what it may import"
