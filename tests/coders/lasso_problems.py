"""What the coder tests share beside their problems (the ``random_problem`` and
``mnist_problem`` fixtures of ``tests/conftest.py``): scikit-learn's exact LARS codes and
the support comparison."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import sparse_encode

#: Codes below this magnitude count as zero when supports are compared (both solvers stop
#: at a tolerance, so an entry that is exactly zero in one may be 1e-12 in the other).
SUPPORT_FLOOR = 1e-7

#: The fixtures every L1 comparison runs on.
PROBLEMS = ["random_problem", "mnist_problem"]


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def support(codes: np.ndarray) -> np.ndarray:
    return np.abs(codes) > SUPPORT_FLOOR


def lars(x: np.ndarray, dictionary: np.ndarray, alpha: float, positive: bool = False):
    """scikit-learn's exact L1 codes (``sparse_encode``'s ``lasso_lars``) at the same α."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparse_encode(
            x, dictionary, algorithm="lasso_lars", alpha=alpha, positive=positive
        )
