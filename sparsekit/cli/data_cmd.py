"""``sparsekit download``: fetch a data set into the data directory, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from sparsekit.cli.options import DataDirOption
from sparsekit.data.download import ProgressCallback


@contextmanager
def download_progress(console: Console) -> Iterator[ProgressCallback]:
    """A progress callback for the data layer that draws one Rich bar per file."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, int] = {}

        def update(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = progress.add_task(f"downloading {filename}", total=total)
            progress.update(tasks[filename], completed=done, total=total)

        yield update


def download(
    dataset: Annotated[str, typer.Argument(help="mnist or fashion-mnist.")] = "mnist",
    data: DataDirOption = None,
) -> None:
    """Download a data set (checksummed, cached; files already present are kept)."""
    from sparsekit.data import download_dataset

    console = Console(stderr=True)
    with download_progress(console) as progress:
        folder = download_dataset(dataset, data, progress=progress)
    console.print(f"{dataset} is ready in {folder}")
