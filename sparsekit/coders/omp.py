"""Orthogonal matching pursuit: exactly k atoms per row, batched over the Gram matrix.

For every row x of the batch, k times (Pati, Rezaiifar & Krishnaprasad 1993; the Gram form
of Rubinstein, Zibulevsky & Elad 2008, scikit-learn's ``orthogonal_mp_gram``)::

    j    = argmax_{i ∉ S} |c_i|,            c = xDᵀ − γ G[S, :]   (the residual's correlations)
    S    ← S ∪ {j}
    γ    = argmin ‖x − γ D[S]‖²  = (G[S, S])⁻¹ (xDᵀ)[S]

with G = DDᵀ. G[S, S] = LLᵀ is kept as a Cholesky factor grown by one row per atom: the new
row w solves L w = G[S, j] (forward substitution), its diagonal is √(G[j, j] − w·w). Then
γ = L⁻ᵀ L⁻¹ (xDᵀ)[S], where L⁻¹(xDᵀ)[S] also grows by one entry per atom, so each atom costs
two triangular sweeps over the support. All of it runs on the whole batch at once: the
sweeps are loops over the support's t ≤ k positions, each an operation on B-vectors, and the
correlation update is one gathered product (B·t·H). G and xDᵀ are computed once per call
(H²·D + B·H·D).

Exactly k atoms: an atom already chosen is never chosen again (its correlation is ~0 after
the projection anyway; it is excluded explicitly so rounding cannot pick it). When x lies in
the span of fewer than k atoms the remaining picks add atoms with a zero coefficient;
scikit-learn stops early there with a warning. A pick that is linearly dependent on the
support (G[j, j] − w·w ≤ eps·G[j, j]) gets a zero coefficient too.
"""

from __future__ import annotations

from typing import Any

from sparsekit.backend import array_module
from sparsekit.backend.process import own_threads
from sparsekit.backend.threads import matmul
from sparsekit.coders.l1 import check_coder_inputs
from sparsekit.errors import ParameterError


def omp(x: Any, dictionary: Any, k: int, *, gram: Any | None = None) -> Any:
    """Codes (B×H, exactly ``k`` nonzero positions per row) of ``x`` (B×D) on
    ``dictionary`` (H×D) by orthogonal matching pursuit (see the module docstring).

    ``gram`` (DDᵀ) skips recomputing it when the dictionary has not changed. The atoms need
    not have unit norm (the argmax is over raw correlations, as scikit-learn's).
    """
    check_coder_inputs(x, dictionary)
    h = dictionary.shape[0]
    if not 1 <= k <= h:
        raise ParameterError(f"k must be between 1 and the number of atoms ({h}), got {k}")
    with own_threads():  # BLAS on one thread, as in a training step (see coders.l1)
        return _omp(array_module(x), x, dictionary, k, gram)


def _omp(xp: Any, x: Any, dictionary: Any, k: int, gram: Any | None) -> Any:
    h = dictionary.shape[0]
    dtype = x.dtype
    b = x.shape[0]
    g = matmul(dictionary, dictionary.T) if gram is None else gram
    xd = matmul(x, dictionary.T)  # B×H
    diag = xp.einsum("hh->h", g)
    eps = xp.finfo(dtype).eps
    rows = xp.arange(b)
    chosen = xp.zeros((b, k), dtype=xp.int64)
    factor = xp.zeros((b, k, k), dtype=dtype)  # L, lower triangular, one per row
    forward = xp.zeros((b, k), dtype=dtype)  # u = L⁻¹ (xDᵀ)[S]
    gathered = xp.zeros((b, k, h), dtype=dtype)  # G[S, :], one row per chosen atom
    taken = xp.zeros((b, h), dtype=bool)
    coef = xp.zeros((b, k), dtype=dtype)
    corr = xd
    for t in range(k):
        scores = xp.where(taken, -1, xp.abs(corr))
        j = scores.argmax(axis=1)
        chosen[:, t] = j
        taken[rows, j] = True
        gathered[:, t, :] = g[j]
        # The factor's new row: L[:t, :t] w = G[S, j], then L[t, t] = √(G[j, j] − w·w).
        g_sj = xp.take_along_axis(gathered[:, :t, :], j[:, None, None], axis=2)[:, :, 0]
        w = _forward_sweep(xp, factor, g_sj, t)
        factor[:, t, :t] = w
        gjj = diag[j]
        d2 = gjj - xp.einsum("bi,bi->b", w, w)
        independent = d2 > eps * gjj
        d = xp.sqrt(xp.where(independent, d2, 1))
        factor[:, t, t] = d
        # u_t = ((xDᵀ)_j − L[t, :t]·u[:t]) / L[t, t]; a dependent pick gets u_t = 0.
        u_t = xd[rows, j] - xp.einsum("bi,bi->b", w, forward[:, :t])
        forward[:, t] = xp.where(independent, u_t / d, 0)
        coef = _backward_sweep(xp, factor, forward, t + 1)
        corr = xd - xp.einsum("bt,bth->bh", coef[:, : t + 1], gathered[:, : t + 1, :])
    codes = xp.zeros((b, h), dtype=dtype)
    codes[rows[:, None], chosen] = coef
    return codes


def _forward_sweep(xp: Any, factor: Any, rhs: Any, t: int) -> Any:
    """w with L[:t, :t] w = rhs, for every row (rhs: B×t)."""
    w = xp.zeros_like(rhs)
    for i in range(t):
        w[:, i] = (rhs[:, i] - xp.einsum("bi,bi->b", factor[:, i, :i], w[:, :i])) / factor[:, i, i]
    return w


def _backward_sweep(xp: Any, factor: Any, u: Any, t: int) -> Any:
    """γ with L[:t, :t]ᵀ γ = u[:, :t], for every row: a B×k array, zero beyond t."""
    gamma = xp.zeros_like(u)
    for i in range(t - 1, -1, -1):
        gamma[:, i] = (
            u[:, i] - xp.einsum("bj,bj->b", factor[:, i + 1 : t, i], gamma[:, i + 1 : t])
        ) / factor[:, i, i]
    return gamma
