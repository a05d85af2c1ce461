"""Counting kernel: how many samples of a batch use each unit (the trainer's L0 and dead
units).

Not a formula of any method's math but bookkeeping the trainer does every step, so it sits
behind the one door for speed: :func:`count_active` is a fused op (reference: one NumPy
comparison and column sum; twin: one pass over the code, no B×H boolean temporary), compared
bit for bit in ``tests/backend/test_fused.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused


@fused.op
def count_active(xp: Any, counts: Any, code: Any, threshold: float) -> None:
    """``counts[j] += #{i : |code[i, j]| > threshold}`` for a B×H code, in place."""
    counts += (xp.abs(code) > threshold).sum(axis=0, dtype=xp.int32)


@count_active.twin
def _count_active_fused(xp: Any, counts: Any, code: Any, threshold: float) -> Any:
    if (
        not fused.usable(code)
        or code.ndim != 2
        or not isinstance(counts, np.ndarray)
        or counts.dtype != np.int64
        or counts.shape != code.shape[1:]
        or not counts.flags.writeable
    ):
        return fused.NOT_RUN
    threshold = code.dtype.type(threshold)
    fn = _count_active_loop.ready(code.dtype.char, counts, code[:0], threshold)
    if fn is None:
        return fused.NOT_RUN
    fn(counts, code, threshold)
    return None


@fused.loop
def _count_active_loop(counts, code, threshold):  # pragma: no cover - runs compiled
    rows, cols = code.shape
    for i in range(rows):
        for j in range(cols):
            if abs(code[i, j]) > threshold:
                counts[j] += 1
