"""Preprocessing as data-set wrappers: subsets, seeded train/test splits, per-sample mean
removal and ZCA whitening.

Every wrapper is itself a :class:`~sparsekit.data.dataset.Dataset`, so preprocessing is
applied batch by batch in ``take()`` and never needs the whole data set in memory. ZCA is
fitted on a sample of rows; its parameters (mean, matrix, epsilon) round-trip through
``to_dict()`` / ``from_dict()`` as plain NumPy arrays, so they can be stored with a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit.data.dataset import Dataset, TransformedRows
from sparsekit.errors import DataError, ParameterError


def _as_indices(indices: Any, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    return idx.astype(np.intp, copy=False).reshape(-1)


class SubsetDataset(Dataset):
    """The rows ``indices`` of ``base``, in that order."""

    def __init__(self, base: Dataset, indices: Any, *, name: str | None = None) -> None:
        idx = _as_indices(indices, len(base))
        if idx.size == 0:
            raise ParameterError(f"{base.name}: a subset needs at least one sample")
        if idx.min() < 0 or idx.max() >= len(base):
            raise ParameterError(f"{base.name}: subset indices must lie in 0..{len(base) - 1}")
        self.base = base
        self.indices = idx
        self.name = name or base.name
        self.image_shape = base.image_shape
        self.labels = None if base.labels is None else np.asarray(base.labels)[idx]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def dim(self) -> int:
        return self.base.dim

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        return self.base.take(self.indices[np.asarray(indices)], dtype)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["subset_of"] = self.base.describe()
        return out


def subset(dataset: Dataset, n: int, *, seed: int | None = None) -> Dataset:
    """The first ``n`` samples, or ``n`` random ones (in file order) if ``seed`` is given."""
    total = len(dataset)
    if isinstance(n, bool) or int(n) < 1:
        raise ParameterError(f"subset must be a positive number of samples, got {n!r}")
    if int(n) > total:
        raise ParameterError(f"subset={n} is larger than the {total} samples of {dataset.name}")
    if int(n) == total and seed is None:
        return dataset
    if seed is None:
        idx = np.arange(int(n))
    else:
        idx = np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))
    return SubsetDataset(dataset, idx)


def train_test_split(
    dataset: Dataset, test_fraction: float = 0.1, *, seed: int = 0
) -> tuple[SubsetDataset, SubsetDataset]:
    """A seeded random split into (train, test); each part keeps file order for locality."""
    n = len(dataset)
    if not 0.0 < float(test_fraction) < 1.0:
        raise ParameterError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if n < 2:
        raise ParameterError(f"{dataset.name}: cannot split {n} sample(s) into train and test")
    n_test = min(n - 1, max(1, int(round(n * float(test_fraction)))))
    perm = np.random.default_rng(seed).permutation(n)
    test_idx = np.sort(perm[:n_test])
    train_idx = np.sort(perm[n_test:])
    return (
        SubsetDataset(dataset, train_idx, name=f"{dataset.name}-train"),
        SubsetDataset(dataset, test_idx, name=f"{dataset.name}-test"),
    )


def _sample_rows(dataset: Dataset, n_samples: int, seed: int) -> np.ndarray:
    n = len(dataset)
    if n_samples >= n:
        idx = np.arange(n)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=n_samples, replace=False))
    return dataset.take(idx, np.float64)


@dataclass
class ZCA:
    """ZCA whitening ``x -> (x - mean) @ matrix`` with ``matrix = U diag(1/sqrt(s + eps)) Uᵀ``
    from the eigen-decomposition ``U diag(s) Uᵀ`` of the covariance of a sample."""

    mean: np.ndarray
    matrix: np.ndarray
    epsilon: float

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.epsilon = float(self.epsilon)
        d = self.mean.shape[0]
        if self.matrix.shape != (d, d):
            raise DataError(
                f"ZCA parameters do not fit: mean has {d} features, matrix has shape "
                f"{self.matrix.shape}"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.matrix).all()):
            raise DataError("ZCA parameters contain NaN or infinite values")
        self._cast: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def fit(
        cls,
        dataset: Dataset | np.ndarray,
        *,
        epsilon: float = 1e-2,
        n_samples: int = 10000,
        seed: int = 0,
    ) -> ZCA:
        """Fit on ``n_samples`` random rows of ``dataset`` (or on all rows of an array)."""
        if not float(epsilon) > 0.0:
            raise ParameterError(f"ZCA epsilon must be positive, got {epsilon}")
        if isinstance(dataset, Dataset):
            x = _sample_rows(dataset, int(n_samples), seed)
        else:
            x = np.asarray(dataset, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise DataError(f"ZCA needs at least 2 samples of shape (n, dim), got {x.shape}")
        mean = x.mean(axis=0)
        xc = x - mean
        cov = xc.T @ xc / x.shape[0]
        s, u = np.linalg.eigh(cov)
        s = np.clip(s, 0.0, None)
        matrix = (u / np.sqrt(s + float(epsilon))) @ u.T
        return cls(mean=mean, matrix=matrix, epsilon=float(epsilon))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whiten rows ``x`` (computed in ``x``'s floating dtype)."""
        dt = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
        if dt not in self._cast:
            self._cast[dt] = (self.mean.astype(dt), self.matrix.astype(dt))
        mean, matrix = self._cast[dt]
        return (x.astype(dt, copy=False) - mean) @ matrix

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "matrix": self.matrix.copy(), "epsilon": self.epsilon}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ZCA:
        try:
            return cls(
                mean=params["mean"], matrix=params["matrix"], epsilon=float(params["epsilon"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid ZCA parameters ({exc})") from None


class Preprocessed(TransformedRows):
    """``base`` with per-sample mean removal (each row minus its own mean) and/or ZCA
    whitening applied to each batch ``take()`` returns, in that order."""

    def __init__(self, base: Dataset, *, remove_mean: bool = False, zca: ZCA | None = None) -> None:
        if zca is not None and zca.mean.shape[0] != base.dim:
            raise DataError(
                f"{base.name}: ZCA parameters are for {zca.mean.shape[0]} features, the data "
                f"has {base.dim}"
            )
        super().__init__(base)
        self.remove_mean = bool(remove_mean)
        self.zca = zca

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        work = np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.dtype(np.float64)
        x = self.base.take(indices, work)
        if self.remove_mean:
            x = x - x.mean(axis=1, keepdims=True)
        if self.zca is not None:
            x = self.zca.apply(x)
        return np.ascontiguousarray(x, dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        """The preprocessing parameters (plain values and arrays), for storing with a run."""
        return {
            "remove_mean": self.remove_mean,
            "zca": None if self.zca is None else self.zca.to_dict(),
        }

    @classmethod
    def from_dict(cls, base: Dataset, params: dict[str, Any]) -> Preprocessed:
        zca = params.get("zca")
        return cls(
            base,
            remove_mean=bool(params.get("remove_mean", False)),
            zca=None if zca is None else ZCA.from_dict(zca),
        )

    def describe(self) -> dict[str, Any]:
        out = self.base.describe()
        out["preprocessing"] = {
            "remove_mean": self.remove_mean,
            "zca": None if self.zca is None else {"epsilon": self.zca.epsilon},
        }
        return out


def preprocess(
    dataset: Dataset,
    *,
    subset_n: int | None = None,
    remove_mean: bool = False,
    zca: bool | ZCA = False,
    zca_epsilon: float = 1e-2,
    zca_samples: int = 10000,
    seed: int = 0,
) -> Dataset:
    """Convenience: subset, then mean removal / ZCA (fitted here unless a :class:`ZCA` is
    given; fitted on the mean-removed rows when ``remove_mean``)."""
    ds = dataset if subset_n is None else subset(dataset, subset_n)
    if not remove_mean and zca is False:
        return ds
    model: ZCA | None
    if isinstance(zca, ZCA):
        model = zca
    elif zca:
        fit_on = Preprocessed(ds, remove_mean=True) if remove_mean else ds
        model = ZCA.fit(fit_on, epsilon=zca_epsilon, n_samples=zca_samples, seed=seed)
    else:
        model = None
    return Preprocessed(ds, remove_mean=remove_mean, zca=model)
