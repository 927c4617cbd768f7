"""The architecture as a test (DESIGN.md, "Layers"): every import between the project's modules,
read with `ast` (inside functions too), goes to the same layer or a lower one, and no chain of
imports comes back to where it started. Registries that load plugins by name (families,
network types, suites) do so through strings and are not imports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "models", "suites", "reports")

# Lowest first. A module belongs to the first prefix that matches its name.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("util", ("bench.atomic", "bench.paths", "bench.progress", "bench.results", "bench.weights")),
    ("data & model core", ("bench.data", "models.core")),
    ("networks", ("models.networks",)),
    ("sampling", ("models.sampling",)),
    ("families & metrics", ("models.families", "bench.metrics")),
    ("config", ("bench.config", "bench.device")),
    ("runtime", ("bench.store", "bench.store_checks", "bench.store_files", "bench.store_meta", "bench.distributed",
                 "bench.session", "bench.training")),
    ("suites", ("suites",)),
    ("entry points & reports", ("bench.app", "bench.__main__", "bench.train", "bench.export", "bench.manifest",
                                "bench.regress", "bench.tools", "bench", "models", "reports")),
)


def module_files(root: Path = REPO) -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from a.b import c` counts as a.b.c when c is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph(root: Path = REPO) -> dict[str, set[str]]:
    known = module_files(root)
    edges = {module: imports(path, known) - {module} for module, path in known.items()}
    # `from pkg import mod` also names pkg: a package's own __init__ is not a dependency on it
    return {module: {t for t in targets if not module.startswith(t + ".")} for module, targets in edges.items()}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS and to DESIGN.md")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def test_every_module_has_a_layer() -> None:
    for module in module_files():
        layer_of(module)


def test_no_import_goes_up_a_layer() -> None:
    assert upward_imports(graph()) == []


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_the_checks_catch_a_planted_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The two checks fail on a deliberately broken tree (a copy of the package layout)."""
    for package, source in (("models/core", "from models.families.pixel import PixelPipeline\n"),
                            ("models/families", "from models.core import planted\n")):
        folder = tmp_path / package
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / ("planted.py" if package == "models/core" else "pixel.py")).write_text(source)
    for package in ("bench", "suites", "reports"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "models" / "__init__.py").write_text("")
    edges = graph(tmp_path)
    assert upward_imports(edges) == [
        "models.core.planted (data & model core) imports models.families.pixel (families & metrics)"]
    assert cycles(edges) == [["models.core.planted", "models.families.pixel"]]


@pytest.mark.parametrize("module", ["bench.weights.resolver", "models.core.checkpoint"])
def test_layer_assignment_examples(module: str) -> None:
    assert layer_of(module) < layer_of("suites.smoke") < layer_of("bench.app")
