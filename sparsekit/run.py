"""Run directories: where a training run leaves its configuration, metrics and figures.

A run directory is created exclusively (two runs started at the same moment never share
one) and holds::

    config.json      method, its parameters, the training settings, the data, the version
    metrics.jsonl    one JSON object per epoch (loss, mse, mean_active, dead_units, seconds)
    filters.png      the contrast-normalised filter grid, rewritten after every epoch

Files are written to a temporary name and renamed, so a reader (or a crash) never sees a
half-written file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit import render
from sparsekit.errors import SparsekitError
from sparsekit.train import Callback, Trainer

CONFIG = "config.json"
METRICS = "metrics.jsonl"
FILTERS = "filters.png"
#: Filters drawn in the grid (the first units); enough to judge a dictionary at a glance.
MAX_GRID_FILTERS = 400


class OutputError(SparsekitError):
    """The output directory cannot be created or written."""

    exit_code = 8


def create_run_dir(root: str | Path, method: str) -> Path:
    """A new, empty directory ``root/<method>-<date>-<time>[-n]``, created atomically."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            path = root / (f"{method}-{stamp}" if n == 1 else f"{method}-{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(
            f"cannot create a run directory in {root}: {exc.strerror or exc}"
        ) from None
    raise OutputError(f"cannot create a run directory in {root}: too many runs this second")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def run_config(trainer: Trainer) -> dict[str, Any]:
    """The full description of a run, as stored in ``config.json``."""
    from sparsekit import __version__

    return {
        "method": trainer.method.name,
        "method_params": trainer.method.get_params(),
        "train": trainer.config.to_dict(),
        "data": trainer.dataset.describe(),
        "backend": trainer.backend.name,
        "sparsekit_version": __version__,
    }


def save_filters(path: Path, trainer: Trainer) -> None:
    """The contrast-normalised grid of the encoder filters (the first 400 units)."""
    shape = trainer.dataset.image_shape
    if shape is None:
        return
    weights = trainer.backend.to_numpy(trainer.params["W_enc"])[:MAX_GRID_FILTERS]
    grid = render.filter_grid(weights, shape)
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


class RunWriter(Callback):
    """Keeps a run directory up to date while training."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_train_begin(self, trainer: Trainer) -> None:
        write_json(self.run_dir / CONFIG, run_config(trainer))

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        try:
            with open(self.run_dir / METRICS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(metrics, default=_jsonable) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.run_dir / METRICS}: {exc.strerror or exc}"
            ) from None
        save_filters(self.run_dir / FILTERS, trainer)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run (a torn last line, from a crash, is ignored)."""
    path = Path(run_dir) / METRICS
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows
