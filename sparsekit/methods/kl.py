"""(c) Sparse autoencoder with a KL penalty on mean activations (Ng, CS294A, 2011).

With ρ̂_j = (1/B) Σ_i A_ij the mean activation of unit j over the batch::

    Ω_H = β Σ_j [ ρ log(ρ/ρ̂_j) + (1 − ρ) log((1 − ρ)/(1 − ρ̂_j)) ]
    ∂Ω_H/∂A_ij = (β/B) ( −ρ/ρ̂_j + (1 − ρ)/(1 − ρ̂_j) )     (the same for every row i)

plus the weight decay of :mod:`~sparsekit.methods.l2`. f = g = sigmoid. (The 2011 wiki code
has the typo ``(1-rho)/rho_hat``; the formula above is the correct one.) The MNIST exercise
used H = 196, ρ = 0.1, λ = 3e-3, β = 3.

The gradient is one row shared by every sample, so the penalty is a
:class:`~sparsekit.core.contract.RowPenalty`; :func:`kl_penalty` is the formula, with a fused
twin below it (one pass over the code, the same bits for ρ̂ and the row).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused
from sparsekit.methods import (
    COLUMN_MEANS,
    Method,
    Param,
    RowPenalty,
    hookimpl,
    non_negative,
    open_unit_interval,
)
from sparsekit.methods.l2 import l2_penalty

# Keeps log() finite when a unit saturates; far below any ρ a user would pick.
_RHO_HAT_FLOOR = 1e-6


class KLSparse(Method):
    name = "kl"
    description = "Sigmoid autoencoder with a KL sparsity penalty on mean activations (Ng)."
    citation = "Ng, CS294A lecture notes 'Sparse autoencoder' (2011)"
    params = (
        Param(
            "rho", float, 0.1, "ρ, target mean activation of each hidden unit", open_unit_interval
        ),
        Param("beta", float, 3.0, "β, weight of the KL sparsity penalty", non_negative),
        Param("weight_decay", float, 3e-3, "λ, the L2 weight-decay strength", non_negative),
    )
    training_defaults = {"optimizer": "adam", "lr": 1e-3, "hidden": 196, "batch_size": 128}
    uses_code_penalty = True
    # ρ̂ is the batch's mean code: data-parallel training hands the global means to
    # penalty_from_column_means.
    batch_reduction = COLUMN_MEANS

    def code_penalty(self, xp, code):
        value, d_row = kl_penalty(xp, code, self.rho, self.beta, _RHO_HAT_FLOOR)
        return RowPenalty(value, d_row)

    def penalty_from_column_means(self, xp, means, rows):
        value, d_row = kl_from_means(xp, means, rows, self.rho, self.beta, _RHO_HAT_FLOOR)
        return RowPenalty(value, d_row)

    def weight_penalty(self, xp, weights):
        return l2_penalty(xp, weights, self.weight_decay)


@fused.op
def kl_penalty(xp: Any, code: Any, rho: float, beta: float, floor: float) -> tuple[Any, Any]:
    """``(Ω_H, ∂Ω_H/∂Hc row)`` for a B×H code, ρ̂ its column means clipped to
    [floor, 1 − floor]."""
    batch = code.shape[0]
    rho_hat = code.mean(axis=0)
    rho_hat = xp.clip(rho_hat, floor, 1 - floor)
    value = beta * xp.sum(
        rho * xp.log(rho / rho_hat) + (1 - rho) * xp.log((1 - rho) / (1 - rho_hat))
    )
    d_row = (beta / batch) * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    return value, d_row


def kl_from_means(
    xp: Any, means: Any, rows: int, rho: float, beta: float, floor: float
) -> tuple[Any, Any]:
    """:func:`kl_penalty` from ρ̂ given (the global batch's column means, under data-parallel
    training) for a share of ``rows`` rows: the value of the whole batch, and the gradient row
    with β/``rows`` (the trainer weights each share by rows/B, giving β/B)."""
    rho_hat = xp.clip(means, floor, 1 - floor)
    value = beta * xp.sum(
        rho * xp.log(rho / rho_hat) + (1 - rho) * xp.log((1 - rho) / (1 - rho_hat))
    )
    d_row = (beta / rows) * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
    return value, d_row


@kl_penalty.twin
def _kl_penalty_fused(xp: Any, code: Any, rho: float, beta: float, floor: float) -> Any:
    if not fused.usable(code) or code.ndim != 2 or code.shape[0] == 0:
        return fused.NOT_RUN
    t = code.dtype.type
    d_row = np.empty(code.shape[1], code.dtype)
    # Scalars as NumPy rounds them (each Python-float expression, then the array's dtype).
    args = (t(rho), t(1 - rho), t(-rho), t(beta / code.shape[0]), t(floor), t(1 - floor), t(1))
    fn = _kl_penalty_loop.ready(code.dtype.char, code[:0], d_row, *args)
    if fn is None:
        return fused.NOT_RUN
    return t(beta * fn(code, d_row, *args)), d_row


@fused.loop
def _kl_penalty_loop(code, d_row, rho, rho1, neg_rho, scale, lo, hi, one):  # pragma: no cover
    # ρ̂ and d_row in NumPy's order of operations (code.mean(axis=0) sums row after row, then
    # divides in float64 and rounds): the same bits; the divergence is summed in float64.
    rows, cols = code.shape
    for j in range(cols):
        d_row[j] = 0
    for r in range(rows):
        cr = code[r]
        for j in range(cols):
            d_row[j] += cr[j]
    total = 0.0
    for j in range(cols):
        d_row[j] = d_row[j] / rows  # (a float64 quotient, rounded to the dtype on storing)
        rh = d_row[j]
        if rh < lo:  # NumPy's clip; NaN stays NaN
            rh = lo
        elif rh > hi:
            rh = hi
        rest = one - rh
        total += np.float64(rho * np.log(rho / rh) + rho1 * np.log(rho1 / rest))
        d_row[j] = scale * (neg_rho / rh + rho1 / rest)
    return total


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(KLSparse)
