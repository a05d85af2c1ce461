"""Synthetic sparse-coding data with a known ground-truth dictionary.

``y = A* x (+ noise)``: ``A*`` is a ``dim x atoms`` dictionary of random Gaussian columns
normalised to unit length, and every code ``x`` has exactly ``k`` non-zero entries at random
positions. Methods are judged by how well they recover ``A*`` (see
:mod:`sparsekit.data.recovery`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from sparsekit.data.arrays import ArrayFileDataset
from sparsekit.errors import ParameterError

VALUE_KINDS = ("pm1", "gaussian", "positive")


def mutual_coherence(dictionary: np.ndarray) -> float:
    """``max_{i != j} |a_iᵀ a_j|`` over the (normalised) columns of ``dictionary``."""
    a = np.asarray(dictionary, dtype=np.float64)
    norms = np.linalg.norm(a, axis=0)
    a = a / np.where(norms > 0, norms, 1.0)
    gram = np.abs(a.T @ a)
    np.fill_diagonal(gram, 0.0)
    return float(gram.max()) if gram.size > 1 else 0.0


def random_dictionary(dim: int, atoms: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian ``dim x atoms`` matrix with unit-norm columns."""
    a = rng.standard_normal((dim, atoms))
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def _codes(n: int, atoms: int, k: int, values: str, rng: np.random.Generator) -> np.ndarray:
    codes = np.zeros((n, atoms))
    support = np.argpartition(rng.random((n, atoms)), k - 1, axis=1)[:, :k]
    if values == "pm1":
        vals = rng.choice(np.array([-1.0, 1.0]), size=(n, k))
    elif values == "gaussian":
        vals = rng.standard_normal((n, k))
    else:  # positive
        vals = rng.uniform(0.5, 1.5, size=(n, k))
    np.put_along_axis(codes, support, vals, axis=1)
    return codes


@dataclass
class SparseCodingProblem:
    """A synthetic problem: ``signals = codes @ dictionary.T + noise``."""

    dictionary: np.ndarray  # (dim, atoms), unit-norm columns
    codes: np.ndarray  # (n, atoms), k non-zeros per row
    signals: np.ndarray  # (n, dim), float64
    params: dict[str, Any]

    @cached_property
    def dataset(self) -> ArrayFileDataset:
        """The signals as a data set (float64 kept; ``take`` casts to the asked dtype)."""
        return ArrayFileDataset(
            self.signals, name="synthetic", source={"kind": "synthetic", **self.params}
        )

    @property
    def coherence(self) -> float:
        """Mutual coherence of the ground-truth dictionary."""
        return mutual_coherence(self.dictionary)

    def sample(self, n: int, seed: int) -> SparseCodingProblem:
        """Fresh signals from the same dictionary (e.g. a test set)."""
        p = dict(self.params)
        rng = np.random.default_rng([seed, 1])
        codes = _codes(int(n), self.dictionary.shape[1], p["k"], p["values"], rng)
        signals = codes @ self.dictionary.T
        if p["noise"] > 0:
            signals += p["noise"] * rng.standard_normal(signals.shape)
        p.update(n=int(n), sample_seed=seed)
        return SparseCodingProblem(self.dictionary, codes, signals, p)


def make_sparse_coding(
    n: int = 30000,
    dim: int = 64,
    atoms: int = 100,
    k: int = 10,
    noise: float = 0.0,
    seed: int = 0,
    values: str = "pm1",
) -> SparseCodingProblem:
    """Generate ``n`` signals ``y = A* x + noise * N(0, I)`` with ``k``-sparse codes.

    ``values`` sets the non-zero code values: ``"pm1"`` (random signs), ``"gaussian"``
    (standard normal) or ``"positive"`` (uniform in [0.5, 1.5]).
    """
    for label, v in (("n", n), ("dim", dim), ("atoms", atoms), ("k", k)):
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise ParameterError(f"synthetic data: {label} must be a positive integer, got {v!r}")
    if k > atoms:
        raise ParameterError(f"synthetic data: k={k} non-zeros cannot exceed atoms={atoms}")
    if not float(noise) >= 0.0:
        raise ParameterError(f"synthetic data: noise must be >= 0, got {noise}")
    if values not in VALUE_KINDS:
        raise ParameterError(
            f"synthetic data: unknown values {values!r} (use {', '.join(VALUE_KINDS)})"
        )
    rng = np.random.default_rng(seed)
    dictionary = random_dictionary(int(dim), int(atoms), rng)
    codes = _codes(int(n), int(atoms), int(k), values, rng)
    signals = codes @ dictionary.T
    if noise > 0:
        signals += float(noise) * rng.standard_normal(signals.shape)
    params = {
        "n": int(n),
        "dim": int(dim),
        "atoms": int(atoms),
        "k": int(k),
        "noise": float(noise),
        "seed": seed,
        "values": values,
    }
    return SparseCodingProblem(dictionary, codes, signals, params)
