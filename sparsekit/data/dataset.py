"""What the trainer sees of data: a sized collection of rows it can take minibatches from.

The data layer (this package) is the only place that knows file formats. Training code asks a
:class:`Dataset` for ``len(ds)``, ``ds.dim`` and ``ds.take(indices)``; it never opens a file.
``take`` returns the requested rows, in the requested order, as an in-memory floating-point
array with all preprocessing applied, so a dataset backed by a memory-mapped file only reads
the rows of one minibatch at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused
from sparsekit.errors import DataError


class Dataset:
    """Base class: ``n`` samples of ``dim`` features, taken by index."""

    name: str = "dataset"
    #: (height, width) of one sample when samples are images, else ``None``.
    image_shape: tuple[int, int] | None = None
    #: Integer class labels, one per sample, when the data has them.
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Rows ``indices`` (in that order) as a C-contiguous ``(len(indices), dim)`` array."""
        raise NotImplementedError

    def to_array(self, dtype: Any = np.float32) -> np.ndarray:
        """Every row in memory. Fine for MNIST; avoid it for data larger than RAM."""
        return self.take(np.arange(len(self)), dtype)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description, stored with runs and checkpoints."""
        return {"name": self.name, "n": len(self), "dim": self.dim, "image_shape": self.image_shape}


class ArrayDataset(Dataset):
    """A dataset over an array already in memory (or memory-mapped).

    ``data`` has shape ``(n, dim)`` or ``(n, h, w)`` (images, flattened row-major). Integer
    data (e.g. ``uint8`` pixels) is scaled by ``scale`` (default ``1/255`` for ``uint8``);
    floating-point data is used as given.
    """

    def __init__(
        self,
        data: np.ndarray,
        *,
        name: str = "array",
        labels: np.ndarray | None = None,
        image_shape: tuple[int, int] | None = None,
        scale: float | None = None,
    ) -> None:
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = np.asarray(data)
        if data.ndim == 3:
            image_shape = image_shape or (int(data.shape[1]), int(data.shape[2]))
            data = data.reshape(data.shape[0], -1)
        if data.ndim != 2:
            raise DataError(
                f"{name}: expected an array of shape (samples, features) or (samples, h, w), "
                f"got shape {tuple(data.shape)}"
            )
        if data.shape[0] == 0 or data.shape[1] == 0:
            raise DataError(f"{name}: the array is empty (shape {tuple(data.shape)})")
        kind = np.dtype(data.dtype).kind
        if kind not in "biuf":
            raise DataError(f"{name}: expected numbers, got an array of dtype {data.dtype}")
        if scale is None:
            scale = 1.0 / 255.0 if np.dtype(data.dtype) == np.uint8 else 1.0
        if image_shape is not None and image_shape[0] * image_shape[1] != data.shape[1]:
            raise DataError(
                f"{name}: image shape {image_shape} does not match {data.shape[1]} features"
            )
        self._data = data
        self._scale = float(scale)
        self.name = name
        self.labels = labels
        self.image_shape = image_shape

    def __len__(self) -> int:
        return int(self._data.shape[0])

    @property
    def dim(self) -> int:
        return int(self._data.shape[1])

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        return take_scaled(self._data, indices, dtype, self._scale)


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
