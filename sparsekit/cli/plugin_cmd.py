"""Commands for plugin authors: ``sparsekit gradcheck`` and ``sparsekit new-plugin``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli.train_cmd import parse_method_options
from sparsekit.core.contract import BaseMethod
from sparsekit.errors import (
    EXIT_GRADIENT_MISMATCH,
    ParameterError,
    PluginError,
    UnknownMethodError,
)
from sparsekit.methods.registry import MethodRegistry, load_registry
from sparsekit.testing.gradcheck import (
    PROBLEM_HIDDEN,
    GradientReport,
    check_gradients,
    layouts,
    problem_hidden,
)
from sparsekit.testing.skeleton import write_plugin_skeleton

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
    any error is above the tolerance; a method class the contract refuses (it overrides
    activation() or output(), or mixes the method types) is not registered, and the error
    says why. Method parameters are options too, e.g.
    `sparsekit gradcheck ksparse --k 3`.
    """
    registry = load_registry()
    method_cls = _registered(registry, method)
    instance = method_cls(**parse_method_options(method_cls, list(ctx.args)))
    if hidden is None:
        hidden = problem_hidden(instance, dim=dim) if dim >= 1 else PROBLEM_HIDDEN
    _check_settings(hidden=hidden, dim=dim, batch=batch, eps=eps, tolerance=tolerance)
    chosen = _chosen_layouts(method, method_cls, tied, both)
    try:
        instance.validate(hidden, dim)
    except ParameterError as exc:
        raise ParameterError(
            f"{exc} (the check uses a random problem with --hidden {hidden}: pass smaller "
            "method parameters or a larger --hidden)"
        ) from None
    console = Console()
    reports = []
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
    for report in reports:
        style = "red" if not report.ok else "green"
        console.print(f"[{style}]{report.summary()}[/{style}]")
    if any(not r.ok for r in reports):
        raise typer.Exit(EXIT_GRADIENT_MISMATCH)


def _registered(registry: MethodRegistry, name: str) -> type[BaseMethod]:
    """The method class called ``name``. When there is none and plugins failed to register
    (a class the contract refuses, for one), the error says why in the same line."""
    try:
        return registry.get(name)
    except UnknownMethodError as exc:
        if not registry.failures:
            raise
        why = "; ".join(f"{f.plugin} failed to register: {f.error}" for f in registry.failures)
        raise PluginError(f"{exc}; {why}") from None


def _check_settings(*, hidden: int, dim: int, batch: int, eps: float, tolerance: float) -> None:
    """The random problem's sizes and the check's step and tolerance are usable."""
    for name, value in (("hidden", hidden), ("dim", dim), ("batch", batch)):
        if value < 1:
            raise ParameterError(f"--{name} must be a positive integer, got {value}")
    if not (eps > 0 and math.isfinite(eps)) or not (tolerance > 0 and math.isfinite(tolerance)):
        raise ParameterError("--eps and --tolerance must be positive")


def _chosen_layouts(
    method: str, method_cls: type[BaseMethod], tied: bool | None, both: bool
) -> list[bool]:
    """The weight layouts to check: every allowed one, or the one asked for."""
    allowed = layouts(method_cls)
    if both or tied is None:
        return allowed
    if tied not in allowed:
        layout = "tied" if tied else "untied"
        raise ParameterError(f"method {method!r} does not support {layout} weights")
    return [tied]


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
