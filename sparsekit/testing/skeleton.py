"""A new plugin package, ready to install: what ``sparsekit new-plugin NAME`` writes.

:func:`write_plugin_skeleton` creates ``sparsekit-NAME/`` with a ``pyproject.toml`` that
declares the ``sparsekit`` entry point, a method module (a ReLU autoencoder with an L1 code
penalty, every gradient written out), a README and tests that use the method test kit
(:mod:`sparsekit.testing`). :func:`plugin_names` gives the distribution, module and class
names it uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from sparsekit.errors import ParameterError, SparsekitError
from sparsekit.methods.registry import load_registry

__all__ = ["PLUGIN_NAME", "plugin_names", "write_plugin_skeleton"]

#: A method name a plugin package can carry: lower-case words joined by dashes.
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def plugin_names(name: str) -> dict[str, str]:
    """Distribution, module and class names for method ``name``."""
    if not PLUGIN_NAME.match(name):
        raise ParameterError(
            f"plugin name {name!r}: use lower-case letters and digits, words joined by '-' "
            "(e.g. my-relu)"
        )
    parts = name.split("-")
    return {
        "name": name,
        "dist": f"sparsekit-{name}",
        "module": "sparsekit_" + "_".join(parts),
        "cls": "".join(p.capitalize() for p in parts) or "Method",
    }


def write_plugin_skeleton(name: str, parent: str | Path) -> Path:
    """Create ``parent/sparsekit-NAME`` and return it; refuses to overwrite anything."""
    names = plugin_names(name)
    registry = load_registry()
    if name in registry:
        raise ParameterError(
            f"a method called {name!r} is already registered ({registry.methods[name].origin}): "
            "choose another name"
        )
    root = Path(parent) / names["dist"]
    if root.exists():
        raise SparsekitError(f"{root} already exists: choose another --dir or name")
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{names['module']}/__init__.py": _MODULE,
        f"tests/test_{names['module']}.py": _TESTS,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(names), encoding="utf-8")
    return root


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A sparsekit plugin: the $name sparsity method."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["sparsekit>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8"]

# sparsekit loads every module named in this group and calls its hooks.
[project.entry-points.sparsekit]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]  # the tests also run before the package is installed
"""

_README = """\
# $dist

A sparsekit plugin that adds the sparsity method `$name`: a ReLU autoencoder with a linear
decoder and an L1 penalty on the code,

    H = max(X W_encᵀ + b_enc, 0),   X̂ = H W_dec + b_dec,
    L = (1/2B) ‖X̂ − X‖² + (λ/B) Σ |H|.

Edit `$module/__init__.py` to make it your own method, then:

    pip install -e .                 # registers the `sparsekit` entry point
    pytest                           # the sparsekit contract checks (sparsekit.testing)
    sparsekit list                   # shows $name, from "plugin $name"
    sparsekit gradcheck $name        # hand-written gradients vs finite differences
    sparsekit train $name --subset 1000 --epochs 1

See sparsekit's docs/plugins.md for the method contract and the hooks.
"""

_MODULE = '''\
"""The $name sparsity method: ReLU encoder, linear decoder, L1 code penalty.

The generic sparsekit step, with the pieces this method contributes::

    A  = f(Z) = max(Z, 0)              f′(Z) = 1[Z > 0]
    X̂  = g(Y) = Y                      g′ ≡ 1 (returned as None)
    Ω_H = (λ/B) Σ_ij |H_ij|            ∂Ω_H/∂H = (λ/B) sgn(H)
"""

from __future__ import annotations

from sparsekit.methods import IDENTITY, RELU, Method, Param, hookimpl, non_negative


# Method: trained by sparsekit's generic step, from the pieces declared below. A method with
# its own update subclasses UpdateMethod; one with its own forward pass, loss and gradients
# subclasses ObjectiveMethod (docs/plugins.md). Everything comes from sparsekit.methods.
class $cls(Method):
    name = "$name"
    description = "ReLU autoencoder with an L1 penalty on the code (example plugin)."
    citation = "Add the paper or notes this method comes from."
    params = (
        Param("l1", float, 1e-3, "λ, weight of the L1 code penalty", non_negative),
    )
    tied = False
    training_defaults = {
        "optimizer": "adam",
        "lr": 1e-3,
        "hidden": 196,
        "batch_size": 128,
    }

    # f and g, declared with their derivatives (sparsekit.core.activations; write your own by
    # subclassing Activation): here a ReLU code and a linear reconstruction.
    hidden_activation = RELU
    output_activation = IDENTITY
    # code_penalty below returns a penalty: declare it.
    uses_code_penalty = True

    def code_penalty(self, xp, code):
        scale = self.l1 / code.shape[0]
        return scale * xp.abs(code).sum(), scale * xp.sign(code)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add($cls)
'''

_TESTS = '''\
"""The sparsekit method contract for $name, plus its registration."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import sparsekit
from sparsekit.testing import method_contract_tests

import $module
from $module import $cls

# One test per contract check: gradients, dtypes, validation, determinism, training...
test_contract = method_contract_tests($cls)


def test_the_module_registers_the_method():
    pm = sparsekit.make_plugin_manager([$module], entry_points=False)
    assert sparsekit.load_registry(pm).get("$name") is $cls


def test_the_installed_entry_point_finds_it():
    if not any(ep.name == "$name" for ep in entry_points(group="sparsekit")):
        pytest.skip("$dist is not installed (pip install -e .)")
    assert sparsekit.load_registry().get("$name") is $cls
'''
