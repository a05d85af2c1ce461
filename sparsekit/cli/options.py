"""Options shared by several commands, declared once so their names and help agree."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sparsekit.training.settings import BY_NAME, Setting
from sparsekit.training.trainer import Callback, Trainer


def cli_default(setting: Setting) -> Any:
    """A setting's default on the command line: ``None`` ("not given") where the method
    (tunable), a resumed run or a preset supplies the value, else the declared default."""
    return None if setting.tunable or setting.cli_unset else setting.default


def option_annotation(
    setting: Setting, default: Any, help: str | None = None, panel: str | None = None
) -> Any:
    """``Annotated[type, typer.Option(...)]`` of ``setting`` (``help`` replaces its own;
    ``panel`` is the heading ``--help`` shows it under)."""
    kind: Any = setting.type if default is not None else setting.type | None
    option = typer.Option(*setting.flags, help=help or setting.help, rich_help_panel=panel)
    return Annotated[kind, option]


def option_parameter(
    setting: Setting, default: Any = ..., help: str | None = None, panel: str | None = None
) -> inspect.Parameter:
    """``setting`` as a keyword parameter of a Typer command (default: :func:`cli_default`)."""
    value = cli_default(setting) if default is ... else default
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=value,
        annotation=option_annotation(setting, value, help, panel),
    )


def command_signature(
    func: Callable[..., Any],
    settings: Iterable[inspect.Parameter],
    *,
    after: Iterable[str] = (),
) -> inspect.Signature:
    """``func``'s signature with ``settings`` in place of its ``**settings`` catch-all:
    what Typer reads to build the command's options. ``after`` names ``func``'s own
    parameters that come after the settings in ``--help``."""
    settings = list(settings)
    names = {p.name for p in settings}  # a signature made before holds them already
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        else p
        for p in inspect.signature(func, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in names
    ]
    first = [p for p in own if p.name not in after]
    last = [p for p in own if p.name in after]
    return inspect.Signature([*first, *settings, *last])


#: The data options several commands share, from the declaration.
DatasetOption = option_annotation(BY_NAME["dataset"], BY_NAME["dataset"].default)
DataDirOption = option_annotation(BY_NAME["data"], None)
DownloadOption = option_annotation(BY_NAME["download"], True)
SubsetOption = option_annotation(BY_NAME["subset"], None)


def step_progress(console: Console) -> Progress:
    """The progress display of a training run: description, bar, steps done, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


class RichProgress(Callback):
    """One progress bar over all steps of all epochs, with the last epoch's loss."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("training", total=None)
        self.progress.update(self.task, description=f"epoch {epoch + 1}/{trainer.config.epochs}")

    def on_step_end(self, trainer: Trainer, step: int, steps: int) -> None:
        total = steps * trainer.config.epochs
        done = trainer.epoch * steps + step
        self.progress.update(self.task, total=total, completed=done)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.progress.console.print(
            f"epoch {metrics['epoch']:>3}  loss {metrics['loss']:.4f}  mse {metrics['mse']:.5f}  "
            f"active {metrics['mean_active']:.1f}  dead {metrics['dead_units']}  "
            f"{metrics['seconds']:.1f}s"
        )
