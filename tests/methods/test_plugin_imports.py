"""A plugin needs one import module, sparsekit.methods; the built-ins and relu-l1 use only it
for the contract, and the first contract's paths still import, with a DeprecationWarning."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import sparsekit
import sparsekit.methods
from sparsekit.errors import PluginError

ROOT = Path(__file__).resolve().parents[2]
#: The method modules: every built-in and the example plugin.
METHOD_FILES = sorted(
    p
    for p in (ROOT / "sparsekit" / "methods").glob("*.py")
    if p.stem not in ("__init__", "registry", "hookspecs", "base")
) + [ROOT / "plugins" / "sparsekit-relu-l1" / "sparsekit_relu_l1" / "__init__.py"]

#: Old import paths, each with a name a plugin of the first contract imported from it.
DEPRECATED = [
    ("sparsekit.methods.base", "Method"),
    ("sparsekit.activations", "RELU"),
    ("sparsekit.gradcheck", "check_gradients"),
    ("sparsekit.saelens", "SAELensArch"),
]


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.parent.name + "/" + p.stem)
def test_method_modules_take_the_contract_from_sparsekit_methods(path):
    """No contract name from sparsekit.core (the backend's kernels are not the contract)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sparsekit.core"):
            pytest.fail(f"{path.name}:{node.lineno} imports from {node.module}")


def test_the_one_module_exports_the_types_and_the_check():
    for name in ("BaseMethod", "Method", "UpdateMethod", "ObjectiveMethod", "check_method_class"):
        assert name in sparsekit.methods.__all__ and hasattr(sparsekit, name)
    missing = [n for n in sparsekit.methods.__all__ if not hasattr(sparsekit.methods, n)]
    assert not missing


@pytest.mark.parametrize(("path", "name"), DEPRECATED)
def test_old_paths_import_with_a_deprecation_warning(path, name, monkeypatch):
    monkeypatch.delitem(sys.modules, path, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{path} is deprecated"):
        module = importlib.import_module(path)
    assert getattr(module, name) is not None


def test_an_old_style_class_through_an_old_path_is_still_refused(monkeypatch):
    monkeypatch.delitem(sys.modules, "sparsekit.methods.base", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        base = importlib.import_module("sparsekit.methods.base")

    class OldReLU(base.Method):
        name = "old-relu"

        def activation(self, xp, z):
            return xp.maximum(z, 0)

    assert base.Method is sparsekit.methods.Method
    assert base.ObjectiveMethod is sparsekit.methods.ObjectiveMethod
    with pytest.raises(PluginError, match="declare hidden_activation"):
        base.check_method_class(OldReLU)
