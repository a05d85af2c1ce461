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

from sparsekit.data.dataset import Dataset
from sparsekit.parallel import share_bounds


class BatchPlan:
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
        self.dataset = dataset
        self.batch_size = batch_size
        self.rng = rng
        self.share = share
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
        rows = self.rows(step)
        rank, ranks = self.share
        if ranks > 1:
            start, stop = share_bounds(len(rows), rank, ranks)
            rows = rows[start:stop]
        return self.dataset.take(rows, dtype)
