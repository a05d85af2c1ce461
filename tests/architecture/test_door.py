"""The one door for speed: every scheduling, blocking and thread decision sits in
``sparsekit/backend/`` (``docs/internals.md``, "The one door for speed").

Each module outside the backend is read with :mod:`ast` (imports inside functions included)
and may not

* import Numba, a thread or process pool (``threading``, ``concurrent.futures``,
  ``multiprocessing``), CuPy, threadpoolctl or SciPy's sparse kernels;
* call the thread splitter or read its sizes (``split_run``, ``cpu_threads``,
  ``PARALLEL_MIN_SIZE``, ...) or a pool API (``ThreadPoolExecutor``, ``Thread``, ...);
* define a module-level block size (a constant named ``*BLOCK_BYTES``, ``*_BLOCK``,
  ``*CHUNK``);
* hold a fused loop (``@fused.loop``) that is not a declared twin, written beside the
  formula it mirrors and the op that runs it;
* (a method) import another method's module for a kernel: only a method class may be taken
  from a sibling (Matryoshka subclasses BatchTopK).

The few exceptions are listed below, each with its reason.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sparsekit"
BACKEND = "sparsekit.backend"

#: Imports only the backend may make (a prefix matches its submodules).
FORBIDDEN_IMPORTS = (
    "numba",
    "threading",
    "concurrent",
    "multiprocessing",
    "cupy",
    "cupyx",
    "threadpoolctl",
    "scipy.sparse",
)

#: Names of the backend's thread and blocking machinery, and of pool APIs: code outside the
#: backend calls an op (``matmul``, ``split_elementwise``, a kernel) instead.
FORBIDDEN_NAMES = frozenset(
    {
        "split_run",
        "cpu_threads",
        "min_rows",
        "PARALLEL_MIN_SIZE",
        "PRODUCT_MIN_WORK",
        "products_split",
        "ThreadPoolExecutor",
        "ProcessPoolExecutor",
        "Thread",
        "Pool",
        "get_context",
    }
)

#: Module-level constants that size blocks of a kernel.
BLOCK_CONSTANT = re.compile(r"(BLOCK_BYTES|_BLOCK|CHUNK)$")

#: (module, import or name): why it may stay outside the backend.
ALLOWED: dict[tuple[str, str], str] = {
    # The studies run whole training jobs in worker processes: scheduling of runs, not of a
    # step; each job's own step then goes through the backend's threads.
    ("sparsekit.studies.jobs", "multiprocessing"): "compare's worker processes, one job each",
    ("sparsekit.studies.jobs", "get_context"): "the spawn context of those worker processes",
    # The CLI asks whether it runs on the main thread before installing signal handlers.
    ("sparsekit.cli.main", "threading"): "main-thread check for the SIGTERM handler",
    ("sparsekit.cli.stop", "threading"): "main-thread check for the Ctrl-C handler",
    # Memory bounds of a measure and file reads, not blocking of a kernel for speed.
    ("sparsekit.training.metrics", "COHERENCE_CHUNK"): "caps the Gram matrix's memory; the "
    "max over blocks is the same for any chunk, and `coherence(chunk=...)` is public",
    ("sparsekit.training.metrics", "COHERENCE_BLOCK_BYTES"): "the same cap in bytes, for wide "
    "dictionaries (H = 16,384: 64 MiB blocks instead of 500 MB)",
    ("sparsekit.data.idx", "_CHUNK"): "bytes read from a file at a time",
    ("sparsekit.data.download", "_CHUNK"): "bytes read from the network at a time",
    ("sparsekit.data.synthetic_sae", "CHUNK"): "rows drawn from one seed: part of the synthetic "
    "data's definition (another size draws other data), not a speed setting",
    # A formula, not a kernel: KL's loss includes the L2 weight penalty (UFLDL's objective).
    ("sparsekit.methods.kl", "l2_penalty"): "KL's objective includes the weight-decay term",
}

#: The fused loops allowed outside the backend: compiled twins of a formula of the math,
#: each in the module of the formula it mirrors (loop name → that formula).
DECLARED_TWINS: dict[str, dict[str, str]] = {
    "sparsekit.core.activations": {
        "_sigmoid_tail_loop": "sigmoid_tail",
        "_output_delta_loop": "sigmoid_output_delta",
        "_hidden_delta_loop": "sigmoid_hidden_delta",
        "_relu_hidden_delta_loop": "relu_hidden_delta",
    },
    "sparsekit.core.declarations": {"_add_scaled_loop": "add_scaled"},
    "sparsekit.coders.cd": {"_cd_rows_loop": "cd_sweeps"},
    "sparsekit.methods.kl": {"_kl_penalty_loop": "kl_penalty"},
    "sparsekit.methods.arora": {
        "_threshold_code_loop": "threshold_code",
        "_atom_update_loop": "atom_update",
    },
    "sparsekit.training.optim": {
        "_adam_loop": "_adam_update",
        "_momentum_loop": "Momentum.update_numpy",
        "_sgd_loop": "SGD.update_numpy",
    },
}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()
OUTSIDE = sorted(m for m in MODULES if m != BACKEND and not m.startswith(BACKEND + "."))


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text())


def _allowed(module: str, what: str) -> bool:
    return (module, what) in ALLOWED


def _decorator_name(node: ast.expr) -> str:
    """``fused.loop`` for ``@fused.loop`` and ``@fused.loop(fastmath=...)``."""
    if isinstance(node, ast.Call):
        node = node.func
    return ast.unparse(node)


def test_the_rules_see_every_module():
    assert "sparsekit.methods.ksparse" in OUTSIDE and "sparsekit.backend.threads" not in OUTSIDE
    assert len(OUTSIDE) > 50


@pytest.mark.parametrize("module", OUTSIDE)
def test_no_numba_threads_or_pools_outside_the_backend(module):
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = next(
                (f for f in FORBIDDEN_IMPORTS if name == f or name.startswith(f + ".")), None
            )
            if top and not _allowed(module, top):
                found.append(f"line {node.lineno}: import {name}")
    assert not found, f"{module} reaches past the backend: {found}"


@pytest.mark.parametrize("module", OUTSIDE)
def test_no_thread_splitting_outside_the_backend(module):
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.alias):
            name = node.asname or node.name.rpartition(".")[2]
        else:
            continue
        if name in FORBIDDEN_NAMES and not _allowed(module, name):
            found.append(f"line {getattr(node, 'lineno', '?')}: {name}")
    assert not found, f"{module} splits work itself: {found}"


@pytest.mark.parametrize("module", OUTSIDE)
def test_no_block_sizes_outside_the_backend(module):
    found = []
    for node in _tree(module).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and BLOCK_CONSTANT.search(target.id):
                if not _allowed(module, target.id):
                    found.append(f"line {node.lineno}: {target.id}")
    assert not found, f"{module} sizes a kernel's blocks itself: {found}"


def _fused_loops(module: str) -> dict[str, int]:
    return {
        node.name: node.lineno
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.FunctionDef)
        and any(_decorator_name(d) == "fused.loop" for d in node.decorator_list)
    }


def _has_fused_op(module: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef)
        and any(_decorator_name(d) == "fused.op" for d in node.decorator_list)
        for node in ast.walk(_tree(module))
    )


@pytest.mark.parametrize("module", OUTSIDE)
def test_fused_loops_outside_the_backend_are_declared_twins(module):
    loops = _fused_loops(module)
    declared = DECLARED_TWINS.get(module, {})
    assert set(loops) == set(declared), (
        f"{module}: fused loops {sorted(loops)} are not the declared twins {sorted(declared)}: "
        "a loop that is no formula's twin (data movement, counting, selection) belongs in "
        "sparsekit/backend/ as an op with its reference"
    )
    if not loops:
        return
    assert _has_fused_op(module), f"{module}: twins without the @fused.op that runs them"
    imported = importlib.import_module(module)
    for loop, formula in declared.items():
        owner = imported
        for part in formula.split("."):
            owner = getattr(owner, part, None)
        assert owner is not None, f"{module}.{loop} mirrors {formula}, which is not beside it"


def _method_modules() -> set[str]:
    """Modules of sparsekit.methods that register a method (implement the hook)."""
    return {
        m
        for m in MODULES
        if m.startswith("sparsekit.methods.")
        and "@hookimpl\ndef sparsekit_register_methods" in MODULES[m].read_text()
    }


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("sparsekit.methods")))
def test_a_method_takes_no_kernel_from_another_method(module):
    """Neither a method nor the code the methods share (``_sae``) imports a method's module
    for a kernel: selections and products are the backend's."""
    from sparsekit.core.contract import BaseMethod

    siblings = _method_modules() - {module}
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.module in siblings:
            source = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(source, alias.name, None)
                is_method = isinstance(value, type) and issubclass(value, BaseMethod)
                if not is_method and not _allowed(module, alias.name):
                    found.append(f"line {node.lineno}: {alias.name} from {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module == "sparsekit.methods":
            found += [
                f"line {node.lineno}: module {alias.name}"
                for alias in node.names
                if f"sparsekit.methods.{alias.name}" in siblings
            ]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name in siblings]
    assert not found, (
        f"{module} imports a sibling method's code (kernels live in backend/): {found}"
    )


def test_every_exception_is_still_needed():
    """An entry of ALLOWED that no module uses any more must go."""
    for (module, what), reason in ALLOWED.items():
        assert module in MODULES, f"ALLOWED names a missing module {module}"
        assert reason
        assert what in MODULES[module].read_text(), f"{module} no longer uses {what}: drop it"
