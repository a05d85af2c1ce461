"""Every file name a run, a compare or a sweep writes is a name in :mod:`sparsekit.layout`.

Reads the package's string constants (``ast``): a literal that looks like one of the files
sparsekit writes (``*.json``, ``*.npz``, ``*.png``, ...) outside ``layout.py`` is a second
place the layout would have to change.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sparsekit.layout as layout

PACKAGE = Path(layout.__file__).resolve().parent
#: What a file sparsekit writes looks like: a bare name with one of these extensions.
FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(json|jsonl|csv|png|npz|gif|html|toml|safetensors)$")


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and FILE_NAME.match(node.value)
    ]


def test_file_names_live_in_the_layout_module() -> None:
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != Path(layout.__file__).resolve()
        for line, value in _literals(path)
        if value in names or value.endswith((".json", ".jsonl", ".csv", ".html"))
    ]
    assert not offences, "file names outside sparsekit/layout.py:\n" + "\n".join(offences)


def test_layout_names_are_distinct() -> None:
    values = [v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)]
    dupes = {v for v in values if values.count(v) > 1}
    assert not dupes, f"two layout names for one file: {dupes}"
