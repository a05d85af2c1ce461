"""A trained model: a method plus its parameters, with encode, decode and the weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from sparsekit.backend import Backend
from sparsekit.core.contract import Method, TopK
from sparsekit.core.step import decoder_weights, dense_code, forward
from sparsekit.data.dataset import ArrayDataset, Dataset
from sparsekit.errors import DataError


class Model:
    """The learned sparse code of one method.

    ``encode`` maps samples (rows) to codes, ``decode`` maps codes back to samples; both take
    and return NumPy arrays and work in batches. ``encoder_weights`` and
    ``decoder_weights`` are H×D (row j is unit j's filter / atom).
    """

    def __init__(
        self,
        method: Method,
        params: dict[str, Any],
        backend: Backend,
        *,
        image_shape: tuple[int, int] | None = None,
        input_mean: Any = None,
    ) -> None:
        self.method = method
        self.params = params
        self.backend = backend
        self.image_shape = image_shape
        #: The training data's mean sample when the model was trained on centred data
        #: (``encode`` subtracts it, ``decode`` and ``reconstruct`` add it back); else None.
        self.input_mean = None if input_mean is None else backend.asarray(input_mean)

    @property
    def tied(self) -> bool:
        return "W_dec" not in self.params

    @property
    def hidden(self) -> int:
        return int(self.params["W_enc"].shape[0])

    @property
    def dim(self) -> int:
        return int(self.params["W_enc"].shape[1])

    @property
    def encoder_weights(self) -> np.ndarray:
        """H×D: row j holds the weights unit j applies to the input (its filter)."""
        return self.backend.to_numpy(self.params["W_enc"])

    @property
    def decoder_weights(self) -> np.ndarray:
        """H×D: row j is the atom unit j adds to the reconstruction."""
        return self.backend.to_numpy(decoder_weights(self.params))

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {k: self.backend.to_numpy(v) for k, v in self.params.items()}

    def batches(self, data: Any, batch_size: int = 1024) -> Iterator[Any]:
        """``data`` (array or Dataset) in backend batches of ``batch_size`` rows, as the model
        takes them: in its dtype, with ``input_mean`` subtracted for a centred model."""
        dataset = (
            data if isinstance(data, Dataset) else ArrayDataset(np.asarray(data), name="input")
        )
        if dataset.dim != self.dim:
            raise DataError(
                f"{dataset.name}: samples have {dataset.dim} features, the model expects {self.dim}"
            )
        for start in range(0, len(dataset), batch_size):
            rows = np.arange(start, min(start + batch_size, len(dataset)))
            batch = dataset.take(rows, self.backend.dtype)
            # NaN would pass through the matmuls into NaN codes without a word; the command
            # line and the estimator refuse it, and so does the library, naming the row.
            finite = np.isfinite(batch).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise DataError(f"{dataset.name}: row {row} contains NaN or infinite values")
            x = self.backend.asarray(batch)
            if self.input_mean is not None:
                x -= self.input_mean
            yield x

    def encode(self, data: Any, *, training: bool = False, batch_size: int = 1024) -> np.ndarray:
        """Codes (N×H) of the rows of ``data`` (array or Dataset).

        ``training=False`` uses the method's encoding-time support (e.g. αk units for
        k-sparse); ``training=True`` the support used while training.
        """
        out = []
        for x in self.batches(data, batch_size):
            fwd = forward(self.method, self.backend, self.params, x, training=training)
            out.append(self.backend.to_numpy(dense_code(self.backend, fwd)))
        return np.concatenate(out)

    def decode(self, codes: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Reconstructions (N×D) from codes (N×H)."""
        xp = self.backend.xp
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.hidden:
            # NumPy's own matmul message names operands, not the model's width.
            raise DataError(
                f"codes have shape {codes.shape}, the model expects N × {self.hidden} "
                f"(one column per unit)"
            )
        w_dec = decoder_weights(self.params)
        out = []
        for start in range(0, len(codes), batch_size):
            h = self.backend.asarray(codes[start : start + batch_size])
            y = h @ w_dec
            y += self.params["b_dec"]
            out.append(self.backend.to_numpy(self._uncentred(self.method.output_activation.value(xp, y))))
        return np.concatenate(out)

    def reconstruct(
        self, data: Any, *, training: bool = True, batch_size: int = 1024
    ) -> np.ndarray:
        """X̂ for the rows of ``data``, through the training-time code by default."""
        out = []
        for x in self.batches(data, batch_size):
            fwd = forward(self.method, self.backend, self.params, x, training=training)
            out.append(self.backend.to_numpy(self._uncentred(fwd.xhat)))
        return np.concatenate(out)

    def _uncentred(self, xhat: Any) -> Any:
        """Reconstructions back in the data's own space (the mean added back)."""
        return xhat if self.input_mean is None else xhat + self.input_mean

    def active_units(self, data: Any, *, training: bool = True) -> np.ndarray:
        """How many units are nonzero in each sample's code."""
        out = []
        for x in self.batches(data, 1024):
            fwd = forward(self.method, self.backend, self.params, x, training=training)
            if isinstance(fwd.support, TopK) and fwd.support.kept is not None:
                out.append(self.backend.to_numpy((fwd.support.kept != 0).sum(axis=1)))
            elif isinstance(fwd.support, TopK):
                out.append(np.full(x.shape[0], fwd.support.indices.shape[1]))
            else:
                out.append(self.backend.to_numpy((fwd.code != 0).sum(axis=1)))
        return np.concatenate(out)

    def __repr__(self) -> str:
        tied = "tied" if self.tied else "untied"
        return f"Model({self.method!r}, hidden={self.hidden}, dim={self.dim}, {tied}, {self.backend.name})"
