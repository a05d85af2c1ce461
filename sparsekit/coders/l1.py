"""The L1 problem: ISTA and FISTA over a batch, and the Lipschitz constant they step by.

For a dictionary D (H × D, atoms as rows) and a batch X (B × D), every row z of the code Z
(B × H) minimises, independently of the other rows::

    F(z) = ½‖x − zD‖² + α‖z‖₁                   (per row; the batch objective is Σ_rows F)

(with ``positive=True``, also z ≥ 0). scikit-learn's ``sparse_encode(X, D, alpha=α,
algorithm="lasso_lars" | "lasso_cd")`` solves the same problem at the same α: it divides α
by the number of features before calling ``Lasso`` / ``LassoLars``, whose objective is
(1/(2·n_features))‖x − zD‖² + (α/n_features)‖z‖₁ = F(z)/n_features. A ``Lasso(alpha=a)``
used directly corresponds to α = a · n_features here.

**ISTA** (proximal gradient, step 1/L with L = λ_max(DDᵀ))::

    z ← S_{α/L}(z − (1/L)(zG − C)),   G = DDᵀ (H×H),  C = XDᵀ (B×H),
    S_t(v) = sign(v)·max(|v| − t, 0)    (positive: max(v − t, 0))

**FISTA** (Beck & Teboulle 2009): the same step taken at the extrapolated point
y_k = z_k + ((t_k − 1)/t_{k+1})(z_k − z_{k−1}), t_{k+1} = (1 + √(1 + 4t_k²))/2, t_1 = 1.

**Cost per iteration.** The gradient zDDᵀ − XDᵀ is formed either from the Gram matrix
(zG: B·H² multiply-adds, after G and C once per call: H²·D + B·H·D) or from the residual
((zD − X)Dᵀ: 2·B·H·D). The Gram form is chosen when H ≤ 2D (cheaper per iteration: 256
atoms on 144-pixel patches, 1,000 atoms on 784-pixel MNIST), the residual form otherwise.
Either way an iteration is one or two BLAS products over the whole batch, no loop over
rows, on NumPy or CuPy alike. On the CPU each call runs as a training step does: BLAS on one
thread, the large products split over sparsekit's own threads (:func:`own_threads`; the
previous BLAS limits are back on return). A multi-threaded BLAS that spins between the
hundreds of products of one call cost 30× the time on a busy machine.

**Stopping rule.** Each row stops on its own, as soon as the relative change of its code
is small, ‖z_{k+1} − z_k‖ ≤ tol · ‖z_{k+1}‖ (checked every ``check_every`` iterations), and
at the latest after ``max_iter`` iterations; the rows that stopped leave the batch, so the
products shrink as rows converge (a few slow rows no longer hold the whole batch).
``tol=0`` never checks: exactly ``max_iter`` iterations for every row and no host
synchronisation on a GPU (each check reads one flag back). The result says how many
iterations each row ran and whether every row met the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit.backend import array_module
from sparsekit.backend.process import own_threads
from sparsekit.backend.sparse_code import nonzero_times
from sparsekit.backend.threads import matmul
from sparsekit.errors import ParameterError

#: Power-iteration steps for :func:`lipschitz`, and the factor its estimate is raised by:
#: power iteration approaches λ_max from below, and a step 1/L with L below λ_max can
#: diverge; 1% above it costs ISTA/FISTA about 1% more iterations.
POWER_ITERATIONS = 30
LIPSCHITZ_MARGIN = 1.01


@dataclass
class CodeResult:
    """What an iterative coder returns.

    ``codes`` (B×H); ``iterations``, the most any row ran; ``converged``, whether every row
    met the tolerance (always false with ``tol=0``: the cap was the rule);
    ``row_iterations``, each row's count (an array of the input's namespace).
    """

    codes: Any
    iterations: int
    converged: bool
    row_iterations: Any = None


def check_coder_inputs(x: Any, dictionary: Any) -> None:
    if x.ndim != 2 or dictionary.ndim != 2:
        raise ParameterError(
            f"coders take a batch X (B×D) and a dictionary (H×D), got {x.ndim}-d and "
            f"{dictionary.ndim}-d arrays"
        )
    if x.shape[1] != dictionary.shape[1]:
        raise ParameterError(
            f"X has {x.shape[1]} features but the dictionary's atoms have {dictionary.shape[1]}"
        )
    if x.dtype != dictionary.dtype:
        raise ParameterError(
            f"X is {x.dtype} but the dictionary is {dictionary.dtype}: give both one dtype"
        )


def _check_iterations(max_iter: int, tol: float, check_every: int) -> None:
    if max_iter < 1:
        raise ParameterError(f"max_iter must be >= 1, got {max_iter}")
    if not tol >= 0:
        raise ParameterError(f"tol must be >= 0, got {tol}")
    if check_every < 1:
        raise ParameterError(f"check_every must be >= 1, got {check_every}")


def lipschitz(
    dictionary: Any, iterations: int = POWER_ITERATIONS, seed: int = 0, gram: Any | None = None
) -> Any:
    """λ_max(DDᵀ) (= ‖D‖₂², the Lipschitz constant of the gradient of ½‖x − zD‖²), by
    power iteration on the smaller of DDᵀ and DᵀD (or on ``gram``, DDᵀ, when given),
    raised by :data:`LIPSCHITZ_MARGIN`.

    A 0-d array of the dictionary's namespace and dtype (no host read on a GPU). The start
    vector is drawn from ``seed``, so the value is the same on every call.
    """
    xp = array_module(dictionary)
    h, d = dictionary.shape
    if gram is None:
        gram = matmul(dictionary, dictionary.T) if h <= d else matmul(dictionary.T, dictionary)
    start = np.random.default_rng(seed).standard_normal(gram.shape[0])
    v = xp.asarray(start, dtype=dictionary.dtype)
    v /= xp.sqrt(xp.vdot(v, v))
    for _ in range(iterations):
        w = gram @ v
        v = w / xp.maximum(xp.sqrt(xp.vdot(w, w)), xp.finfo(dictionary.dtype).tiny)
    return xp.vdot(v, gram @ v) * LIPSCHITZ_MARGIN


def soft_threshold(xp: Any, v: Any, t: Any, positive: bool = False) -> Any:
    """S_t(v) = sign(v)·max(|v| − t, 0), elementwise (``positive``: max(v − t, 0))."""
    if positive:
        out = v - t
        return xp.maximum(out, 0, out=out)
    return v - xp.clip(v, -t, t)  # two passes: v − clip(v, −t, t) is S_t(v)


def l1_objective(x: Any, dictionary: Any, codes: Any, alpha: float) -> Any:
    """F(z) = ½‖x − zD‖² + α‖z‖₁ for every row: a (B,) array."""
    xp = array_module(x)
    residual = x - matmul(codes, dictionary)
    return 0.5 * xp.einsum("bd,bd->b", residual, residual) + alpha * xp.abs(codes).sum(axis=1)


class _Gradient:
    """zDDᵀ − XDᵀ for one batch, in the cheaper of the Gram and residual forms."""

    def __init__(self, x: Any, dictionary: Any, gram: Any | None) -> None:
        h, d = dictionary.shape
        self.dictionary = dictionary
        self.use_gram = gram is not None or h <= 2 * d
        self.xp = array_module(x)
        self.x = x
        if self.use_gram:
            self.gram = matmul(dictionary, dictionary.T) if gram is None else gram
            self.correlations = matmul(x, dictionary.T)

    def __call__(self, z: Any) -> Any:
        if self.use_gram:
            g = nonzero_times(self.xp, z, self.gram)  # by z's few nonzeros, on the CPU
            g -= self.correlations
            return g
        residual = nonzero_times(self.xp, z, self.dictionary)
        residual -= self.x
        return matmul(residual, self.dictionary.T)

    def keep(self, rows: Any) -> None:
        """Drop every row of the batch but ``rows`` (the rows still iterating)."""
        self.x = self.x[rows]
        if self.use_gram:
            self.correlations = self.correlations[rows]


def _prepare(
    x: Any, dictionary: Any, alpha: float, init: Any | None, step: Any | None, gram: Any | None
) -> tuple[Any, Any, Any]:
    check_coder_inputs(x, dictionary)
    if not alpha >= 0:
        raise ParameterError(f"alpha must be >= 0, got {alpha}")
    xp = array_module(x)
    lipschitz_constant = lipschitz(dictionary, gram=gram) if step is None else step
    if init is None:
        z = xp.zeros((x.shape[0], dictionary.shape[0]), dtype=x.dtype)
    else:
        if init.shape != (x.shape[0], dictionary.shape[0]):
            raise ParameterError(
                f"init must be B×H = {(x.shape[0], dictionary.shape[0])}, got {init.shape}"
            )
        z = xp.array(init, dtype=x.dtype, copy=True)
    return xp, z, lipschitz_constant


def _proximal_gradient(*args: Any) -> CodeResult:
    """ISTA or FISTA (:func:`_iterate`) with BLAS on one thread and the large products split
    over sparsekit's own threads, as a training step runs (:func:`own_threads`)."""
    with own_threads():
        return _iterate(*args)


def _iterate(
    x: Any,
    dictionary: Any,
    alpha: float,
    accelerate: bool,
    max_iter: int,
    tol: float,
    check_every: int,
    init: Any | None,
    lipschitz_constant: Any | None,
    gram: Any | None,
    positive: bool,
) -> CodeResult:
    """ISTA (``accelerate=False``) or FISTA, every row stopping on its own (module docstring)."""
    _check_iterations(max_iter, tol, check_every)
    xp, z, lip = _prepare(x, dictionary, alpha, init, lipschitz_constant, gram)
    gradient = _Gradient(x, dictionary, gram)
    step = (1.0 / lip).astype(x.dtype) if hasattr(lip, "astype") else x.dtype.type(1.0 / lip)
    threshold = alpha * step
    batch = x.shape[0]
    codes = z if tol == 0 else xp.empty_like(z)  # rows written as they stop
    rows = xp.arange(batch)  # the rows still iterating, as rows of ``codes``
    row_iterations = xp.full(batch, max_iter)
    y, t = z, 1.0
    for iteration in range(1, max_iter + 1):
        v = gradient(y)
        v *= -step
        v += y
        new = soft_threshold(xp, v, threshold, positive)
        if tol > 0 and iteration % check_every == 0:
            change = new - z
            done = xp.einsum("bh,bh->b", change, change) <= (tol * tol) * xp.einsum(
                "bh,bh->b", new, new
            )
            if bool(done.any()):
                finished = rows[done]
                codes[finished] = new[done]
                row_iterations[finished] = iteration
                going = ~done
                if not bool(going.any()):
                    return CodeResult(codes, iteration, True, row_iterations)
                rows, new, z = rows[going], new[going], z[going]
                gradient.keep(going)
        if accelerate:
            t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
            y = new - z
            y *= (t - 1.0) / t_next
            y += new
            t = t_next
        else:
            y = new
        z = new
    if tol > 0:
        codes[rows] = z
    else:
        codes = z
    return CodeResult(codes, max_iter, False, row_iterations)


def ista(
    x: Any,
    dictionary: Any,
    alpha: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    check_every: int = 1,
    init: Any | None = None,
    lipschitz_constant: Any | None = None,
    gram: Any | None = None,
    positive: bool = False,
) -> CodeResult:
    """Codes of ``x`` (B×D) on ``dictionary`` (H×D) minimising ½‖x − zD‖² + α‖z‖₁ per row,
    by ISTA (see the module docstring for the step, its cost and the stopping rule).

    ``init`` warm-starts the codes (B×H); ``lipschitz_constant`` (λ_max(DDᵀ), e.g. from
    :func:`lipschitz`) and ``gram`` (DDᵀ) skip recomputing them when the dictionary has not
    changed. Returns a :class:`CodeResult`.
    """
    return _proximal_gradient(
        x,
        dictionary,
        alpha,
        False,
        max_iter,
        tol,
        check_every,
        init,
        lipschitz_constant,
        gram,
        positive,
    )


def fista(
    x: Any,
    dictionary: Any,
    alpha: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    check_every: int = 1,
    init: Any | None = None,
    lipschitz_constant: Any | None = None,
    gram: Any | None = None,
    positive: bool = False,
) -> CodeResult:
    """As :func:`ista`, with Beck & Teboulle's momentum (FISTA): the same fixed point, in
    O(1/k²) instead of O(1/k) of the objective's gap. The stopping rule is ISTA's, on the
    change of z_k (not of the extrapolated point)."""
    return _proximal_gradient(
        x,
        dictionary,
        alpha,
        True,
        max_iter,
        tol,
        check_every,
        init,
        lipschitz_constant,
        gram,
        positive,
    )
