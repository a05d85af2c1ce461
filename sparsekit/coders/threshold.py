"""The thresholding coder: one soft threshold of the correlations, no optimisation.

    Z = S_α(X Dᵀ),   S_t(v) = sign(v)·max(|v| − t, 0)   (``positive``: max(v − t, 0))

It is the first ISTA step from Z = 0 with step 1 (exact for an orthonormal dictionary, where
it solves the L1 problem; otherwise an approximation that ignores how atoms overlap), and
scikit-learn's ``sparse_encode(..., algorithm="threshold")``. One product (B·H·D), so the
cheapest coder and the encoder of a tied ReLU autoencoder with bias −α.
"""

from __future__ import annotations

from typing import Any

from sparsekit.backend import array_module
from sparsekit.backend.threads import matmul
from sparsekit.coders.l1 import check_coder_inputs, soft_threshold
from sparsekit.errors import ParameterError


def threshold(x: Any, dictionary: Any, alpha: float, *, positive: bool = False) -> Any:
    """Codes S_α(x Dᵀ) of ``x`` (B×D) on ``dictionary`` (H×D): a B×H array."""
    check_coder_inputs(x, dictionary)
    if not alpha >= 0:
        raise ParameterError(f"alpha must be >= 0, got {alpha}")
    return soft_threshold(array_module(x), matmul(x, dictionary.T), alpha, positive)
