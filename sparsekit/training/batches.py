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


class BatchPlan:
    """An in-memory (or memory-mapped) data set in a fresh random order each epoch.

    Each epoch draws one permutation of all rows from ``rng``; step ``s`` takes rows
    ``order[s·B : (s+1)·B]``, read in increasing row order (sequential reads on a memory map;
    the order inside a batch does not change a mean gradient).
    """

    def __init__(self, dataset: Dataset, batch_size: int, rng: np.random.Generator) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.rng = rng
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
        """The rows of ``step`` as a C-contiguous ``(rows, dim)`` host array of ``dtype``."""
        return self.dataset.take(self.rows(step), dtype)
