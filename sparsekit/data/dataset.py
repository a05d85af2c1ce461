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

from sparsekit.backend.gather import take_scaled
from sparsekit.errors import DataError


class Dataset:
    """Base class: ``n`` samples of ``dim`` features, taken by index."""

    name: str = "dataset"
    #: (height, width) of one sample when samples are images, else ``None``.
    image_shape: tuple[int, int] | None = None
    #: Integer class labels, one per sample, when the data has them.
    labels: np.ndarray | None = None
    #: Declared by data sets read a window at a time from disk (a shard folder): the trainer
    #: then takes its minibatches from a stream plan, never by index over every row.
    streamed: bool = False

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

    def manifest(self) -> dict[str, Any] | None:
        """What files the data was read from (shards, rows, checksums), or ``None`` for data
        that is not a folder of shards. A run stores it; a resume refuses a changed folder."""
        return None



class TransformedRows(Dataset):
    """Every row of ``base``, in its order, changed as :meth:`take` reads it (whitened,
    scaled, ...): the base's length, width, name, labels and image shape."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.name, self.labels, self.image_shape = base.name, base.labels, base.image_shape

    def __len__(self) -> int:
        return len(self.base)

    @property
    def dim(self) -> int:
        return self.base.dim

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
        # the gather is a backend op: a fused pass for integer pixels, else NumPy's indexing
        return take_scaled(self._data, indices, dtype, self._scale)
