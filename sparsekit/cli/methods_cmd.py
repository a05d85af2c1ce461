"""``sparsekit list``: every registered method, its origin and its parameters."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from sparsekit.methods.registry import load_registry


def list_methods() -> None:
    """List the sparsity methods, where each comes from, and their parameters."""
    registry = load_registry()
    table = Table(title="sparsekit methods", show_lines=True)
    table.add_column("method", style="bold")
    table.add_column("from")
    table.add_column("description")
    table.add_column("parameters (default): meaning")
    for info in registry:
        cls = info.cls
        params = "\n".join(
            f"--{p.name.replace('_', '-')} ({p.default!r}): {p.help}" for p in cls.params
        )
        layout = "tied" if cls.tied else "untied"
        if not (cls.allows_tied and cls.allows_untied):
            layout += " only"
        table.add_row(
            cls.name, info.origin, f"{cls.description}\n[dim]{layout} weights[/dim]", params or "-"
        )
    console = Console()
    console.print(table)
    for failure in registry.failures:
        console.print(f"[red]failed plugin[/red] {failure.plugin}: {failure.error}")
