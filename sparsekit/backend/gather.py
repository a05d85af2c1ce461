"""Gather kernel: a minibatch's rows taken from the data, converted and scaled.

Data movement, not a formula of any method's math, so it sits behind the one door for speed:
:func:`take_scaled` is a fused op (reference: NumPy fancy indexing, a cast and a multiply;
twin: one pass that gathers, converts and scales integer pixels, with one B×D temporary and
two passes less), compared bit for bit in ``tests/backend/test_fused.py``. The data layer
(:class:`sparsekit.data.dataset.ArrayDataset`) calls it for every minibatch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused


@fused.op
def take_scaled(data: Any, rows: Any, dtype: Any, scale: float) -> np.ndarray:
    """``data[rows]`` as ``dtype``, times ``scale`` (integer pixels to [0, 1]): a contiguous
    minibatch."""
    out = np.asarray(data[rows], dtype=dtype)
    if scale != 1.0:
        out *= np.dtype(dtype).type(scale)
    return np.ascontiguousarray(out)


@take_scaled.twin
def _take_scaled_fused(data: Any, rows: Any, dtype: Any, scale: float) -> Any:
    # Gather, convert and scale in one pass; only for integer pixels in a C-contiguous 2-D
    # array and in-range rows (the loop does not check bounds).
    dtype = np.dtype(dtype)
    if (
        scale == 1.0
        or not isinstance(data, np.ndarray)
        or data.ndim != 2
        or data.dtype.kind not in "iu"
        or not data.flags.c_contiguous
        or dtype not in (np.float32, np.float64)
        or not isinstance(rows, np.ndarray)
        or rows.ndim != 1
        or rows.dtype.kind not in "iu"
        or (rows.size and (rows.min() < 0 or rows.max() >= data.shape[0]))
    ):
        return fused.NOT_RUN
    out = np.empty((rows.size, data.shape[1]), dtype)
    factor = dtype.type(scale)
    types = f"{dtype.char}{data.dtype.char}{rows.dtype.char}"  # one compiled version each
    fn = _take_scaled_loop.ready(types, out[:0], data, rows[:0], factor)
    if fn is None:
        return fused.NOT_RUN
    fn(out, data, rows, factor)
    return out


@fused.loop
def _take_scaled_loop(out, data, rows, scale):  # pragma: no cover - runs compiled
    for i in range(rows.size):
        src, dst = data[rows[i]], out[i]
        for j in range(dst.size):
            dst[j] = out.dtype.type(src[j]) * scale
