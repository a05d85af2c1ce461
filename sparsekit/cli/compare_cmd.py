"""``sparsekit compare`` (train several methods side by side, one report) and
``sparsekit report`` (the same report from existing run directories).

Exit status of ``compare``: 0 when every method finished; 0 with a warning line on stderr
when at least one method finished and others failed (``--strict`` makes that exit 10);
10 when every method failed. The report is written in all three cases. Errors found before
training starts (an unknown method, a bad ``--param``, missing data) exit as ``train`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sparsekit.cli.options import cli_default, command_signature, option_parameter
from sparsekit.cli.sweep_cmd import lost_worker_line
from sparsekit.layout import COMPARISON, REPORT
from sparsekit.training.settings import BY_NAME, GROUPS, SHARED, Setting


class ComparisonDisplay:
    """One Rich progress display for a whole comparison: a bar per method and one overall.

    Fed with :class:`~sparsekit.studies.compare.CompareEvent` objects in the parent process.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.overall = progress.add_task("[bold]all methods", total=None, status="")
        self.fractions: dict[str, float] = {}
        self.directory: str | None = None

    def download(self, filename: str, done: int, total: int | None) -> None:
        """Progress callback of the data layer: a bar per file downloaded."""
        key = f"download:{filename}"
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(
                "downloading", total=total, status=escape(filename)
            )
        self.progress.update(self.tasks[key], completed=done, total=total)

    def __call__(self, event: Any) -> None:
        kind, method, data = event.kind, event.method, event.data
        if kind == "queued":
            self.directory = data.get("directory", self.directory)
            self.tasks[method] = self.progress.add_task(
                escape(method), total=None, status="waiting", start=False
            )
            self.fractions[method] = 0.0
            self._overall()
            return
        task = self.tasks.get(method)
        if task is None:
            return
        if kind in ("status", "started"):
            self.progress.start_task(task)  # the clock runs from here, not from queueing
        if kind == "status":
            self.progress.update(task, status=data.get("text", ""))
        elif kind == "started":
            self.progress.update(task, status=f"epoch 1/{data.get('epochs')}")
        elif kind == "progress":
            total, done = data["total"], data["done"]
            self.progress.update(
                task,
                total=total,
                completed=done,
                status=f"epoch {min(data['epoch'] + 1, data['epochs'])}/{data['epochs']}",
            )
            self.fractions[method] = done / total if total else 0.0
        elif kind == "epoch":
            m = data.get("metrics", {})
            loss = m.get("loss")
            self.progress.update(
                task,
                status=f"epoch {m.get('epoch')} done, loss {loss:.4g}"
                if isinstance(loss, float)
                else "",
            )
        elif kind == "finished":
            result = data["result"]
            current = self.progress.tasks[self._index(task)]
            self.progress.update(
                task,
                total=current.total or 1,
                completed=current.total or 1,
                status=f"[green]finished[/green] in {result.seconds:.1f}s",
            )
            self.fractions[method] = 1.0
        elif kind == "resumed":
            self.progress.console.print(lost_worker_line(method, data), soft_wrap=True)
        elif kind == "failed":
            reason = data["result"].reason or "failed"
            short = reason if len(reason) <= 60 else reason[:57] + "..."
            self.progress.update(task, status=f"[red]failed[/red]: {escape(short)}")
            self.fractions[method] = 1.0
            self.progress.console.print(f"[red]{escape(method)} failed[/red]: {escape(reason)}")
        self._overall()

    def _index(self, task: Any) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def _overall(self) -> None:
        n = len(self.fractions)
        done = sum(self.fractions.values())
        finished = sum(1 for f in self.fractions.values() if f >= 1.0)
        self.progress.update(
            self.overall, total=n, completed=done, status=f"{finished}/{n} methods done"
        )


def _measures_table(records: list[Any]) -> Table:
    from sparsekit.studies.report import format_value, shown_columns

    columns = shown_columns(records)  # MCC too when the data has a ground truth
    table = Table(show_edge=False, header_style="bold")
    table.add_column("method", no_wrap=True)
    for column in columns:
        table.add_column(column.short or column.header, justify="right", no_wrap=True)
    for r in records:
        name = f"[red]{escape(r.name)} (failed)[/red]" if r.failed else escape(r.name)
        table.add_row(name, *(format_value(c, r.measures.get(c.key)) for c in columns))
    return table


def compare(
    methods: Annotated[
        list[str] | None,
        typer.Argument(help="Methods to compare (default: every registered method)."),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="A named comparison: seed-study (the original write-up's five methods, 500 "
            "epochs). Its methods and settings are the defaults; options given here override "
            "them. Written to OUT/PRESET; the same command again continues it."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="METHOD.NAME=VALUE: a method parameter (ksparse.k=40) or a per-method "
            "lr, optimizer, momentum, tied or center (arora.lr=0.05). Repeat as needed.",
        ),
    ] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            help="Extra plugin to load: package.module[:attr] or path/to/file.py. Repeatable."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            help="Methods trained at once (default: one per method, at most one per CPU).",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Directory that receives the comparison directory.")
    ] = Path("runs"),
    title: Annotated[str | None, typer.Option(help="Title of the report.")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 10 if any method fails (not only all).")
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run the methods on Dask: 'local' (a local cluster of --jobs workers) or the "
            "address of an existing scheduler, tcp://HOST:PORT (see docs/sweeps.md)."
        ),
    ] = None,
    **settings: Any,
) -> None:
    """Train several methods under identical settings and write one report.

    Every method gets the same data, subset, seed, hidden size, epochs and batch size; each trains in its own process into COMPARISON_DIR/METHOD, and COMPARISON_DIR/report.html (with report.csv and report.md) puts them side by side.
    """
    from sparsekit.studies.compare import CompareSettings

    console = Console(stderr=True)
    given = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    # Options with a default form the settings; those left unset (None) override the
    # preset's (or the defaults) only when given on the command line.
    shared = {k: v for k, v in given.items() if cli_default(BY_NAME[k]) is not None}
    overrides = {k: v for k, v in given.items() if k not in shared and v is not None}
    comparison = _run_with_display(
        console,
        methods or None,
        settings=CompareSettings(**shared),
        params=param or [],
        plugins=plugin or [],
        out=out,
        jobs=jobs,
        title=title,
        preset=preset,
        scheduler=scheduler,
        **overrides,
    )
    _print_outcome(console, comparison, strict)


def _compare_help(setting: Setting) -> str:
    """A shared setting's help in ``compare``: where a method would pick its own value,
    every method gets the same, by default the declared one."""
    if not setting.tunable:
        return setting.help
    return f"{setting.help.rstrip('.')} (every method) [{setting.default}]."


# Typer builds the command's options from this signature: one per setting a comparison
# shares (sparsekit.training.settings.SETTINGS), grouped as the declaration groups them.
compare.__signature__ = command_signature(  # type: ignore[attr-defined]
    compare,
    [
        option_parameter(s, help=_compare_help(s), panel=f"{s.group.capitalize()} settings")
        for s in sorted(SHARED, key=lambda s: GROUPS.index(s.group))
    ],
    after=("param", "plugin", "jobs", "out", "title", "strict", "scheduler"),
)


def _run_with_display(console: Console, methods: list[str] | None, **kwargs: Any) -> Any:
    """Run :func:`sparsekit.studies.compare.compare` under one progress display; on
    Ctrl-C, say how to continue or report before the interruption goes on.

    The display starts with the first thing it shows (a download or a queued method), so
    after the settings are checked: an error found by the checks is printed alone, not
    after an empty "all methods 0/?" bar.
    """
    from sparsekit.studies.compare import compare as run_compare

    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    display = ComparisonDisplay(progress)

    def shown(callback: Callable[..., None]) -> Callable[..., None]:
        def call(*args: Any) -> None:
            if not progress.live.is_started:
                progress.start()
            callback(*args)

        return call

    try:
        return run_compare(
            methods, on_event=shown(display), download_progress=shown(display.download), **kwargs
        )
    except KeyboardInterrupt:
        if kwargs.get("preset") is not None:
            console.print(
                "interrupted; the same command continues the unfinished runs from their "
                "checkpoints",
                soft_wrap=True,
            )
        elif display.directory is not None:
            for line in _continue_lines(Path(display.directory)):
                console.print(line, soft_wrap=True)
        raise
    finally:
        if progress.live.is_started:  # stopping one never started prints an empty line
            progress.stop()


def _continue_lines(directory: Path) -> list[str]:
    """After a Ctrl-C of a comparison without a preset (a new directory each time, so the
    same command would start over): the commands that continue each method stopped part way
    from its checkpoint, the methods not started, then the report."""
    from sparsekit.files import read_json_or_none

    listing = read_json_or_none(directory / COMPARISON) or {}
    methods = [m for m in listing.get("methods") or [] if isinstance(m, dict)]
    partial = [m for m in methods if m.get("status") == "partial"]
    not_run = [str(m.get("method")) for m in methods if m.get("status") == "not run"]
    lines = [f"interrupted; where each method stands: {escape(str(directory / COMPARISON))}"]
    lines += [
        f"continue {escape(str(m.get('method')))}: sparsekit train --resume "
        f"{escape(str(directory / str(m.get('run_dir'))))}"
        for m in partial
    ]
    if not_run:
        lines.append(f"not started: {escape(', '.join(not_run))} (compare them again to train)")
    lines.append(f"the report of what was done: sparsekit report {escape(str(directory))}")
    return lines


def _print_outcome(console: Console, comparison: Any, strict: bool) -> None:
    """The measures table, the report's files, and the exit status the outcome calls for."""
    from sparsekit.studies.compare import ComparisonError, summary_line
    from sparsekit.studies.report import load_record

    records = [load_record(r.run_dir) for r in comparison.results]
    # A log file or pipe gets the whole table, not one squeezed into 80 columns.
    wide = console if console.is_terminal else Console(stderr=True, width=120)
    wide.print(_measures_table(records))
    for kind in ("html", "csv", "markdown"):
        if kind in comparison.report:
            console.print(f"{kind:>8}: {comparison.report[kind]}")
    typer.echo(str(comparison.report.get("html", comparison.directory)))
    if not comparison.succeeded:
        raise ComparisonError(f"every method failed: {summary_line(comparison)}")
    if comparison.failed:
        message = f"warning: {summary_line(comparison)}"
        if strict:
            raise ComparisonError(message.removeprefix("warning: "))
        print(f"sparsekit: {message}", file=sys.stderr)


def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run directories, or comparison directories (all their runs)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="The HTML file (default: report.html, or COMPARISON_DIR/report.html for one "
            "comparison directory). The .csv and .md tables are written beside it."
        ),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title of the report.")] = None,
) -> None:
    """Build the self-contained HTML report (and CSV/Markdown tables) from existing runs."""
    from sparsekit.studies.report import write_report

    if out is None:
        single = run_dirs[0] if len(run_dirs) == 1 else None
        if single is not None and (single / COMPARISON).is_file():
            out = single / REPORT
        else:
            out = Path(REPORT)
    paths = write_report(run_dirs, out, title=title)
    console = Console(stderr=True)
    for kind in ("csv", "markdown"):
        console.print(f"{kind:>8}: {paths[kind]}")
    typer.echo(str(paths["html"]))
