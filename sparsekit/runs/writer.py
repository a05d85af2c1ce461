"""Run directories: where a training run leaves its configuration, metrics, figures and checkpoint.

A run directory is created exclusively (two runs started at the same moment never share
one) and holds::

    config.json          method, its parameters, the training settings, the data (and how to
                         load it again), the version
    metrics.jsonl        one JSON object per epoch (loss, mse, mean_active, dead_units, seconds)
    summary.json         method, parameters, epochs, final measures, total seconds, version
    filters.png          the contrast-normalised filter grid, rewritten after every epoch
    progression.gif      the filter grid every ``snapshot_every`` epochs, as an animation
    progression.npz      the frames of that animation (uint8 tiles), for resume and export
    reconstructions.png  a fixed set of held-out images above their reconstructions
    curves.png           loss, mse, mean active units and seconds per epoch
    checkpoint.npz       everything needed to resume exactly (see :mod:`sparsekit.checkpoint`)

Files are written to a temporary name and renamed, so a reader (or a crash) never sees a
half-written file. :func:`render_run` draws every figure again from a finished (or
interrupted) run, with other layout options.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit._version import __version__
from sparsekit.data import load_dataset
from sparsekit.data.sources import SOURCES
from sparsekit.errors import CheckpointError, OutputError, ParameterError, SparsekitError
from sparsekit.evaluation import figures as render
from sparsekit.files import atomic_path, json_default, write_atomic, write_json
from sparsekit.layout import (
    CHECKPOINT,
    CONFIG,
    CURVES,
    FILTERS,
    FRAMES,
    MANIFEST,
    METRICS,
    PROGRESSION,
    RECONSTRUCTIONS,
    SUMMARY,
)
from sparsekit.runs.restore import load_run
from sparsekit.training.checkpoint import load_checkpoint, save_checkpoint
from sparsekit.training.trainer import Callback, Trainer

#: Filters drawn in the grid (the first units); enough to judge a dictionary at a glance.
MAX_GRID_FILTERS = 400
#: Frames the progression animation shows at most (evenly spaced, first and last kept).
MAX_FRAMES = 60
#: Held-out images drawn in ``reconstructions.png``.
HOLDOUT_IMAGES = 20
#: Metrics plotted in ``curves.png``.
CURVE_KEYS = ("loss", "mse", "mean_active", "seconds")
#: ``curves.png`` is redrawn after an epoch once this many times its drawing time has passed.
CURVES_PATIENCE = 10.0


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


def run_config(trainer: Trainer, data_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The full description of a run, as stored in ``config.json``."""
    config = {
        "method": trainer.method.name,
        "method_params": trainer.method.get_params(),
        "train": trainer.config.to_dict(),
        "data": trainer.dataset.describe(),
        "data_spec": dict(data_spec) if data_spec is not None else None,
        "backend": trainer.backend.name,
        "sparsekit_version": __version__,
    }
    shards = getattr(trainer, "shards", None)
    if shards is not None:  # --shard-latents: --resume continues it sharded
        config["shard_latents"] = True
        config["ranks"] = shards.size
    return config


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run directory (a :class:`CheckpointError` if missing or broken)."""
    path = Path(run_dir) / CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


# --------------------------------------------------------------------------- figures


def save_filters_png(
    path: Path,
    weights: np.ndarray,
    image_shape: tuple[int, int],
    *,
    cols: int | None = None,
    scale: int = 1,
    max_filters: int = MAX_GRID_FILTERS,
) -> Path:
    """``filters.png``: the grid of the first ``max_filters`` encoder filters."""
    grid = render.filter_grid(
        weights, image_shape, cols=cols, scale=scale, max_filters=min(len(weights), max_filters)
    )
    return render.save_png(path, grid)


def save_filters(path: Path, trainer: Trainer) -> None:
    """The contrast-normalised grid of the encoder filters (the first 400 units)."""
    shape = trainer.dataset.image_shape
    if shape is None:
        return
    save_filters_png(path, trainer.backend.to_numpy(trainer.params["W_enc"]), shape)


def save_progression_gif(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    cols: int | None = None,
    scale: int = 1,
    max_filters: int = MAX_GRID_FILTERS,
    max_frames: int = MAX_FRAMES,
) -> Path:
    """``progression.gif`` from ``(n, h, w)`` tile frames (at most ``max_frames`` shown)."""
    grids = [render.tile_grid(t[:max_filters], cols=cols, scale=scale) for t in frames]
    with atomic_path(path) as tmp:
        render.save_progression(tmp, grids, max_frames=max_frames)
    return path


def save_frames(path: Path, frames: Sequence[np.ndarray], epochs: Sequence[int]) -> Path:
    """``progression.npz``: the tile frames and the epoch of each (compressed, no pickle)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, tiles=np.stack(frames), epochs=np.asarray(epochs, dtype=np.int64)
            )
            fh.flush()
            os.fsync(fh.fileno())
    return path


def read_frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
    """The frames saved by :func:`save_frames` (empty lists when missing or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            tiles, epochs = archive["tiles"], archive["epochs"]
    except (OSError, ValueError, KeyError, EOFError):
        return [], []
    if tiles.ndim != 4 or tiles.dtype != np.uint8 or len(epochs) != len(tiles):
        return [], []
    return list(tiles), [int(e) for e in epochs]


def save_reconstructions_png(
    path: Path,
    originals: np.ndarray,
    reconstructions: np.ndarray,
    image_shape: tuple[int, int],
    *,
    cols: int = 10,
    scale: int = 2,
) -> Path:
    """``reconstructions.png``: each held-out image above its reconstruction."""
    grid = render.reconstruction_grid(
        originals, reconstructions, image_shape, cols=cols, scale=scale
    )
    return render.save_png(path, grid)


def save_curves_png(path: Path, history: Sequence[Mapping[str, Any]]) -> Path | None:
    """``curves.png``: loss, mse, mean active units and seconds against epoch."""
    if not history:
        return None
    with atomic_path(path) as tmp:
        render.plot_curves(history, tmp, keys=CURVE_KEYS)
    return path


def select_holdout(
    trainer: Trainer, data_spec: Mapping[str, Any] | None, n: int = HOLDOUT_IMAGES
) -> np.ndarray:
    """A fixed set of images not trained on, for ``reconstructions.png``.

    The first ``n`` images of the test split for MNIST and Fashion-MNIST; otherwise the last
    ``n`` rows of the training data (the same rows every epoch and every resume).
    """
    spec = (data_spec or {}).get("spec")
    raw = not (data_spec or {}).get("remove_mean") and not (data_spec or {}).get("zca")
    if isinstance(spec, str) and spec.lower() in SOURCES and raw:
        try:
            test = load_dataset(spec, data_spec.get("data"), split="test", subset=n, download=False)
            if test.dim == trainer.dataset.dim:
                return test.to_array(trainer.backend.dtype)
        except SparsekitError:
            pass  # test files not there: fall back to training rows
    total = len(trainer.dataset)
    rows = np.arange(max(0, total - n), total)
    return trainer.dataset.take(rows, trainer.backend.dtype)


def summary(
    meta: Mapping[str, Any], history: Sequence[Mapping[str, Any]], status: str
) -> dict[str, Any]:
    """The contents of ``summary.json``."""
    final = dict(history[-1]) if history else {}
    return {
        "method": meta["method"],
        "method_params": meta["method_params"],
        "train": meta["train"],
        "data": meta.get("data"),
        "status": status,
        "epochs": len(history),
        "epochs_planned": meta["train"].get("epochs"),
        "final": {k: final.get(k) for k in ("loss", "mse", "mean_active", "dead_units")},
        "total_seconds": float(sum(float(r.get("seconds", 0.0)) for r in history)),
        "sparsekit_version": __version__,
    }


# --------------------------------------------------------------------------- the callback


class RunWriter(Callback):
    """Keeps a run directory up to date while training.

    After every epoch: a line of ``metrics.jsonl``, ``filters.png``, ``reconstructions.png``,
    ``curves.png`` and ``summary.json``; every ``snapshot_every`` epochs a frame of
    ``progression.gif``; every ``checkpoint_every`` epochs (and at the end) ``checkpoint.npz``.
    A trainer restored from the directory's checkpoint continues the same files: metrics
    and frames written after the checkpoint (by a run that crashed) are dropped.

    ``data_spec`` (``{"spec", "data", "subset", "split"}``) says how to load the data again;
    it is stored so that ``sparsekit train --resume`` can reload it.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        data_spec: Mapping[str, Any] | None = None,
        snapshot_every: int = 1,
        checkpoint_every: int = 1,
        max_frames: int = MAX_FRAMES,
        holdout: np.ndarray | None = None,
        keep_previous: bool = False,
    ) -> None:

        for name, value in (
            ("snapshot_every", snapshot_every),
            ("checkpoint_every", checkpoint_every),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(
                    f"{name.replace('_', ' ')} must be a positive integer, got {value!r}"
                )
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
            raise ParameterError(f"max frames must be an integer >= 2, got {max_frames!r}")
        self.run_dir = Path(run_dir)
        self.data_spec = dict(data_spec) if data_spec is not None else None
        self.snapshot_every = snapshot_every
        self.checkpoint_every = checkpoint_every
        self.max_frames = max_frames
        self.holdout = holdout
        self.keep_previous = keep_previous
        self.frames: list[np.ndarray] = []
        self.frame_epochs: list[int] = []
        self._in_epoch = False
        self._checkpointed: int | None = None
        self._drawn: int | None = None
        self._curves_epoch: int | None = None
        self._curves_at = -math.inf
        self._curves_cost = 0.0

    # -- hooks -----------------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        if self.data_spec is None:
            self.data_spec = getattr(trainer, "data_spec", None)
        if self.holdout is None:
            stored = getattr(trainer, "checkpoint_extra", {}).get("holdout")
            self.holdout = stored if stored is not None else select_holdout(trainer, self.data_spec)
        config = run_config(trainer, self.data_spec)
        config["run"] = {
            "snapshot_every": self.snapshot_every,
            "checkpoint_every": self.checkpoint_every,
            "max_frames": self.max_frames,
        }
        write_json(self.run_dir / CONFIG, config)
        manifest = trainer.dataset.manifest()
        if manifest is not None and (trainer.epoch == 0 or not (self.run_dir / MANIFEST).is_file()):
            write_json(self.run_dir / MANIFEST, manifest)
        # metrics.jsonl always matches the trainer's history (a resumed run drops the rows a
        # crashed run wrote after its last checkpoint).
        write_atomic(
            self.run_dir / METRICS,
            "".join(json.dumps(r, default=json_default) + "\n" for r in trainer.history).encode(),
        )
        if trainer.epoch > 0:
            frames, epochs = read_frames(self.run_dir / FRAMES)
            keep = [i for i, e in enumerate(epochs) if e <= trainer.epoch]
            self.frames = [frames[i] for i in keep]
            self.frame_epochs = [epochs[i] for i in keep]
            self._checkpointed = trainer.epoch
        else:
            self.frames, self.frame_epochs = [], []
            self._checkpointed = None
        if not self.frame_epochs or self.frame_epochs[-1] != trainer.epoch:
            self._snapshot(trainer)
        self._figures(trainer, status="running")
        if self._checkpointed is None:
            # A new run can be resumed from the start: a stop in its first epoch keeps this.
            self.save_checkpoint(trainer)

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self._in_epoch = True

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self._in_epoch = False
        try:
            with open(self.run_dir / METRICS, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(metrics, default=json_default) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.run_dir / METRICS}: {exc.strerror or exc}"
            ) from None
        if trainer.epoch % self.snapshot_every == 0:
            self._snapshot(trainer)
        self._figures(trainer, status="running")
        if trainer.epoch % self.checkpoint_every == 0 or trainer.stop_requested:
            self.save_checkpoint(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._in_epoch:
            # Stopped inside an epoch: the parameters are part way through it, so neither
            # figures nor a checkpoint would match the epoch count. Keep the last checkpoint.
            self._in_epoch = False
            meta = run_config(trainer, self.data_spec)
            write_json(self.run_dir / SUMMARY, summary(meta, trainer.history, "stopped"))
            return
        if not self.frame_epochs or self.frame_epochs[-1] != trainer.epoch:
            self._snapshot(trainer)
        done = trainer.epoch >= trainer.config.epochs
        self._figures(trainer, status="finished" if done else "stopped", final=True)
        if self._checkpointed != trainer.epoch:
            self.save_checkpoint(trainer)

    # -- pieces ----------------------------------------------------------------------------

    def save_checkpoint(self, trainer: Trainer) -> Path:
        extra = {"holdout": np.asarray(self.holdout)} if self.holdout is not None else {}
        if trainer.parallel is not None:  # how many ranks trained it (--resume compares)
            extra["ranks"] = np.asarray(trainer.parallel.size)
        elif getattr(trainer, "shards", None) is not None:  # --shard-latents
            extra["ranks"] = np.asarray(trainer.shards.size)
        path = save_checkpoint(
            self.run_dir / CHECKPOINT,
            trainer,
            data_spec=self.data_spec,
            extra=extra,
            keep_previous=self.keep_previous,
        )
        self._checkpointed = trainer.epoch
        return path

    def _snapshot(self, trainer: Trainer) -> None:
        shape = trainer.dataset.image_shape
        if shape is None:
            return
        weights = trainer.backend.to_numpy(trainer.params["W_enc"])
        self.frames.append(render.filter_tiles(weights, shape, max_filters=MAX_GRID_FILTERS))
        self.frame_epochs.append(trainer.epoch)
        if len(self.frames) > 2 * self.max_frames:
            # Keep memory and file size bounded: every other frame, and always the last.
            keep = list(range(0, len(self.frames), 2))
            if keep[-1] != len(self.frames) - 1:
                keep.append(len(self.frames) - 1)
            self.frames = [self.frames[i] for i in keep]
            self.frame_epochs = [self.frame_epochs[i] for i in keep]
        save_frames(self.run_dir / FRAMES, self.frames, self.frame_epochs)
        save_progression_gif(self.run_dir / PROGRESSION, self.frames, max_frames=self.max_frames)

    def _figures(self, trainer: Trainer, *, status: str, final: bool = False) -> None:
        shape = trainer.dataset.image_shape
        if shape is not None and self._drawn != trainer.epoch:
            save_filters(self.run_dir / FILTERS, trainer)
            if self.holdout is not None and len(self.holdout):
                recon = trainer.model.reconstruct(self.holdout)
                save_reconstructions_png(self.run_dir / RECONSTRUCTIONS, self.holdout, recon, shape)
            self._drawn = trainer.epoch
        # matplotlib is slow next to a short epoch: redraw the curves when the time since the
        # last drawing is at least CURVES_PATIENCE times what drawing took (and at the end).
        now = time.perf_counter()
        due = now - self._curves_at >= CURVES_PATIENCE * self._curves_cost
        if trainer.history and self._curves_epoch != trainer.epoch and (final or due):
            save_curves_png(self.run_dir / CURVES, trainer.history)
            self._curves_at = time.perf_counter()
            self._curves_cost = self._curves_at - now
            self._curves_epoch = trainer.epoch
        meta = run_config(trainer, self.data_spec)
        write_json(self.run_dir / SUMMARY, summary(meta, trainer.history, status))


# --------------------------------------------------------------------------- reading runs


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


def render_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    cols: int | None = None,
    scale: int = 1,
    max_filters: int = MAX_GRID_FILTERS,
    max_frames: int = MAX_FRAMES,
    registry: Any = None,
) -> list[Path]:
    """Draw every figure of a run again from its checkpoint; returns the files written.

    Writes ``filters.png``, ``progression.gif`` (from ``progression.npz``, when the run kept
    frames), ``reconstructions.png`` (the held-out images stored in the checkpoint) and
    ``curves.png`` into ``out`` (default: the run directory). ``cols``, ``scale`` and
    ``max_filters`` change the filter grids' layout; the reconstruction grid keeps its own.
    """
    run_dir = Path(run_dir)
    for name, value, low in (
        ("scale", scale, 1),
        ("max_filters", max_filters, 1),
        ("max_frames", max_frames, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ParameterError(
                f"{name.replace('_', ' ')} must be an integer >= {low}, got {value!r}"
            )
    if cols is not None and (isinstance(cols, bool) or not isinstance(cols, int) or cols < 1):
        raise ParameterError(f"cols must be a positive integer, got {cols!r}")
    ckpt = load_checkpoint(run_dir, registry=registry)
    model = load_run(ckpt["path"], registry=registry)
    target = Path(out) if out is not None else (run_dir if run_dir.is_dir() else run_dir.parent)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {target}: {exc.strerror or exc}") from None
    written: list[Path] = []
    shape = model.image_shape
    if shape is not None:
        written.append(
            save_filters_png(
                target / FILTERS,
                model.encoder_weights,
                shape,
                cols=cols,
                scale=scale,
                max_filters=max_filters,
            )
        )
        frames, _ = read_frames(ckpt["path"].parent / FRAMES)
        if frames:
            written.append(
                save_progression_gif(
                    target / PROGRESSION,
                    frames,
                    cols=cols,
                    scale=scale,
                    max_filters=max_filters,
                    max_frames=max_frames,
                )
            )
        holdout = ckpt["extra"].get("holdout")
        if holdout is not None and holdout.ndim == 2 and holdout.shape[1] == model.dim:
            recon = model.reconstruct(holdout)
            written.append(
                save_reconstructions_png(target / RECONSTRUCTIONS, holdout, recon, shape)
            )
    curves = save_curves_png(target / CURVES, ckpt["meta"]["history"])
    if curves is not None:
        written.append(curves)
    return written
