"""Commands for plugin authors: ``sparsekit gradcheck`` and ``sparsekit new-plugin``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from string import Template
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli.train_cmd import parse_method_options
from sparsekit.errors import EXIT_GRADIENT_MISMATCH, ParameterError, SparsekitError
from sparsekit.gradcheck import (
    PROBLEM_HIDDEN,
    GradientReport,
    check_gradients,
    layouts,
    problem_hidden,
)
from sparsekit.registry import load_registry

#: Unknown ``--name value`` options are the method's own parameters.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


# -- sparsekit gradcheck -------------------------------------------------------------------


def gradcheck(
    ctx: typer.Context,
    method: Annotated[str, typer.Argument(help="Method name (see `sparsekit list`).")],
    tied: Annotated[
        bool | None,
        typer.Option(
            "--tied/--untied", help="Check only tied or only untied weights (default: both)."
        ),
    ] = None,
    both: Annotated[
        bool, typer.Option("--both", help="Check every layout the method allows (the default).")
    ] = False,
    hidden: Annotated[
        int | None,
        typer.Option(
            help="Hidden units of the random problem (default: 8, or twice the smallest "
            "power of two the method's parameters allow, e.g. 64 for k = 25)."
        ),
    ] = None,
    dim: Annotated[int, typer.Option(help="Input size of the random problem.")] = 12,
    batch: Annotated[int, typer.Option(help="Rows of the random minibatch.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the random problem.")] = 0,
    eps: Annotated[float, typer.Option(help="Finite-difference step.")] = 1e-6,
    tolerance: Annotated[float, typer.Option(help="Largest relative error that passes.")] = 1e-6,
) -> None:
    """Check METHOD's hand-written gradients against float64 central differences.

    Reports the relative error of the full loss gradient for every parameter and of each
    term the method contributes (f′, g′, the penalty gradients). Exits with status 1 when
    any error is above the tolerance. Method parameters are options too, e.g.
    `sparsekit gradcheck ksparse --k 3`.
    """
    registry = load_registry()
    method_cls = registry.get(method)
    instance = method_cls(**parse_method_options(method_cls, list(ctx.args)))
    if hidden is None:
        hidden = problem_hidden(instance, dim=dim) if dim >= 1 else PROBLEM_HIDDEN
    for name, value in (("hidden", hidden), ("dim", dim), ("batch", batch)):
        if value < 1:
            raise ParameterError(f"--{name} must be a positive integer, got {value}")
    if not (eps > 0 and math.isfinite(eps)) or not (tolerance > 0 and math.isfinite(tolerance)):
        raise ParameterError("--eps and --tolerance must be positive")
    allowed = layouts(method_cls)
    if both or tied is None:
        chosen = allowed
    else:
        if tied not in allowed:
            layout = "tied" if tied else "untied"
            raise ParameterError(f"method {method!r} does not support {layout} weights")
        chosen = [tied]
    console = Console()
    reports = []
    try:
        instance.validate(hidden, dim)
    except ParameterError as exc:
        raise ParameterError(
            f"{exc} (the check uses a random problem with --hidden {hidden}: pass smaller "
            "method parameters or a larger --hidden)"
        ) from None
    for layout in chosen:
        report = check_gradients(
            instance,
            tied=layout,
            dim=dim,
            hidden=hidden,
            batch=batch,
            seed=seed,
            eps=eps,
            tolerance=tolerance,
            terms=True,
        )
        reports.append(report)
        console.print(report_table(report))
        for note in report.notes:
            console.print(f"[yellow]note[/yellow]: {note}")
    failed = [r for r in reports if not r.ok]
    for report in reports:
        style = "red" if not report.ok else "green"
        console.print(f"[{style}]{report.summary()}[/{style}]")
    if failed:
        raise typer.Exit(EXIT_GRADIENT_MISMATCH)


def report_table(report: GradientReport) -> Table:
    """One row per checked quantity: relative error and pass/FAIL; undefined terms dimmed."""
    layout = "tied" if report.tied else "untied"
    table = Table(
        title=f"gradient check: {report.method} ({layout} weights), float64, "
        f"tolerance {report.tolerance:.0e}"
    )
    table.add_column("quantity")
    table.add_column("relative error", justify="right")
    table.add_column("")
    for name, value in report.all_errors.items():
        fine = math.isfinite(value) and value <= report.tolerance
        table.add_row(
            name, f"{value:.2e}", "[green]ok[/green]" if fine else "[bold red]FAIL[/bold red]"
        )
    for name, why in report.skipped.items():
        table.add_row(f"[dim]{name}[/dim]", "[dim]-[/dim]", f"[dim]{why}[/dim]")
    return table


# -- sparsekit new-plugin ------------------------------------------------------------------

PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def new_plugin(
    name: Annotated[
        str, typer.Argument(help="The method's name, lower case with dashes (e.g. my-relu).")
    ],
    dir: Annotated[
        Path, typer.Option("--dir", help="Folder in which sparsekit-NAME/ is created.")
    ] = Path("."),
) -> None:
    """Write a plugin package skeleton sparsekit-NAME/ with a working example method.

    The package has a pyproject.toml with the `sparsekit` entry point, a method module (a
    ReLU autoencoder with an L1 code penalty), a README and tests that use the method test
    kit. Install it with `pip install -e sparsekit-NAME` and run `pytest sparsekit-NAME`.
    """
    root = write_plugin_skeleton(name, dir)
    typer.echo(f"wrote plugin package {root}")
    typer.echo(f"next: pip install -e {root} && pytest {root} && sparsekit train {name}")


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


def write_plugin_skeleton(name: str, parent: Path) -> Path:
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

from sparsekit import Method, Param, hookimpl
from sparsekit.methods.base import non_negative


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

    def activation(self, xp, z):
        return xp.maximum(z, 0)

    def activation_grad(self, xp, z, a):
        return (z > 0).astype(z.dtype)

    def output(self, xp, y):
        return y

    def output_grad(self, xp, y, xhat):
        return None

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
