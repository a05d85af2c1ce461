"""How the package is put together: no private names across modules, one table of exit codes.

These read the source (``ast``) or import every module; they train nothing.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import sparsekit
from sparsekit.errors import EXIT_CODES, SparsekitError, exit_code_table

ROOT = Path(sparsekit.__file__).resolve().parent
#: The one private module other modules may import: the helpers the SAE methods share
#: (``sparsekit/methods/_sae.py``, private to the methods package).
ALLOWED_PRIVATE = {"sparsekit.methods._sae", "sparsekit._version"}


def _modules() -> list[tuple[str, Path, ast.Module]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path, ast.parse(path.read_text(encoding="utf-8"))))
    return out


def _private(dotted: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def _imported_names(module: str, tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, "package.module.name")`` for every sparsekit name ``module`` imports."""
    found = []
    package = module if module == "sparsekit" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base == "sparsekit" or base.startswith("sparsekit."):
                found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("sparsekit")]
    return found


def test_no_module_imports_a_private_name_of_another():
    offences = []
    for module, path, tree in _modules():
        for line, name in _imported_names(module, tree):
            if not _private(name) or any(
                name == ok or name.startswith(ok + ".") for ok in ALLOWED_PRIVATE
            ):
                continue
            offences.append(f"{path.relative_to(ROOT.parent)}:{line}: {name}")
    assert offences == []


def test_the_private_import_check_catches_one():
    tree = ast.parse("from sparsekit.training.checkpoint import _read\nfrom . import _helpers\n")
    names = [n for _, n in _imported_names("sparsekit.cli.eval_cmd", tree)]
    assert names == ["sparsekit.training.checkpoint._read", "sparsekit.cli._helpers"]
    assert all(_private(n) for n in names)


def _all_error_classes() -> set[type[SparsekitError]]:
    for info in pkgutil.walk_packages(sparsekit.__path__, "sparsekit."):
        importlib.import_module(info.name)
    seen: set[type[SparsekitError]] = set()
    todo = [SparsekitError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo.extend(cls.__subclasses__())
    return {c for c in seen if c.__module__.startswith("sparsekit")}


def test_every_error_class_exits_with_a_code_of_the_table():
    classes = _all_error_classes()
    assert len(classes) >= 15
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, f"{cls.__qualname__}: exit code {cls.exit_code}"
    by_name = {c.__name__: c for c in classes}
    for code, (names, _) in EXIT_CODES.items():
        for name in names:
            if name in by_name:  # "usage errors" are Typer's
                assert by_name[name].exit_code == code, name


def test_no_exit_code_is_written_outside_the_table():
    """``exit_code = 3`` or ``typer.Exit(1)`` anywhere but ``sparsekit.errors`` is a number
    the table does not know about."""
    offences = []
    for module, path, tree in _modules():
        if module == "sparsekit.errors":
            continue
        for node in ast.walk(tree):
            literal = None
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [
                    t.id if isinstance(t, ast.Name) else getattr(t, "attr", "") for t in targets
                ]
                if any(n == "exit_code" or n.startswith("EXIT_") for n in names):
                    literal = node.value
            elif isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func in ("sys.exit", "typer.Exit", "SystemExit", "exit") and node.args:
                    literal = node.args[0]
            if isinstance(literal, ast.Constant) and isinstance(literal.value, int):
                offences.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert offences == []


def test_the_docs_show_the_table():
    doc = (ROOT.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    assert exit_code_table() in doc


@pytest.mark.parametrize("code", sorted(EXIT_CODES))
def test_exit_codes_fit_in_a_byte(code):
    assert 0 <= code < 256
