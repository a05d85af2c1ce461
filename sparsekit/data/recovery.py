"""How well an estimated dictionary recovers a ground-truth one.

Atoms are only identifiable up to order and sign, so the estimate is first matched to the
truth: a one-to-one assignment (Hungarian algorithm) that maximises the total ``|cos|``
between paired atoms, then each estimated atom gets the sign that agrees with its partner.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.errors import ParameterError


def _unit_columns(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=0)
    return a / np.where(norms > 0, norms, 1.0)


def _check(a_true: Any, a_est: Any) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(a_true, dtype=np.float64)
    e = np.asarray(a_est, dtype=np.float64)
    if t.ndim != 2 or e.ndim != 2:
        raise ParameterError(
            f"dictionaries must be 2-D (dim x atoms), got shapes {t.shape} and {e.shape}"
        )
    if t.shape[0] != e.shape[0]:
        raise ParameterError(
            f"dictionaries have different dimensions: {t.shape[0]} and {e.shape[0]}"
        )
    if e.shape[1] < t.shape[1]:
        raise ParameterError(
            f"the estimate has {e.shape[1]} atoms, fewer than the {t.shape[1]} true atoms"
        )
    if not (np.isfinite(t).all() and np.isfinite(e).all()):
        raise ParameterError("dictionaries contain NaN or infinite values")
    return t, e


def match_dictionaries(
    a_true: np.ndarray, a_est: np.ndarray, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair each true atom ``i`` with estimated atom ``perm[i]``.

    Returns ``(perm, signs, distances)``: ``distances[i] = ‖signs[i] * a_est[:, perm[i]] -
    a_true[:, i]‖``. Matching uses ``|a_trueᵀ a_est|`` on unit-normalised columns; with
    ``normalize`` (default) the distances are computed on unit-normalised estimated atoms
    too, so they range from 0 (same direction) to sqrt(2) (orthogonal). The estimate may
    have more atoms than the truth (unmatched ones are ignored).
    """
    from scipy.optimize import linear_sum_assignment  # imported here: scipy is slow to import

    t, e = _check(a_true, a_est)
    e_unit = _unit_columns(e)
    similarity = np.abs(_unit_columns(t).T @ e_unit)
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    perm = np.empty(t.shape[1], dtype=np.intp)
    perm[rows] = cols
    paired = (e_unit if normalize else e)[:, perm]
    dots = np.einsum("ij,ij->j", t, paired)
    signs = np.where(dots < 0, -1.0, 1.0)
    distances = np.linalg.norm(paired * signs - t, axis=0)
    return perm, signs, distances


def recovery_distance(
    a_true: np.ndarray, a_est: np.ndarray, *, reduce: str = "max", normalize: bool = True
) -> float:
    """``max_i ‖σ_i a_est[:, π(i)] - a_true[:, i]‖`` after matching (``reduce="mean"`` for
    the mean over atoms)."""
    _, _, distances = match_dictionaries(a_true, a_est, normalize=normalize)
    if reduce == "max":
        return float(distances.max())
    if reduce == "mean":
        return float(distances.mean())
    raise ParameterError(f"reduce must be 'max' or 'mean', got {reduce!r}")


def recovery_summary(
    a_true: np.ndarray, a_est: np.ndarray, *, threshold: float = 0.1, normalize: bool = True
) -> dict[str, float]:
    """Max, mean and median matched distance, and the fraction of true atoms recovered
    within ``threshold``."""
    _, _, d = match_dictionaries(a_true, a_est, normalize=normalize)
    return {
        "max": float(d.max()),
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "recovered": float((d <= threshold).mean()),
    }
