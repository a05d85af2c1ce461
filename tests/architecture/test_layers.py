"""The floors of the house: every import of every sparsekit module points down the order.

Each module is read with :mod:`ast` (imports inside functions and ``TYPE_CHECKING`` blocks
included), so a cycle cannot hide behind a lazy import. A module may import its own
subpackage's modules (without a cycle) and any floor below its own, never one beside or above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sparsekit"

#: The floors, top to bottom. A module may import only floors strictly below its own (and its
#: own subpackage). Floors that share a row stand side by side and may not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("",),  # the package's own __init__: the public facade over every floor below the CLI
    ("studies", "interop", "testing"),
    ("runs",),
    ("evaluation",),
    ("training",),
    ("methods",),
    ("core", "data", "coders"),
    ("backend",),
    # Collectives across processes (data-parallel training): the step, the upkeep and the
    # trainer sum over ranks through it, and the backend's NCCL communicator implements it,
    # so it sits below them all; it knows only NumPy and, when constructed, mpi4py.
    ("parallel",),
    ("files", "layout", "_version"),
    ("errors",),
)

#: Old import paths kept for plugins and users (each warns, or is public API): they sit
#: above everything, and nothing inside the package may import them.
ALIASES = frozenset(
    {
        "sparsekit.sklearn",
        "sparsekit.activations",
        "sparsekit.saelens",
        "sparsekit.gradcheck",
        "sparsekit.methods.base",
    }
)

#: Imports of sparsekit modules inside functions: only the CLI loads its commands lazily.
LAZY_ALLOWED = ("cli",)


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for each sparsekit import of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    local = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(
                sub.lineno for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))
            )
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            hit = _resolve(target) if target.startswith("sparsekit") else None
            if hit and hit != module:
                found.append((hit, node.lineno, node.lineno in local))
    return found


def _floor(module: str) -> tuple[int, str]:
    """The floor index and the subpackage (or leaf module) ``module`` belongs to."""
    part = module.split(".")[1] if "." in module else ""
    for index, row in enumerate(FLOORS):
        if part in row:
            return index, part
    raise AssertionError(f"{module} belongs to no floor: add its subpackage to FLOORS")


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _line, _lazy in _imports(m):
            if not m.startswith(target + "."):  # a package's __init__ runs first anyway
                graph[m].add(target)
    return graph


def test_every_import_points_down() -> None:
    wrong = []
    for m in sorted(MODULES):
        if m in ALIASES:
            continue
        mine, part = _floor(m)
        for target, line, _lazy in _imports(m):
            if m.startswith(target + ".") and target != "sparsekit":
                continue
            if target in ALIASES:
                wrong.append(f"{m}:{line} imports the old path {target}")
                continue
            theirs, their_part = _floor(target)
            if their_part == part and part != "":
                continue  # within one subpackage: only cycles are wrong (below)
            if theirs <= mine:
                wrong.append(f"{m}:{line} imports {target} (floor {their_part or 'sparsekit'})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_inside_functions_only_in_the_cli() -> None:
    lazy = [
        f"{m}:{line} imports {target} inside a function"
        for m in sorted(MODULES)
        if m not in ALIASES and _floor(m)[1] not in LAZY_ALLOWED
        for target, line, inside in _imports(m)
        if inside
    ]
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize("package", sorted({m.split(".")[1] for m in MODULES if m.count(".") >= 1}))
def test_each_subpackage_says_what_it_owns(package: str) -> None:
    init = PACKAGE / package / "__init__.py"
    if not init.exists():
        pytest.skip(f"{package} is a module, not a subpackage")
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"sparsekit/{package}/__init__.py has no docstring saying what it owns"
