"""(d) Neural sparse coding of Arora, Ge, Ma & Moitra (COLT 2015).

"Simple, Efficient, and Neural Algorithms for Sparse Coding", arXiv:1503.00778. Not an
autoencoder gradient but an alternating update of a dictionary whose atoms are the rows of
W (H×D, unit norm; the paper's A is Wᵀ). For a minibatch Y (B×D)::

    S = Y Wᵀ                         correlations                 B×H
    X = S ∘ 1[|S| ≥ τ]               hard-threshold decoding, τ = C/2
    R = X W − Y                      residual                     B×D
    ĝ = (1/B) sgn(X)ᵀ R              H×D
    W ← W − η ĝ ;  renormalise every row to unit norm

As a model, this is the generic step with f = g = identity, mask 1[|Z| ≥ τ], tied weights
and zero biases, so its reconstruction loss (1/2B)‖X W − Y‖² is what the trainer reports and
what the gradient check differentiates; :meth:`Arora.update` replaces the optimizer. On data
from an incoherent dictionary with k-sparse ±1 codes (C = 1) it recovers the dictionary
(``tests/test_methods.py``). η = Θ(H/k) in the analysis.

Defaults are for MNIST-like data (pixels in [0, 1], ‖y‖ ≈ 9): random unit atoms, τ = 1 and
η = 0.1 (data-sampled atoms correlate with every digit and switch every unit on). For
synthetic data with ±1 codes use τ = 0.5 (C = 1) and η ≈ H/k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused
from sparsekit.backend.sparse_code import nonzero_times, nonzero_transpose_times
from sparsekit.methods import (
    IDENTITY,
    ROW_MEAN,
    Forward,
    Param,
    StepResult,
    UpdateMethod,
    hookimpl,
    non_negative,
    pre_activation,
)

INITS = ("data", "random")


def _init_choice(value: str, _size) -> str | None:
    return None if value in INITS else f"must be one of {', '.join(INITS)}, got {value!r}"


class Arora(UpdateMethod):
    name = "arora"
    description = (
        "Neurally plausible sparse coding: threshold decoding, Hebbian-like update (Arora et al.)."
    )
    citation = "Arora, Ge, Ma & Moitra, 'Simple, Efficient, and Neural Algorithms for Sparse Coding', COLT 2015"
    params = (
        Param(
            "tau",
            float,
            1.0,
            "decoding threshold τ = C/2 on |correlation| (0.5 for ±1 codes)",
            non_negative,
        ),
        Param(
            "init",
            str,
            "random",
            "initial atoms: 'random' or 'data' (normalised samples)",
            _init_choice,
        ),
        Param("renormalize", bool, True, "renormalise atoms to unit norm after every step"),
    )
    tied = True
    allows_untied = False
    # ĝ and the loss are means over rows, each row decoded alone: update() sums them with
    # ``reduce`` under data-parallel training.
    batch_reduction = ROW_MEAN
    training_defaults = {"lr": 0.1, "hidden": 196, "batch_size": 128, "epochs": 10}

    def init_params(self, rng, dim, hidden, tied, sample):
        if self.init == "data" and sample is not None and len(sample) > 0:
            rows = rng.choice(len(sample), size=hidden, replace=len(sample) < hidden)
            atoms = np.asarray(sample[rows], dtype=np.float64) + 1e-3 * rng.standard_normal(
                (hidden, dim)
            )
        else:
            atoms = rng.standard_normal((hidden, dim))
        atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
        return {"W_enc": atoms, "b_enc": np.zeros(hidden), "b_dec": np.zeros(dim)}

    hidden_activation = IDENTITY
    output_activation = IDENTITY

    def mask(self, xp, z, a, training):
        support = xp.abs(z)
        xp.greater_equal(support, self.tau, out=support)  # 0/1 in z's dtype, one temporary
        return support

    def decode(self, backend, params, y):
        """The forward pass (hard-threshold decoding) and sgn(X).

        A subclass that decodes differently overrides this (and :meth:`mask`)."""
        xp = backend.xp
        z = pre_activation(xp, params, y)
        code, sgn, support = threshold_code(xp, z, self.tau)
        out = nonzero_times(xp, code, params["W_enc"])  # X W, by X's ~2% nonzeros on the CPU
        out += params["b_dec"]
        return Forward(z, z, support, code, None, out, out), sgn

    def direction(self, backend, params, y, scale=1.0):
        """``(scale·ĝ, forward pass, R)``: ĝ = (1/B) sgn(X)ᵀ R, the scale applied to the
        B×D residual rather than the H×D product (fewer passes)."""
        fwd, sgn = self.decode(backend, params, y)
        residual = fwd.xhat - y
        step = nonzero_transpose_times(backend.xp, sgn, residual * (scale / y.shape[0]))
        return step, fwd, residual

    def update(self, backend, params, x, lr, reduce=None):
        xp = backend.xp
        step, fwd, residual = self.direction(backend, params, x, scale=lr)
        loss = 0.5 * xp.vdot(residual, residual) / x.shape[0]
        if reduce is not None:  # data parallel: the global batch's ĝ and loss, every rank
            step, loss = reduce(step), reduce(loss)
        atom_update(xp, params["W_enc"], step, self.renormalize)
        return StepResult(loss, loss, fwd)


# -- the decoding and the atom update, with their fused twins ---------------------------------


@fused.op
def threshold_code(xp: Any, z: Any, tau: float) -> tuple[Any, Any, Any]:
    """``(X, sgn(X), support)``: support = 1[|Z| ≥ τ] (0/1 in Z's dtype), X = Z ∘ support."""
    support = xp.abs(z)
    xp.greater_equal(support, tau, out=support)
    code = z * support
    return code, xp.sign(code), support


@threshold_code.twin
def _threshold_code_fused(xp: Any, z: Any, tau: float) -> Any:
    code, sgn, support = xp.empty_like(z), xp.empty_like(z), xp.empty_like(z)
    if not fused.run(_threshold_code_loop, (z, code, sgn, support), (tau, 1.0, 0.0)):
        return fused.NOT_RUN
    return code, sgn, support


@fused.loop
def _threshold_code_loop(z, code, sgn, support, tau, one, zero):  # pragma: no cover - compiled
    for i in range(z.size):
        zi = z[i]
        keep = one if abs(zi) >= tau else zero
        ci = zi * keep  # a product, as NumPy's, so NaN stays NaN
        support[i] = keep
        code[i] = ci
        # np.sign's value: ±1, +0 for ±0, NaN for NaN (Numba's own sign keeps −0)
        if ci > zero:
            sgn[i] = one
        elif ci < zero:
            sgn[i] = -one
        elif ci != ci:
            sgn[i] = ci
        else:
            sgn[i] = zero


@fused.op
def atom_update(xp: Any, w: Any, step: Any, renormalize: bool) -> None:
    """W ← W − step in place, then (if ``renormalize``) every row scaled to unit norm."""
    w -= step
    if renormalize:
        norms = xp.sqrt(xp.einsum("hd,hd->h", w, w))
        inverse = 1.0 / xp.maximum(norms, 1e-12)
        w *= inverse[:, None]  # a multiply is cheaper than a divide over H×D


@atom_update.twin
def _atom_update_fused(xp: Any, w: Any, step: Any, renormalize: bool) -> Any:
    return (
        None
        if fused.run_rows(_atom_update_loop, (w, step), (renormalize, 1e-12))
        else fused.NOT_RUN
    )


# Reassociation allowed: the row's Σw² is summed in any order, so it vectorises; nothing else
# in the loop can be reassociated. The sum is in float64, so the norms differ from the
# reference's float32 einsum by rounding (tests/backend/test_fused.py states the tolerance).
@fused.loop(fastmath={"reassoc"})
def _atom_update_loop(w, step, renormalize, tiny):  # pragma: no cover - runs compiled
    rows, cols = w.shape
    scale = np.empty(1, w.dtype)  # the row's factor, rounded to w's dtype
    for r in range(rows):
        wr, sr = w[r], step[r]
        total = 0.0
        for c in range(cols):
            wi = wr[c] - sr[c]
            wr[c] = wi
            total += np.float64(wi) * np.float64(wi)
        if renormalize:
            scale[0] = 1.0 / max(np.sqrt(total), tiny)
            factor = scale[0]
            for c in range(cols):
                wr[c] *= factor


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(Arora)
