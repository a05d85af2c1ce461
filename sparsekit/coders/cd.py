"""The L1 problem by coordinate descent: covariance updates, with active sets on the CPU.

The problem is :mod:`sparsekit.coders.l1`'s, per row of the batch::

    F(z) = ½‖x − zD‖² + α‖z‖₁          (``positive``: also z ≥ 0)

With G = DDᵀ and c = xDᵀ, keep r = c − zG (minus the gradient of the quadratic). Minimising F
over the one coordinate z_j with the others fixed has a closed form, and the update of r
after it is one row of G (the "covariance updates" of Friedman, Hastie & Tibshirani 2010,
the algorithm of glmnet and of scikit-learn's ``lasso_cd`` with a precomputed Gram)::

    z_j ← S_{α/G_jj}(z_j + r_j / G_jj),        r ← r − (z_j^new − z_j^old) · G[j, :]

A cyclic sweep takes j = 0, 1, …, H−1 in turn (atoms with G_jj = 0 keep z_j = 0). The Gram
matrix is always formed (H² numbers: 4 MB at 1,000 atoms, 1 GiB at 16,384 in float32); for
dictionaries far wider than that, FISTA's residual form needs no G.

**Stopping rule.** The move of one coordinate measures how far it was from its own optimum:
|z_j^new − z_j^old|·G_jj is its KKT violation (|r_j − α·sign z_j| on the support,
|r_j| − α off it) whenever z_j keeps or takes a sign, and at most that when it drops to 0.
A row stops after the first full sweep whose largest move, so measured, is at most
``tol · (α + max_j |c_j|)`` (the same scale as the L1 coders' rounding slack), and at the
latest after ``max_iter`` full sweeps. ``tol`` is therefore a relative KKT tolerance, not
FISTA's relative change of the code.

**Active sets (the CPU twin).** Once a sweep has run over every atom, most of the work left
is among the few atoms in use: the twin then sweeps only the support S (r kept on S alone,
from a copy of G[S,S]: |S|² per sweep instead of H per move) until those moves are within
the tolerance, brings r up to date on every atom (|S|·H), and runs a full sweep again, which
either admits new atoms or ends the row. Each row is independent, so threads split the rows.
The reference (NumPy/CuPy, for any backend) makes full sweeps over all rows at once, a
coordinate at a time: the same fixed point, stopped by the same rule, so the two agree to
the tolerance (not bit for bit: the order of moves differs; ``tests/coders`` compares their
objectives and supports). On a GPU each coordinate is a few kernel launches: FISTA is the
GPU coder; coordinate descent is the CPU's (docs/coders.md, "Which coder when").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import array_module, fused
from sparsekit.backend.process import own_threads
from sparsekit.backend.threads import matmul
from sparsekit.coders.l1 import (
    POLISH_ROUNDS,
    CodeResult,
    Polish,
    check_coder_inputs,
    check_iterations,
    polish_codes,
)
from sparsekit.errors import ParameterError


def coordinate_descent(
    x: Any,
    dictionary: Any,
    alpha: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    init: Any | None = None,
    gram: Any | None = None,
    positive: bool = False,
    polish: bool = False,
) -> CodeResult:
    """Codes of ``x`` (B×D) on ``dictionary`` (H×D) minimising ½‖x − zD‖² + α‖z‖₁ per row,
    by cyclic coordinate descent (module docstring: the update, the stopping rule, the
    active sets of the CPU twin).

    ``tol`` is relative to α + max_j |(xDᵀ)_j| per row and bounds each coordinate's KKT
    violation at the last sweep; ``max_iter`` caps the full sweeps. ``init`` warm-starts the
    codes; ``gram`` (DDᵀ) skips recomputing it. ``polish`` ends with the exact active-set
    finish of :mod:`sparsekit.coders.l1` (off by default: at the default tolerance the codes
    are already within float32 rounding of the optimum's objective on the data of
    ``bench/coders_speed.py``). Returns a :class:`~sparsekit.coders.l1.CodeResult`;
    ``row_iterations`` counts full sweeps.
    """
    check_coder_inputs(x, dictionary)
    check_iterations(max_iter, tol, 1)
    if not alpha >= 0:
        raise ParameterError(f"alpha must be >= 0, got {alpha}")
    xp = array_module(x)
    batch, hidden = x.shape[0], dictionary.shape[0]
    if init is not None and init.shape != (batch, hidden):
        raise ParameterError(f"init must be B×H = {(batch, hidden)}, got {init.shape}")
    with own_threads():  # BLAS on one thread, as in a training step (see coders.l1)
        g = matmul(dictionary, dictionary.T) if gram is None else gram
        correlations = matmul(x, dictionary.T)
        if init is None:
            codes = xp.zeros((batch, hidden), dtype=x.dtype)
            residual = correlations.copy()
        else:
            codes = xp.array(init, dtype=x.dtype, copy=True)
            residual = correlations - matmul(codes, g)
        sweeps = cd_sweeps(
            xp, g, correlations, codes, residual, float(alpha), float(tol), max_iter, positive
        )
        rows = xp.minimum(sweeps, max_iter)
        most = int(rows.max()) if batch else 0
        result = CodeResult(codes, most, bool((sweeps <= max_iter).all()), rows)
        if polish and tol > 0:
            problem = Polish(xp, x, dictionary, g, correlations)
            certified = polish_codes(xp, codes, alpha, positive, problem, POLISH_ROUNDS)
            result.polished = int(certified.sum())
        return result


@fused.op
def cd_sweeps(
    xp: Any,
    gram: Any,
    correlations: Any,
    codes: Any,
    residual: Any,
    alpha: float,
    tol: float,
    max_iter: int,
    positive: bool,
) -> Any:
    """Cyclic coordinate descent on every row of ``codes`` (B×H, updated in place) with
    ``residual`` = c − zG kept up to date; returns each row's full sweeps (a (B,) integer
    array; ``max_iter + 1`` for a row that did not meet the tolerance).

    The reference sweeps every row at once, one coordinate after the other; a row that has
    met the tolerance is left as it is.
    """
    batch, hidden = codes.shape
    diag = np.asarray(_to_host(xp, xp.einsum("hh->h", gram)), dtype=np.float64)
    limit = tol * (alpha + xp.abs(correlations).max(axis=1))
    sweeps = xp.full(batch, max_iter + 1)
    done = xp.zeros(batch, dtype=bool)
    for sweep in range(1, max_iter + 1):
        worst = xp.zeros(batch, dtype=codes.dtype)
        for j in range(hidden):
            d = diag[j]
            if d <= 0:
                continue
            old = codes[:, j]
            moved = old + residual[:, j] / codes.dtype.type(d)
            threshold = codes.dtype.type(alpha / d)
            if positive:
                new = xp.maximum(moved - threshold, 0)
            else:
                new = moved - xp.clip(moved, -threshold, threshold)
            delta = xp.where(done, 0, new - old)
            codes[:, j] = old + delta
            worst = xp.maximum(worst, xp.abs(delta) * codes.dtype.type(d))
            residual -= delta[:, None] * gram[j][None, :]
        met = ~done & (worst <= limit)
        sweeps[met] = sweep
        done |= met
        if bool(done.all()):
            break
    return sweeps


def _to_host(xp: Any, a: Any) -> Any:
    return a if xp is np else a.get()


@cd_sweeps.twin
def _cd_sweeps_fused(
    xp: Any,
    gram: Any,
    correlations: Any,
    codes: Any,
    residual: Any,
    alpha: float,
    tol: float,
    max_iter: int,
    positive: bool,
) -> Any:
    if not (
        fused.usable(codes, residual, correlations)
        and fused.usable(gram)
        and gram.dtype == codes.dtype
        and gram.shape == (codes.shape[1], codes.shape[1])
    ):
        return fused.NOT_RUN
    dtype = codes.dtype.type
    batch, hidden = codes.shape
    sweeps = np.empty(batch, dtype=np.int64)
    ran = fused.run_row_blocks(
        _cd_rows_loop,
        (gram,),
        (correlations, codes, residual, sweeps),
        (dtype(alpha), dtype(tol), max_iter, bool(positive)),
        work_per_row=hidden * hidden,
    )
    return sweeps if ran else fused.NOT_RUN


@fused.loop
def _cd_rows_loop(gram, corr, z, r, sweeps, alpha, tol, max_iter, positive):  # pragma: no cover
    # Full and support sweeps repeat the coordinate update on purpose: one sweep body over an
    # index list (tried) was 1.5x slower (MNIST 31 -> 50 ms, one thread).
    hidden = gram.shape[0]
    zero = alpha - alpha
    support = np.empty(hidden, dtype=np.int64)
    start = np.empty(hidden, dtype=z.dtype)
    local = np.empty(hidden, dtype=z.dtype)
    for i in range(z.shape[0]):
        zi = z[i]
        ri = r[i]
        limit = tol * (alpha + (np.abs(corr[i]).max() if hidden else zero))
        sweeps[i] = max_iter + 1
        for sweep in range(1, max_iter + 1):
            # A full sweep, r kept exact on every atom.
            worst = zero
            for j in range(hidden):
                d = gram[j, j]
                if d <= 0:
                    continue
                old = zi[j]
                moved = old + ri[j] / d
                threshold = alpha / d
                if moved > threshold:
                    new = moved - threshold
                elif moved < -threshold and not positive:
                    new = moved + threshold
                else:
                    new = zero
                delta = new - old
                if delta != 0:
                    zi[j] = new
                    worst = max(worst, abs(delta) * d)
                    for h in range(hidden):
                        ri[h] -= delta * gram[j, h]
            if worst <= limit:
                sweeps[i] = sweep
                break
            # Sweeps over the support alone, r kept on it, until its moves are small.
            n = 0
            for j in range(hidden):
                if zi[j] != 0:
                    support[n] = j
                    start[n] = zi[j]
                    local[n] = ri[j]
                    n += 1
            sub = np.empty((n, n), dtype=z.dtype)
            for a in range(n):
                for b in range(n):
                    sub[a, b] = gram[support[a], support[b]]
            for _ in range(max_iter):
                inner = zero
                for a in range(n):
                    j = support[a]
                    d = sub[a, a]
                    old = zi[j]
                    moved = old + local[a] / d
                    threshold = alpha / d
                    if moved > threshold:
                        new = moved - threshold
                    elif moved < -threshold and not positive:
                        new = moved + threshold
                    else:
                        new = zero
                    delta = new - old
                    if delta != 0:
                        zi[j] = new
                        inner = max(inner, abs(delta) * d)
                        for b in range(n):
                            local[b] -= delta * sub[a, b]
                if inner <= limit:
                    break
            # r on every atom again: r −= Σ_S (z_S − z_S at the start) G[S, :].
            for a in range(n):
                j = support[a]
                delta = zi[j] - start[a]
                if delta != 0:
                    for h in range(hidden):
                        ri[h] -= delta * gram[j, h]
