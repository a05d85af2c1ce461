"""A folder of shards as a data set read a window at a time, in bounded memory.

A :class:`StreamDataset` cuts every shard of a :class:`~sparsekit.data.shards.ShardFolder`
into *segments* of contiguous rows (at most ``segment_rows`` each). Segments are the unit of
everything here:

* **the held-out split**: a seeded ``test_fraction`` of the segments (at least one) is the
  ``"test"`` split, which training never reads; no second pass over the data is needed;
* **the shuffle**: an epoch visits the training segments in a seeded random order, grouped in
  *windows* of as many segments as the memory budget allows; a window's rows are read, shuffled
  together, and cut into minibatches. Every row is read once per epoch;
* **statistics**: the mean sample (centring) and the mean row norm (SAELens' scaling of the
  inputs to a mean norm of √D) are estimated from the first ``stats_rows`` rows of a seeded
  order of segments, a number the run states.

Which rows a step trains on is a function of the epoch's seed alone (:meth:`epoch_windows`,
:meth:`read_window`), never of timing: a reader thread that runs ahead changes nothing, and
an epoch can be rebuilt from any step.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from sparsekit.data.dataset import Dataset, TransformedRows
from sparsekit.data.shards import ShardFolder
from sparsekit.errors import DataError, ParameterError

#: Rows of one segment: one read of the disk (12 MiB of 768 float32 features).
SEGMENT_ROWS = 4096
#: Rows the statistics (mean, mean norm) are estimated from, unless told otherwise.
STATS_ROWS = 100_000
#: Resident memory the data may use by default (``--stream-memory``).
DEFAULT_MEMORY = 1 << 30
#: A window is at most this share of the memory budget: the reader holds the window being
#: trained on, the next one, and one being read (read, then shuffled into a copy).
WINDOWS_IN_MEMORY = 5
#: Fewest segments a folder is cut into (smaller segments for a small folder), so that a
#: held-out share and a shuffle of segments mean something.
MIN_SEGMENTS = 16


def split_folder_spec(text: str) -> tuple[str, str | None]:
    """``"DIR:name"`` -> (``"DIR"``, ``"name"``) when ``DIR`` is a folder; else (text, None)."""
    if os.path.isdir(text):
        return text, None
    head, sep, tail = text.rpartition(":")
    if sep and head and os.path.isdir(head):
        return head, tail
    return text, None


def is_folder_spec(spec: Any) -> bool:
    """Whether ``spec`` (``DIR`` or ``DIR:name``) names a folder of shards."""
    return os.path.isdir(split_folder_spec(os.fspath(spec))[0])


class StreamDataset(Dataset):
    """The ``split`` (``"train"``, ``"test"`` or ``None``: every row) of a shard folder.

    ``memory`` bounds the bytes of rows held at once; ``scale`` multiplies every row as it
    is read (``norm_scale`` estimates it so that the mean row norm is √D).
    """

    #: Declared: the trainer reads it through a stream plan, a window at a time.
    streamed = True

    def __init__(
        self,
        folder: ShardFolder,
        *,
        split: str | None = None,
        test_fraction: float = 0.1,
        seed: int = 0,
        memory: int = DEFAULT_MEMORY,
        segment_rows: int = SEGMENT_ROWS,
        stats_rows: int = STATS_ROWS,
        norm_scale: bool = False,
    ) -> None:
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ParameterError(f"--stream-memory must be a positive number of bytes, got {memory!r}")
        self.folder = folder
        self.name = folder.folder.name
        self.split = split
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.memory = int(memory)
        self.stats_rows = int(stats_rows)
        rows = folder.rows
        self.segment_rows = max(1, min(int(segment_rows), math.ceil(rows / MIN_SEGMENTS)))
        every = [
            (i, start, min(start + self.segment_rows, shard.rows))
            for i, shard in enumerate(folder.shards)
            for start in range(0, shard.rows, self.segment_rows)
        ]
        segments = np.asarray(every, dtype=np.int64).reshape(-1, 3)
        test = np.zeros(len(segments), dtype=bool)
        if split is not None and self.test_fraction > 0:
            if len(segments) < 2:
                raise DataError(f"{folder.folder}: too few rows to hold a test share out")
            count = min(len(segments) - 1, max(1, round(self.test_fraction * len(segments))))
            order = np.random.default_rng([self.seed, 0x7E57]).permutation(len(segments))
            test[order[:count]] = True
        if split == "test" and not test.any():
            raise DataError(
                f"{folder.folder}: no held-out split (the run was trained with "
                "--test-fraction 0, on every row)"
            )
        keep = test if split == "test" else ~test
        self.segments = segments[keep]
        # statistics come from the training segments whatever the split: the test split is
        # then scaled as training scaled
        self._stats_segments = segments[~test]
        self._set_ends()
        row_bytes = folder.width * max(folder.dtype.itemsize, 4)
        segment_bytes = self.segment_rows * row_bytes
        self.window_segments = self.memory // WINDOWS_IN_MEMORY // segment_bytes
        if self.window_segments < 1:
            need = math.ceil(WINDOWS_IN_MEMORY * segment_bytes / (1 << 20))
            raise ParameterError(
                f"--stream-memory {self.memory >> 20} MiB is too small for {folder.folder}'s "
                f"segments of {self.segment_rows} rows of {folder.width} features; give at "
                f"least {need}"
            )
        self.scale = 1.0
        self._stats: tuple[np.ndarray, float, int] | None = None
        if norm_scale:
            _, norm, _ = self.statistics()
            if not norm > 0:
                raise DataError(f"{folder.folder}: every row sampled is zero; cannot scale norms")
            self.scale = math.sqrt(folder.width) / norm

    def _set_ends(self) -> None:
        sizes = self.segments[:, 2] - self.segments[:, 1]
        self._ends = np.cumsum(sizes)

    # -- Dataset ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def dim(self) -> int:
        return self.folder.width

    def head(self, count: int) -> StreamDataset:
        """The first ``count`` rows of this split (in shard order), still streamed."""
        if not 1 <= count <= len(self):
            raise ParameterError(f"subset={count} must be between 1 and the {len(self)} rows")
        cut = int(np.searchsorted(self._ends, count))  # the segment holding row count - 1
        out = object.__new__(StreamDataset)
        out.__dict__.update(self.__dict__)
        out.segments = self.segments[: cut + 1].copy()
        before = int(self._ends[cut - 1]) if cut else 0
        out.segments[-1, 2] = out.segments[-1, 1] + (count - before)
        out._set_ends()
        return out

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Rows ``indices`` of the split (random access: one read per distinct row; for
        samples, not for epochs)."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=dtype)
        if not len(indices):
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise DataError(f"{self.name}: row index out of range")
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        seg = np.searchsorted(self._ends, wanted, side="right")
        starts = self._ends[seg] - (self.segments[seg, 2] - self.segments[seg, 1])
        shards = self.segments[seg, 0]
        rows = self.segments[seg, 1] + (wanted - starts)
        # one read per run of consecutive rows of one shard (an eval's range: a few reads)
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(shards) != 0)) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            shard, first = int(shards[lo]), int(rows[lo])
            block = self._checked(self.folder.read(shard, first, int(rows[hi - 1]) + 1), shard, first)
            out[order[lo:hi]] = block
        return self.convert(out, dtype) if self.scale != 1.0 else out

    def convert(self, rows: np.ndarray, dtype: Any) -> np.ndarray:
        """Rows read from disk as a fresh C-contiguous array of ``dtype``, scaled."""
        out = np.array(rows, dtype=dtype, order="C", copy=True)
        if self.scale != 1.0:
            out *= np.asarray(self.scale, dtype=out.dtype)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "folder": str(self.folder.folder.resolve()),
            "split": self.split,
            "segments": len(self.segments),
            "segment_rows": self.segment_rows,
            "window_segments": self.window_segments,
            "stats_rows": self.stats_rows,
            "scale": self.scale,
        }

    def manifest(self) -> dict[str, Any] | None:
        return self.folder.manifest()

    # -- reading -----------------------------------------------------------------------------

    def _checked(self, rows: np.ndarray, shard: int, first_row: int) -> np.ndarray:
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            row = first_row + int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"{self.folder.shards[shard].path}: row {row} contains NaN or infinite values"
            )
        return rows

    def read_segment(self, j: int) -> np.ndarray:
        """Segment ``j`` of the split, as on disk (dtype too), checked for NaN/inf."""
        shard, start, stop = (int(v) for v in self.segments[j])
        return self._checked(self.folder.read(shard, start, stop), shard, start)

    def epoch_windows(self, epoch_seed: int) -> list[np.ndarray]:
        """The epoch's segments in its order, in windows of :attr:`window_segments`."""
        order = np.random.default_rng([epoch_seed, 1]).permutation(len(self.segments))
        k = self.window_segments
        return [order[i : i + k] for i in range(0, len(order), k)]

    def window_rows(self, window: np.ndarray) -> int:
        seg = self.segments[window]
        return int((seg[:, 2] - seg[:, 1]).sum())

    def read_window(self, window: np.ndarray, epoch_seed: int, index: int) -> np.ndarray:
        """The rows of ``window`` (the ``index``-th of the epoch), shuffled together."""
        rows = np.concatenate([self.read_segment(int(j)) for j in window])
        order = np.random.default_rng([epoch_seed, 2, index]).permutation(len(rows))
        return rows[order]

    def statistics(self) -> tuple[np.ndarray, float, int]:
        """(mean sample, mean row norm, rows used): from the first :attr:`stats_rows` rows
        of a seeded order of the training segments (float64; the same for either split)."""
        if self._stats is None:
            segments = self._stats_segments
            order = np.random.default_rng([self.seed, 0x57A7]).permutation(len(segments))
            total = np.zeros(self.dim, dtype=np.float64)
            norms, count = 0.0, 0
            for j in order:
                shard, start, stop = (int(v) for v in segments[j])
                read = self._checked(self.folder.read(shard, start, stop), shard, start)
                rows = read[: max(0, self.stats_rows - count)]
                x = rows.astype(np.float64)
                total += x.sum(axis=0)
                norms += float(np.sqrt((x * x).sum(axis=1)).sum())
                count += len(x)
                if count >= self.stats_rows:
                    break
            self._stats = (total / count, norms / count, count)
        mean, norm, count = self._stats
        return mean * self.scale, norm * self.scale, count

    def mean(self) -> np.ndarray:
        """The estimated mean sample (float64), as training reads the rows (scaled)."""
        return self.statistics()[0]


class ScaledDataset(TransformedRows):
    """Another data set's rows times ``scale``: a ``--norm-scale`` run's inputs, for data
    that is not its shard folder (:func:`sparsekit.runs.api.prepare_data`)."""

    def __init__(self, base: Dataset, scale: float) -> None:
        super().__init__(base)
        self.scale = float(scale)

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        rows = self.base.take(indices, dtype)
        rows *= np.asarray(self.scale, dtype=rows.dtype)
        return rows


def with_scale(dataset: Dataset, scale: float) -> Dataset:
    """``dataset`` read as a run scaled by ``scale`` reads it (a streamed folder scales its
    rows as it reads them; other data is wrapped)."""
    if scale == 1.0:
        return dataset
    if isinstance(dataset, StreamDataset):
        if dataset.scale != 1.0 and dataset.scale != scale:
            raise DataError(f"{dataset.name}: already scaled by {dataset.scale}, not {scale}")
        dataset.scale = float(scale)
        return dataset
    return ScaledDataset(dataset, scale)


def open_stream(
    spec: str,
    *,
    split: str | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    memory: int = DEFAULT_MEMORY,
    stats_rows: int = STATS_ROWS,
    norm_scale: bool = False,
) -> StreamDataset:
    """The :class:`StreamDataset` of a folder spec (``DIR`` or ``DIR:name``)."""
    folder, name = split_folder_spec(spec)
    return StreamDataset(
        ShardFolder(folder, name),
        split=split,
        test_fraction=test_fraction,
        seed=seed,
        memory=memory,
        stats_rows=stats_rows,
        norm_scale=norm_scale,
    )


def stream_options(values: Any) -> dict[str, Any]:
    """The streaming settings of a run's ``values`` or data spec (a mapping), with their
    defaults: ``stream_memory`` (MiB), ``stats_rows``, ``norm_scale``."""
    return {
        "stream_memory": int(values.get("stream_memory") or DEFAULT_MEMORY >> 20),
        "stats_rows": int(values.get("stats_rows") or STATS_ROWS),
        "norm_scale": bool(values.get("norm_scale", False)),
    }
