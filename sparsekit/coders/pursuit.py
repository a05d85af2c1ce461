"""Matching pursuit (Mallat & Zhang 1993), batched over rows, on NumPy or CuPy.

For a signal r₀ = x (one row) and a dictionary D (H × D, atoms as rows, unit norm for the
classic algorithm), k greedy steps::

    j_t = argmax_j max(⟨r_{t−1}, d_j⟩, 0)        (the atom most positively correlated)
    c_t = max(⟨r_{t−1}, d_{j_t}⟩, 0)
    r_t = r_{t−1} − c_t d_{j_t}
    z   = Σ_t c_t e_{j_t}                        (so x = z D + r_k)

This is SAELens' matching pursuit (``sae_lens/saes/matching_pursuit_sae.py``,
``_encode_matching_pursuit``): the argmax is over ReLU(⟨r, d⟩), not |⟨r, d⟩|, so every
coefficient is ≥ 0 (a step whose best correlation is ≤ 0 adds nothing), and an atom may be
chosen again at a later step, its coefficients adding up (``scatter_add_``). overcomplete's
``MpSAE`` takes the signed argmax without the ReLU; with ``nonnegative=False`` this function
does that. Ties go to the lowest index. With unit-norm atoms each step is the orthogonal
projection of the residual on the chosen atom, so ‖r_t‖ never grows.

Each step costs one B×D by D×H product (the correlations) plus O(B·D); no B×H array but the
correlations is kept. Every array keeps the dtype of ``x`` (float32 stays float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparsekit.backend import array_module
from sparsekit.backend.threads import matmul
from sparsekit.errors import ParameterError


@dataclass
class Pursuit:
    """The result of :func:`matching_pursuit` for a batch of B rows and k steps.

    ``indices`` (B × k integers) is the atom chosen at each step, ``coefficients`` (B × k) its
    coefficient c_t, ``residual`` (B × D) the final residual r_k = x − z D.
    """

    indices: Any
    coefficients: Any
    residual: Any

    def code(self, hidden: int, xp: Any = None) -> Any:
        """The dense B × H code z (coefficients of a repeated atom summed); ``xp`` as for
        :func:`matching_pursuit`."""
        xp = array_module(self.coefficients) if xp is None else xp
        rows = self.indices.shape[0]
        z = xp.zeros((rows, hidden), dtype=self.coefficients.dtype)
        row_ids = xp.arange(rows)
        for t in range(self.indices.shape[1]):  # one entry per row each step: no clash
            z[row_ids, self.indices[:, t]] += self.coefficients[:, t]  # repeats add up
        return z


def matching_pursuit(
    x: Any,
    dictionary: Any,
    k: int,
    *,
    nonnegative: bool = True,
    indices: Any = None,
    gram: bool | None = None,
    xp: Any = None,
) -> Pursuit:
    """k steps of matching pursuit of every row of ``x`` (B × D) over ``dictionary`` (H × D).

    Returns a :class:`Pursuit` (the chosen atoms, their coefficients, the final residual).
    ``nonnegative`` (SAELens' rule, the default): argmax of ReLU(⟨r, d⟩) and c_t ≥ 0 (when no
    correlation is positive, SAELens' argmax of zeros picks atom 0 with c_t = 0, and so does
    this); false: the signed argmax and c_t = ⟨r, d⟩ (overcomplete's). With ``indices``
    (B × k) the selections are taken as given and only the coefficients and residuals are
    computed (a gradient that holds the selections fixed is checked against this).

    ``gram``: update the correlations with the Gram matrix, C ← C − c_t·(D Dᵀ)[j_t] (H² D
    once, then B·H per step) instead of recomputing R Dᵀ at every step (B·H·D per step);
    ``None`` does so when it is fewer operations (H ≤ k·B). Either way c_t is computed from
    the residual itself, ⟨r_{t−1}, d_{j_t}⟩, so the code and the residual are the same; only a
    near-tie of two correlations (to rounding) can pick the other atom. Atoms should have
    unit norm; the function does not normalise them. ``xp``: the array module (default: the
    one of ``x``, NumPy or CuPy; a :class:`~sparsekit.backend.Backend`'s ``xp`` for others).
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ParameterError(f"matching_pursuit: k must be a positive integer, got {k!r}")
    if x.ndim != 2 or dictionary.ndim != 2 or x.shape[1] != dictionary.shape[1]:
        raise ParameterError(
            f"matching_pursuit: x is {tuple(x.shape)} and the dictionary {tuple(dictionary.shape)}"
            "; expected B × D and H × D"
        )
    xp = array_module(x) if xp is None else xp
    rows, hidden = x.shape[0], dictionary.shape[0]
    k = int(k)
    if indices is not None and tuple(indices.shape) != (rows, k):
        raise ParameterError(
            f"matching_pursuit: indices have shape {tuple(indices.shape)}, expected {(rows, k)}"
        )
    if gram is None:
        gram = hidden <= k * rows
    residual = x.copy()
    chosen = xp.empty((rows, k), dtype=xp.int64) if indices is None else indices
    coefficients = xp.empty((rows, k), dtype=x.dtype)
    row_ids = xp.arange(rows)
    corr = gram_matrix = None
    if indices is None and gram:
        corr = matmul(residual, dictionary.T)
        gram_matrix = matmul(dictionary, dictionary.T)
    for t in range(k):
        if indices is not None:
            j = indices[:, t]
        else:
            if not gram:
                corr = matmul(residual, dictionary.T)
            j = xp.argmax(corr, axis=1)
            if nonnegative:  # argmax of ReLU(C): atom 0 when nothing is positive
                j = xp.where(corr[row_ids, j] > 0, j, 0)
            chosen[:, t] = j
        atoms = dictionary[j]
        c = xp.einsum("bd,bd->b", residual, atoms)
        if nonnegative:
            xp.maximum(c, 0, out=c)
        coefficients[:, t] = c
        residual -= c[:, None] * atoms
        if gram_matrix is not None and t + 1 < k:
            corr -= c[:, None] * gram_matrix[j]
    return Pursuit(chosen, coefficients, residual)
