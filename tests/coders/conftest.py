"""The lasso problems the coder tests share (helpers in ``lasso_problems.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from lasso_problems import unit_rows


@pytest.fixture(scope="module")
def random_problem() -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(0)
    dictionary = unit_rows(rng.standard_normal((48, 24)))
    x = rng.standard_normal((30, 24))
    return x, dictionary, 0.5


@pytest.fixture(scope="module")
def mnist_problem(mnist_2000: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """40 MNIST rows coded on 100 other (normalised) rows: a coherent dictionary."""
    data = mnist_2000.astype(np.float64)
    return data[:40], unit_rows(data[1000:1100]), 1.0
