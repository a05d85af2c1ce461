"""``sparsekit sweep``: every combination a TOML file declares, on Dask (see docs/sweeps.md).

Exit status: 0 when every trial finished; 0 with a warning line on stderr when some failed
(``--strict`` makes that exit 10); 10 when every trial that ran failed. Errors in the sweep
file, the data or the options are one line before anything runs (exit 2, 3, 5, ...);
without Dask distributed the one line says how to install it (exit 1).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def lost_worker_line(name: str, data: dict[str, Any]) -> str:
    """The line printed when a trial's (or method's) worker died and another took it over."""
    epoch = data.get("epoch")
    where = f"from its checkpoint at epoch {epoch}" if epoch else "from the start"
    return (
        f"[yellow]{escape(name)}: worker {escape(str(data.get('lost')))} lost[/yellow]; "
        f"resuming on {escape(str(data.get('worker')))} {where}"
    )


class SweepDisplay:
    """One Rich progress display for a sweep: trials done, running and failed, elapsed time,
    and a line per running trial. Fed with :class:`~sparsekit.studies.sweep.SweepEvent` objects."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.overall = progress.add_task("[bold]trials", total=None, status="planning")
        self.running: dict[str, Any] = {}
        self.done = 0
        self.failed = 0
        self.total = 0
        self.directory: str | None = None

    def __call__(self, event: Any) -> None:
        kind, trial, data = event.kind, event.trial, event.data
        console = self.progress.console
        if kind == "planned":
            self.directory = data["directory"]
            self.total = len(data["todo"])
            console.print(
                f"sweep {escape(self.directory)}: {data['trials']} trials, "
                f"{data['skipped']} already finished, {self.total} to train"
            )
        elif kind == "cluster":
            where = data.get("scheduler") or "?"
            text = (
                f"Dask scheduler {escape(where)}: {data.get('workers')} workers, "
                f"{data.get('threads')} trials at once"
            )
            blas = (data.get("env") or {}).get("OMP_NUM_THREADS")
            if blas:
                text += f", {blas} BLAS thread{'s' if blas != '1' else ''} each"
            console.print(text, soft_wrap=True)
            dashboard = data.get("dashboard")
            console.print(
                f"dashboard: {escape(dashboard)}"
                if dashboard
                # escape: Rich would take "[distributed]" for markup and print nothing of it
                else "dashboard: not served (it needs bokeh: "
                + escape("pip install 'sparsekit[distributed]'")
                + ")",
                soft_wrap=True,
            )
        elif kind in ("finished", "failed"):
            task = self.running.pop(trial, None)
            if task is not None:
                self.progress.remove_task(task)
            self.done += 1
            if kind == "failed":
                self.failed += 1
                console.print(
                    f"[red]{escape(trial)} failed[/red]: {escape(data['result'].reason or '')}",
                    soft_wrap=True,
                )
        elif kind == "resumed":
            console.print(lost_worker_line(trial, data), soft_wrap=True)
        elif kind in ("status", "started", "progress", "epoch"):
            task = self.running.get(trial)
            if task is None:
                task = self.running[trial] = self.progress.add_task(
                    escape(trial), total=None, status="starting"
                )
            if kind == "status":
                self.progress.update(task, status=escape(data.get("text", "")))
            elif kind == "progress":
                self.progress.update(
                    task,
                    total=data["total"],
                    completed=data["done"],
                    status=f"epoch {min(data['epoch'] + 1, data['epochs'])}/{data['epochs']}",
                )
        self._overall()

    def _overall(self) -> None:
        running = len(self.running)
        self.progress.update(
            self.overall,
            total=self.total or None,
            completed=self.done,
            status=f"{running} running, {self.failed} failed",
        )


def _best_table(sweep: Any) -> Table:
    from sparsekit.studies.sweep_report import (
        BEST_HEADERS,
        best_rows,
        best_settings,
        setting_summaries,
    )

    table = Table(
        title=f"best setting per method (by {sweep.plan.best_by})",
        show_edge=False,
        header_style="bold",
        title_justify="left",
    )
    for i, header in enumerate(BEST_HEADERS):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in best_rows(best_settings(setting_summaries(sweep), sweep.plan.best_by)):
        table.add_row(*(escape(c) for c in row))
    return table


def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep file (TOML; see docs/sweeps.md).")],
    out: Annotated[Path, typer.Option(help="Directory that receives the sweep directory.")] = Path(
        "runs"
    ),
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Address of an existing Dask scheduler (tcp://HOST:PORT). Default: start a "
            "local cluster on this machine."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of the local cluster (default: one per CPU, at most one per "
            "trial)."
        ),
    ] = None,
    threads_per_worker: Annotated[
        int | None,
        typer.Option(help="Trials each local worker runs at once (default 1)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the sweep directory (default: name in the file, or its name)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the file and list the trials; train nothing."),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 10 if any trial fails (not only all).")
    ] = False,
) -> None:
    """Train every combination SWEEP_FILE declares, one run directory per trial, on Dask.

    Running the same command again trains only what is missing: finished trials are kept and
    trials that stopped part way resume from their checkpoint. Writes OUT/NAME/results.csv and OUT/NAME/report.html.
    """
    from sparsekit.studies.executor import check_scheduler
    from sparsekit.studies.sweep import plan_sweep

    console = Console(stderr=True)
    # Every mistake (file, data, options, a missing Dask) is one line before any display.
    plan = plan_sweep(sweep_file, out, name=name)
    if dry_run:
        _list_trials(plan, out, console)
        return
    check_scheduler(
        scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        feature="sparsekit sweep",
    )
    start = time.monotonic()
    result = _run_with_display(
        console,
        plan,
        out=out,
        scheduler=scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
    )
    _print_outcome(console, result, time.monotonic() - start, strict)


def _list_trials(plan: Any, out: Path, console: Console) -> None:
    """``--dry-run``: a table of the planned trials and where each stands."""
    from sparsekit.studies.sweep import trial_status

    table = Table(title=f"{len(plan.trials)} trials", show_edge=False, header_style="bold")
    for column in ("trial", "method", "grid values", "state"):
        table.add_column(column)
    for trial in plan.trials:
        state = trial_status(Path(out) / plan.name / trial.id)
        label = ", ".join(f"{k}={v}" for k, v in trial.label.items())
        table.add_row(escape(trial.id), escape(trial.method), escape(label), state)
    Console(width=200 if not console.is_terminal else None).print(table)


def _run_with_display(console: Console, plan: Any, **kwargs: Any) -> Any:
    """Run the sweep under one progress display; on Ctrl-C, say how to finish it."""
    from sparsekit.studies.sweep import run_sweep

    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    ) as progress:
        display = SweepDisplay(progress)
        try:
            return run_sweep(plan, on_event=display, **kwargs)
        except KeyboardInterrupt:
            if display.directory is not None:
                console.print(
                    "interrupted; run the same command again to finish the sweep "
                    f"({escape(display.directory)})",
                    soft_wrap=True,
                )
            raise


def _print_outcome(console: Console, result: Any, seconds: float, strict: bool) -> None:
    """The best settings, the files written, and the exit status the outcome calls for."""
    from sparsekit.studies.sweep import SweepFailedError, summary_line

    wide = console if console.is_terminal else Console(stderr=True, width=140)
    if result.finished:
        wide.print(_best_table(result))
    console.print(f"{summary_line(result)} in {seconds:.0f} s")
    console.print(f" results: {result.results_csv}")
    for kind in ("csv", "markdown"):
        if kind in result.report:
            console.print(f"{kind:>8}: {result.report[kind]}")
    typer.echo(str(result.report.get("html", result.directory)))
    ran = [k for k in result.results if k not in result.skipped]
    if ran and all(not result.results[k].ok for k in ran):
        raise SweepFailedError(f"every trial failed: {summary_line(result)}")
    if result.failed:
        message = f"warning: {summary_line(result)}"
        if strict:
            raise SweepFailedError(message.removeprefix("warning: "))
        print(f"sparsekit: {message}", file=sys.stderr)
