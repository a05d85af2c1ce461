"""Options shared by several commands, declared once so their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sparsekit.training.trainer import Callback, Trainer

DatasetOption = Annotated[
    str,
    typer.Option(
        help="mnist, fashion-mnist, synthetic, synthetic-sae (see docs/data.md), or a "
        ".npy/.npz/IDX file."
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(help="Data directory (default: $SPARSEKIT_DATA, else the user cache)."),
]
DownloadOption = Annotated[bool, typer.Option(help="Download missing MNIST files.")]
SubsetOption = Annotated[int | None, typer.Option(help="Use only the first N training samples.")]


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
