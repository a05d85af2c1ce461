"""Which rows each step of an epoch trains on: the trainer's one source of minibatches.

A :class:`BatchPlan` turns the data set and the shuffle generator into an epoch's batches. The
trainer asks it for ``steps`` and for each step's rows as a host array; it never indexes the
data set itself. This is the seam where streamed data (a plan that reads shards) and
data-parallel training (a plan that reads only this rank's share of every global batch) plug
in without touching the step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparsekit.backend.prefetch import Prefetcher
from sparsekit.data.dataset import Dataset
from sparsekit.parallel import share_bounds


class _Plan:
    """What both plans share: the data set, the batch size, the shuffle generator and this
    rank's ``share`` ``(rank, ranks)`` of every global batch (``(0, 1)`` in one process)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rng: np.random.Generator,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self.dataset: Any = dataset
        self.batch_size = batch_size
        self.rng = rng
        self.share = share

    def global_rows(self, step: int) -> int:
        """How many rows the global batch of ``step`` has (all ranks' shares together)."""
        return min((step + 1) * self.batch_size, len(self.dataset)) - step * self.batch_size

    def _rank_share(self, rows: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of a global batch's ``rows``
        (:func:`~sparsekit.parallel.share_bounds`)."""
        rank, ranks = self.share
        if ranks == 1:
            return rows
        start, stop = share_bounds(len(rows), rank, ranks)
        return rows[start:stop]


class BatchPlan(_Plan):
    """An in-memory (or memory-mapped) data set in a fresh random order each epoch.

    Each epoch draws one permutation of all rows from ``rng``; step ``s`` takes rows
    ``order[s·B : (s+1)·B]``, read in increasing row order (sequential reads on a memory map;
    the order inside a batch does not change a mean gradient).

    Under data-parallel training ``share`` is ``(rank, ranks)``: every rank draws the same
    order (the same seed), and :meth:`batch` reads only the rank's contiguous share of each
    global batch (:func:`~sparsekit.parallel.share_bounds` of its sorted rows);
    :meth:`rows` stays the global batch's.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rng: np.random.Generator,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(dataset, batch_size, rng, share)
        self._order: np.ndarray | None = None

    def start_epoch(self) -> int:
        """Draw the epoch's order; returns its number of steps."""
        self._order = self.rng.permutation(len(self.dataset))
        return math.ceil(len(self._order) / self.batch_size)

    def rows(self, step: int) -> np.ndarray:
        """The data set's row indices of ``step`` (sorted)."""
        assert self._order is not None, "start_epoch() first"
        b = self.batch_size
        return np.sort(self._order[step * b : (step + 1) * b])

    def batch(self, step: int, dtype: Any) -> np.ndarray:
        """This rank's rows of ``step`` (all of them in one process) as a C-contiguous
        ``(rows, dim)`` host array of ``dtype``."""
        return self.dataset.take(self._rank_share(self.rows(step)), dtype)

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the shuffle generator the trainer saves: each epoch's order is
        drawn from it at the epoch's start."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """See :meth:`state_dict`."""


class StreamPlan(_Plan):
    """A streamed data set (``dataset.streamed``): each epoch one pass over every row, a
    window of shuffled segments at a time, read ahead by a background thread.

    Each epoch draws one seed from ``rng``; the windows, their order and the order of rows
    inside each (:meth:`StreamDataset.epoch_windows` / ``read_window``) follow from it alone.
    Step ``s`` takes positions ``s·B : (s+1)·B`` of the epoch's concatenated windows, so a
    batch may span two windows. :meth:`state_dict` (the epoch's seed and the next step) is
    enough to rebuild the rest of an epoch exactly: :meth:`load_state_dict` restarts the
    reader at the window holding that step.

    Under data-parallel training (``share`` = ``(rank, ranks)``) every rank draws the same
    seed and so the same windows; each keeps only its contiguous share of every global batch
    (:func:`~sparsekit.parallel.share_bounds`). Every rank still reads each window from disk:
    the rows of one rank's share are scattered over the window's shuffled segments.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        rng: np.random.Generator,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(dataset, batch_size, rng, share)
        self.epoch_seed: int | None = None
        self.next_step = 0
        self._windows: list[np.ndarray] = []
        self._starts = np.zeros(1, dtype=np.int64)
        self._reader: Prefetcher | None = None
        self._reader_next = 0  # the window the reader hands over next
        self._current: tuple[int, np.ndarray] | None = None

    def start_epoch(self) -> int:
        """Draw the epoch's seed and start reading; returns its number of steps."""
        self._begin(int(self.rng.integers(2**63)))
        return self.steps

    @property
    def steps(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def _begin(self, seed: int) -> None:
        self.close()
        self.epoch_seed = seed
        self.next_step = 0
        self._windows = self.dataset.epoch_windows(seed)
        sizes = [self.dataset.window_rows(w) for w in self._windows]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._start_reader(0)

    def _start_reader(self, first: int) -> None:
        self.close()
        # the reader holds the data set, not the plan: a plan dropped mid-epoch is collected,
        # and its __del__ stops the thread
        seed, windows, dataset = self.epoch_seed, self._windows, self.dataset
        self._reader = Prefetcher(
            lambda w: dataset.read_window(windows[w], seed, w), range(first, len(windows))
        )
        self._reader_next = first

    def _window(self, w: int) -> np.ndarray:
        if self._current is not None and self._current[0] == w:
            return self._current[1]
        if self._reader is None or w < self._reader_next:
            self._start_reader(w)
        assert self._reader is not None
        while self._reader_next <= w:  # skip forward: a plan restored mid-epoch
            rows = self._reader.next()
            self._reader_next += 1
        self._current = (w, rows)
        return rows

    def batch(self, step: int, dtype: Any) -> np.ndarray:
        """This rank's rows of ``step`` (all of them in one process) as a fresh C-contiguous
        host array of ``dtype``."""
        assert self.epoch_seed is not None, "start_epoch() first"
        b = self.batch_size
        first, last = step * b, min((step + 1) * b, int(self._starts[-1]))
        pieces = []
        while first < last:
            w = int(np.searchsorted(self._starts, first, side="right")) - 1
            rows = self._window(w)
            stop = min(last, int(self._starts[w + 1]))
            pieces.append(rows[first - self._starts[w] : stop - self._starts[w]])
            first = stop
        self.next_step = step + 1
        if self.next_step >= self.steps:
            self.close()
        joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return self.dataset.convert(self._rank_share(joined), dtype)

    def close(self) -> None:
        """Stop the reader and drop the windows held."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._current = None

    def __del__(self) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """Where the plan stands: the epoch's seed and the next step (JSON-friendly)."""
        return {"epoch_seed": self.epoch_seed, "next_step": self.next_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the same epoch, its next batch the same rows."""
        if state.get("epoch_seed") is None:
            return
        self._begin(int(state["epoch_seed"]))
        self.next_step = int(state.get("next_step", 0))
        self.close()  # the reader restarts at the window of the next batch asked for


def plan_for(
    dataset: Dataset,
    batch_size: int,
    rng: np.random.Generator,
    share: tuple[int, int] = (0, 1),
) -> Any:
    """The plan the data set declares: a :class:`StreamPlan` for a streamed one, else a
    :class:`BatchPlan`; ``share`` is this rank's ``(rank, ranks)`` under data parallelism."""
    if dataset.streamed:
        return StreamPlan(dataset, batch_size, rng, share)
    return BatchPlan(dataset, batch_size, rng, share)
