"""The import layers of docs/architecture.md hold: the import-linter contracts in pyproject.toml
are kept, no module takes part in an import cycle, and no function imports a project module.

The contracts check the direction between layers; the two walks below check what they cannot
see. A cycle inside one layer (or inside one ``:`` group of siblings) passes a layers contract,
and a function-level import is how a cycle usually hides: it makes an upward import work at
run time while the module-level graph looks clean. Both walks read every ``import`` statement
of the package with :mod:`ast` (module level and inside functions alike), skipping only
``if TYPE_CHECKING:`` blocks, which are type hints and never run. Lazy imports of optional
third-party packages are fine; these walks only look at ``lightning_rl`` modules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_rl
from lightning_rl import offline, registry
from lightning_rl._imports import import_object
from lightning_rl.algorithms.base import Algorithm
from lightning_rl.connectors.base import Connector
from lightning_rl.envs import external

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the docs extra brings tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(lightning_rl.__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute dotted names an import statement may refer to (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if MODULES[module].name != "__init__.py":
            parts = parts[:-1]  # a module's relative imports start from its package
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _project_module(name: str) -> str | None:
    """The project module ``name`` refers to (a name inside a module resolves to the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported project module, line, inside a function)`` for every import ``module`` runs."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child):
                for orelse in getattr(child, "orelse", []):
                    visit(orelse, in_function)
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import | ast.ImportFrom):
                targets = set()
                for name in _imported_names(module, child):
                    if name == PACKAGE or not name.startswith(PACKAGE + "."):
                        continue
                    target = _project_module(name)
                    # importing a name from a package's own __init__ is no edge to itself
                    if target and target != module and not module.startswith(target + "."):
                        targets.add(target)
                found.extend((target, child.lineno, nested) for target in sorted(targets))
            visit(child, nested)

    visit(ast.parse(MODULES[module].read_text(), filename=str(MODULES[module])), False)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    components.append(sorted(component))
    return components


def test_the_walk_sees_the_package():
    # Guards the walks below against passing because they read nothing.
    assert len(MODULES) > 100
    assert "lightning_rl.env_runners.env_runner" in {t for t, _, _ in GRAPH["lightning_rl.policy"]}
    assert "lightning_rl.algorithms.base" in {t for t, _, _ in GRAPH["lightning_rl.lightning_cli"]}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_imports_a_project_module():
    lazy = [
        f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}"
        for module, imports in GRAPH.items()
        for target, line, in_function in imports
        if in_function
    ]
    assert not lazy, (
        "Function-level imports of project modules (a cycle in disguise: import at module level, "
        "or pass an object down; lazy imports are for optional third-party packages):\n" + "\n".join(lazy)
    )


def test_no_import_cycles():
    edges = {module: {target for target, _, _ in imports} for module, imports in GRAPH.items()}
    cycles = _cycles(edges)
    assert not cycles, "Import cycles (each list imports itself round):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_the_import_linter_contracts_are_kept():
    # In a subprocess: import-linter builds its own import graph and prints with rich.
    script = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "0 broken" in report and "4 kept" in report, report


def test_the_contracts_cover_every_top_level_module():
    # A new top-level module or package must be placed in a layer, or the contract skips it.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    top_level = {m for m in MODULES if m.count(".") == 1}
    assert top_level - placed == set(), "place these modules in a layer of [tool.importlinter]"
    assert placed - top_level == set(), "these layer entries name no module"


def test_lazy_exports_never_reach_up():
    # A package's lazy exports are imports too: a low package may only export its own modules.
    for package in (offline, external):
        outside = {m for m in package._EXPORTS.values() if not m.startswith(package.__name__ + ".")}
        assert not outside, f"{package.__name__} exports names of higher modules {outside}"
    assert all(m in MODULES for m in lightning_rl._EXPORTS.values())
    assert all(getattr(lightning_rl, name) is not None for name in lightning_rl._EXPORTS)


def test_the_registry_checks_subclasses_of_the_real_base_classes():
    # The registry is core machinery and names the base classes by path; they must stay true.
    assert import_object(registry.ALGORITHM_BASE) is Algorithm
    assert import_object(registry.CONNECTOR_BASE) is Connector
    with pytest.raises(TypeError, match=r"lightning_rl\.algorithms\.base\.Algorithm"):
        registry.algorithms.register("not-an-algorithm", Connector)
    with pytest.raises(TypeError, match=r"lightning_rl\.connectors\.base\.Connector"):
        registry.connectors.register("not-a-connector", Algorithm)
