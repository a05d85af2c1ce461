"""Options shared by several commands, declared once so their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
