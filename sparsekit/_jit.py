"""Fused elementwise loops for the NumPy backend, compiled by Numba when it is available.

NumPy runs an expression such as Adam's update as a dozen separate passes over each weight
matrix, each reading and writing megabytes; the loops here do the same arithmetic in one
pass, element by element: Adam with weight decay takes a third of the time inside a
training step (``docs/performance.md``). They keep the NumPy formula's order of operations,
so results are the same bits (``tests/test_jit.py``); only sums of squares (weight decay's
value, Arora's row norms) are accumulated differently, in float64.

They are an optimisation only: every caller keeps its plain NumPy formula and runs it when a
loop cannot (:func:`run` returns False: Numba missing or broken, ``SPARSEKIT_JIT=0``, a
CuPy array, a non-contiguous or read-only array).

The loops are compiled on first use for the dtype they meet (float32 on the hot path,
float64 in gradient checks) and cached on disk by Numba, so later processes load them in a
fraction of a second. They release the GIL, so :func:`sparsekit.kernels.split_run` runs them
on disjoint slices in parallel (Numba's own thread pool is never used). Scalars are passed
already converted to the arrays' dtype: a Python float would make Numba compute in float64.
"""

from __future__ import annotations

import os
import threading
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np

_lock = threading.Lock()
_state: dict[str, Any] = {}
#: (loop, dtype) pairs compiled or loaded in this process.
_ready: set[tuple[str, str]] = set()


# -- the loops, as plain Python (compiled by Numba in _compile) --------------------------------


# The optimizer loops also return Σp² over their slice (p before the update, in float64):
# weight decay's value (λ/2)‖W‖² then costs no pass of its own. The sum runs in 16 lanes,
# which keeps the loop vectorised without reordering any float32 arithmetic. Each loop
# repeats the few lines of that lane skeleton around its own `update`: a shared driver
# taking the update as an argument compiles, but is not vectorised (7x slower, measured).
LANES = 16


def _adam(p, g, m, v, lam, b1, b2, eps, step):  # pragma: no cover - runs compiled
    """g ← g + λ·p (if λ);  m ← b1·(m − g) + g;  v ← b2·(v − g²) + g²;  p ← p − (m/(√v + eps))·step.

    The operations of :func:`sparsekit.optim._adam_update`, in its order: the same bits.
    """
    decay = lam != 0

    def update(i):
        pi = p[i]
        gi = g[i] + pi * lam if decay else g[i]  # (an if-statement here stops vectorising)
        g2 = gi * gi
        mi = (m[i] - gi) * b1 + gi
        vi = (v[i] - g2) * b2 + g2
        m[i] = mi
        v[i] = vi
        p[i] = pi - (mi / (np.sqrt(vi) + eps)) * step
        return np.float64(pi) * np.float64(pi)

    lanes = np.zeros(LANES, np.float64)
    full = p.size - p.size % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            lanes[lane] += update(start + lane)
    for i in range(full, p.size):
        lanes[0] += update(i)
    return lanes.sum()


def _momentum(p, g, vel, lam, mu, lr):  # pragma: no cover - runs compiled
    """g ← g + λ·p (if λ);  vel ← μ·vel − lr·g;  p ← p + vel."""
    decay = lam != 0

    def update(i):
        pi = p[i]
        gi = g[i] + pi * lam if decay else g[i]  # (an if-statement here stops vectorising)
        vi = vel[i] * mu - gi * lr
        vel[i] = vi
        p[i] = pi + vi
        return np.float64(pi) * np.float64(pi)

    lanes = np.zeros(LANES, np.float64)
    full = p.size - p.size % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            lanes[lane] += update(start + lane)
    for i in range(full, p.size):
        lanes[0] += update(i)
    return lanes.sum()


def _sgd(p, g, lam, lr):  # pragma: no cover - runs compiled
    """g ← g + λ·p (if λ);  p ← p − lr·g."""
    decay = lam != 0

    def update(i):
        pi = p[i]
        gi = g[i] + pi * lam if decay else g[i]  # (an if-statement here stops vectorising)
        p[i] = pi - gi * lr
        return np.float64(pi) * np.float64(pi)

    lanes = np.zeros(LANES, np.float64)
    full = p.size - p.size % LANES
    for start in range(0, full, LANES):
        for lane in range(LANES):
            lanes[lane] += update(start + lane)
    for i in range(full, p.size):
        lanes[0] += update(i)
    return lanes.sum()


def _add_scaled(g, w, scale):  # pragma: no cover - runs compiled
    """g ← g + scale·w (weight decay's λW added to a gradient, no temporary)."""
    for i in range(g.size):
        g[i] += w[i] * scale


def _sigmoid_grad_into(d, a, scale, one):  # pragma: no cover - runs compiled
    """d ← (d·scale) ∘ (a ∘ (1 − a)): a sigmoid's derivative from its output, applied."""
    for i in range(d.size):
        ai = a[i]
        d[i] = (d[i] * scale) * (ai * (one - ai))


def _output_grad(g, xhat, x, colsum, scale, one):  # pragma: no cover - runs compiled
    """The output layer's backward pass for a sigmoid output, in one pass over B×D::

    g ← ((X̂ − X)·scale) ∘ (X̂ ∘ (1 − X̂));  colsum ← Σ_rows g;  returns Σ (X̂ − X)²

    ``colsum`` is accumulated row after row, as NumPy's ``g.sum(axis=0)`` does (the same
    bits); the sum of squares in float64 (16 lanes per row, so the loop stays vectorised).
    """
    rows, cols = g.shape
    for j in range(cols):
        colsum[j] = 0
    lanes = np.zeros(LANES, np.float64)
    full = cols - cols % LANES
    for r in range(rows):
        gr, hr, xr = g[r], xhat[r], x[r]
        for start in range(0, full, LANES):
            for lane in range(LANES):
                j = start + lane
                h = hr[j]
                d = h - xr[j]
                v = (d * scale) * (h * (one - h))
                gr[j] = v
                colsum[j] += v
                lanes[lane] += np.float64(d) * np.float64(d)
        for j in range(full, cols):
            h = hr[j]
            d = h - xr[j]
            v = (d * scale) * (h * (one - h))
            gr[j] = v
            colsum[j] += v
            lanes[0] += np.float64(d) * np.float64(d)
    return lanes.sum()


def _hidden_grad(d, a, row, colsum, scale, one):  # pragma: no cover - runs compiled
    """d ← ((d + row)·scale) ∘ (A ∘ (1 − A));  colsum ← Σ_rows d (B×H, one pass).

    ``row`` is a code penalty's gradient when it is the same for every sample (KL), else
    zeros. The order of operations of ``d += row; d *= scale·f′`` and ``d.sum(axis=0)``.
    """
    rows, cols = d.shape
    for j in range(cols):
        colsum[j] = 0
    for r in range(rows):
        dr, ar = d[r], a[r]
        for j in range(cols):
            ai = ar[j]
            v = ((dr[j] + row[j]) * scale) * (ai * (one - ai))
            dr[j] = v
            colsum[j] += v


def _kl_penalty(code, d_row, rho, rho1, neg_rho, scale, lo, hi, one):  # pragma: no cover
    """KL's penalty on mean activations in one pass over the B×H code (see methods/kl.py)::

    ρ̂ ← clip(Σ_rows code / B, lo, hi);  d_row ← scale·(−ρ/ρ̂ + ρ1/(1 − ρ̂))
    returns Σ_j ρ log(ρ/ρ̂_j) + ρ1 log(ρ1/(1 − ρ̂_j))   (ρ1 = 1 − ρ; summed in float64)

    ρ̂ and d_row in NumPy's order of operations (``code.mean(axis=0)`` sums row after row,
    then divides in float64 and rounds): the same bits; the sum differs from NumPy's
    float32 one by rounding only.
    """
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


def _sigmoid_tail(t, one, half):  # pragma: no cover - runs compiled
    """t ← (t + 1)·½: the sigmoid ½(1 + tanh(z/2)) from its tanh, in one pass."""
    for i in range(t.size):
        t[i] = (t[i] + one) * half


def _sign(c, one, zero):  # pragma: no cover - runs compiled
    """np.sign's value: ±1, +0 for ±0, NaN for NaN (Numba's own sign keeps −0)."""
    if c > zero:
        return one
    if c < zero:
        return -one
    return c if c != c else zero


def _threshold_code(z, code, sgn, support, tau, one, zero):  # pragma: no cover - runs compiled
    """support ← 1[|z| ≥ τ];  code ← z·support;  sgn ← sign(code) (Arora's decoding)."""
    for i in range(z.size):
        zi = z[i]
        keep = one if abs(zi) >= tau else zero
        ci = zi * keep  # a product, as NumPy's, so NaN stays NaN
        support[i] = keep
        code[i] = ci
        sgn[i] = _sign(ci, one, zero)


def _atom_update(w, step, renormalize, tiny):  # pragma: no cover - runs compiled
    """w ← w − step, then (if renormalize) every row of w scaled to unit norm.

    Compiled with reassociation allowed (the row's Σw² is summed in any order, so it
    vectorises); nothing else in the loop can be reassociated.
    """
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


def _count_active(counts, code, threshold):  # pragma: no cover - runs compiled
    """counts[j] += #{i : |code[i, j]| > threshold} for a B×H code."""
    rows, cols = code.shape
    for i in range(rows):
        for j in range(cols):
            if abs(code[i, j]) > threshold:
                counts[j] += 1


def _take_scaled(out, data, rows, scale):  # pragma: no cover - runs compiled
    """out[i] ← data[rows[i]] · scale, converted to out's dtype first (a minibatch of pixels)."""
    for i in range(rows.size):
        src, dst = data[rows[i]], out[i]
        for j in range(dst.size):
            dst[j] = out.dtype.type(src[j]) * scale


_LOOPS = {
    "adam": _adam,
    "momentum": _momentum,
    "sgd": _sgd,
    "add_scaled": _add_scaled,
    "sigmoid_grad_into": _sigmoid_grad_into,
    "sigmoid_tail": _sigmoid_tail,
    "count_active": _count_active,
    "threshold_code": _threshold_code,
    "atom_update": _atom_update,
    "take_scaled": _take_scaled,
    "output_grad": _output_grad,
    "hidden_grad": _hidden_grad,
    "kl_penalty": _kl_penalty,
}
#: Extra Numba options per loop.
_OPTIONS = {"atom_update": {"fastmath": {"reassoc"}}}


def _compile() -> SimpleNamespace | None:
    if os.environ.get("SPARSEKIT_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import numba
    except Exception:  # ImportError, or a Numba that refuses this NumPy
        return None
    global _sign
    if not hasattr(_sign, "py_func"):  # called from inside the loops: compiled first
        _sign = numba.njit(inline="always")(_sign)
    compiled = {}
    for name, fn in _LOOPS.items():
        # error_model "numpy": no zero-division checks, which would stop vectorisation
        options = {"nogil": True, "error_model": "numpy", **_OPTIONS.get(name, {})}
        try:
            compiled[name] = numba.njit(cache=True, **options)(fn)
        except Exception:  # no writable cache location: compile for this process only
            compiled[name] = numba.njit(**options)(fn)
    return SimpleNamespace(**compiled)


def kernels() -> SimpleNamespace | None:
    """The compiled loops (named as in ``_LOOPS``), or ``None`` without Numba.

    ``SPARSEKIT_JIT=0`` turns them off (every caller then runs its NumPy formula).
    """
    if "kernels" not in _state:
        with _lock:
            if "kernels" not in _state:
                _state["kernels"] = _compile()
    return _state["kernels"]


def disable(reason: str) -> None:
    """Stop using the loops for the rest of the process (after one failed to compile)."""
    with _lock:
        if _state.get("kernels") is not None:
            warnings.warn(
                f"sparsekit: fused loops off, using NumPy ({reason})", RuntimeWarning, stacklevel=3
            )
        _state["kernels"] = None


def usable(*arrays: Any) -> bool:
    """Whether the loops can take these arrays: writeable, C-contiguous NumPy floats of one
    dtype and one shape (the loops index them without bounds checks)."""
    first = arrays[0]
    return (
        isinstance(first, np.ndarray)
        and first.dtype in (np.float32, np.float64)
        and all(
            isinstance(a, np.ndarray)
            and a.dtype == first.dtype
            and a.shape == first.shape
            and a.flags.c_contiguous
            and a.flags.writeable
            for a in arrays
        )
    )


def _compiled(name: str, dtype: np.dtype | str, *warm: Any) -> Any:
    """Loop ``name``, ready for ``dtype``: the first time, compiled (or loaded from Numba's
    cache) on this thread by calling it on ``warm`` (empty arrays, so nothing changes).
    None when the loops are off, or when this one fails to compile (then all are off)."""
    loops = _state["kernels"] if "kernels" in _state else kernels()
    if loops is None:
        return None
    fn = getattr(loops, name)
    key = (name, dtype if isinstance(dtype, str) else dtype.char)
    if key not in _ready:
        try:
            fn(*warm)
        except Exception as exc:  # a platform where Numba cannot compile: fall back for good
            disable(f"{type(exc).__name__}: {exc}".splitlines()[0])
            return None
        _ready.add(key)
    return fn


def count_active(counts: Any, code: Any, threshold: float) -> bool:
    """``counts += (|code| > threshold).sum(axis=0)`` in one pass; False when unavailable."""
    if (
        not usable(code)
        or code.ndim != 2
        or not isinstance(counts, np.ndarray)
        or counts.dtype != np.int64
        or counts.shape != code.shape[1:]
        or not counts.flags.writeable
    ):
        return False
    threshold = code.dtype.type(threshold)
    fn = _compiled("count_active", code.dtype, counts, code[:0], threshold)
    if fn is None:
        return False
    fn(counts, code, threshold)
    return True


def output_grad(xhat: Any, x: Any, scale: float) -> tuple[Any, Any, float] | None:
    """For a sigmoid output: ``(G, Σ_rows G, Σ (X̂ − X)²)`` with
    ``G = ((X̂ − X)·scale) ∘ X̂(1 − X̂)``, in one pass; None when the loops cannot run."""
    if not usable(xhat, x) or xhat.ndim != 2:
        return None
    g = np.empty_like(xhat)
    colsum = np.empty(xhat.shape[1], xhat.dtype)
    args = (xhat.dtype.type(scale), xhat.dtype.type(1.0))
    fn = _compiled("output_grad", xhat.dtype, g[:0], xhat[:0], x[:0], colsum, *args)
    if fn is None:
        return None
    return g, colsum, float(fn(g, xhat, x, colsum, *args))


def hidden_grad(d: Any, a: Any, row: Any, scale: float) -> Any:
    """For a sigmoid hidden layer: ``d ← ((d + row)·scale) ∘ A(1 − A)`` in place, returning
    ``Σ_rows d`` (``row``: a length-H vector or None); None when the loops cannot run."""
    if not usable(d, a) or d.ndim != 2:
        return None
    if row is None:
        row = np.zeros(d.shape[1], d.dtype)
    if not (
        isinstance(row, np.ndarray)
        and row.dtype == d.dtype
        and row.shape == d.shape[1:]
        and row.flags.c_contiguous
    ):
        return None
    colsum = np.empty(d.shape[1], d.dtype)
    args = (d.dtype.type(scale), d.dtype.type(1.0))
    fn = _compiled("hidden_grad", d.dtype, d[:0], a[:0], row, colsum, *args)
    if fn is None:
        return None
    fn(d, a, row, colsum, *args)
    return colsum


def kl_penalty(code: Any, rho: float, beta: float, floor: float) -> tuple[float, Any] | None:
    """KL's ``(Σ_j KL(ρ‖ρ̂_j), (β/B)(−ρ/ρ̂ + (1 − ρ)/(1 − ρ̂)))`` for a B×H code, ρ̂ its
    column means clipped to [floor, 1 − floor], in one pass; None when the loops cannot run."""
    if not usable(code) or code.ndim != 2 or code.shape[0] == 0:
        return None
    t = code.dtype.type
    d_row = np.empty(code.shape[1], code.dtype)
    # Scalars as NumPy rounds them (each Python-float expression, then the array's dtype).
    args = (t(rho), t(1 - rho), t(-rho), t(beta / code.shape[0]), t(floor), t(1 - floor), t(1))
    fn = _compiled("kl_penalty", code.dtype, code[:0], d_row, *args)
    if fn is None:
        return None
    return float(fn(code, d_row, *args)), d_row


def take_scaled(data: Any, rows: Any, dtype: Any, scale: float) -> np.ndarray | None:
    """``np.asarray(data[rows], dtype) * scale`` (for ``scale != 1``) in one pass, or None.

    ``data`` is a C-contiguous 2-D NumPy array of integers (pixels), ``rows`` a 1-D integer
    array of row numbers; anything else (negative or out-of-range rows included, which the
    loop would not check) returns None and the caller indexes with NumPy.
    """
    dtype = np.dtype(dtype)
    if (
        not isinstance(data, np.ndarray)
        or data.ndim != 2
        or data.dtype.kind not in "iu"
        or not data.flags.c_contiguous
        or dtype not in (np.float32, np.float64)
        or not isinstance(rows, np.ndarray)
        or rows.ndim != 1
        or rows.dtype.kind not in "iu"
        or (rows.size and (rows.min() < 0 or rows.max() >= data.shape[0]))
    ):
        return None
    out = np.empty((rows.size, data.shape[1]), dtype)
    factor = dtype.type(scale)
    types = f"{dtype.char}{data.dtype.char}{rows.dtype.char}"  # one compiled version each
    fn = _compiled("take_scaled", types, out[:0], data, rows[:0], factor)
    if fn is None:
        return None
    fn(out, data, rows, factor)
    return out


def run(name: str, arrays: tuple[Any, ...], scalars: tuple[float, ...]) -> bool:
    """Run loop ``name`` over flat views of ``arrays`` (with ``scalars`` cast to their dtype).

    Large arrays are split over :func:`sparsekit.kernels.split_run`'s threads. Returns False,
    having changed nothing, when the loops are unavailable or the arrays unsuitable; the
    caller then runs its NumPy formula.
    """
    return run_sum(name, arrays, scalars) is not None


def run_sum(name: str, arrays: tuple[Any, ...], scalars: tuple[float, ...]) -> float | None:
    """As :func:`run`; returns what the loop returns, summed over the parts (the optimizers'
    Σp²; 0.0 for loops that return nothing), or ``None`` when it did not run."""
    if not usable(*arrays):  # checked first: a GPU run never loads Numba
        return None
    from sparsekit import kernels as _kernels

    dtype = arrays[0].dtype
    args = tuple(map(dtype.type, scalars))
    flat = [a.reshape(-1) for a in arrays]
    fn = _compiled(name, dtype, *(a[:0] for a in flat), *args)
    if fn is None:
        return None
    if flat[0].size < _kernels.PARALLEL_MIN_SIZE:  # what split_run would do, minus its cost
        return float(fn(*flat, *args) or 0.0)
    parts: dict[int, Any] = {}

    def part(lo: int, hi: int) -> None:
        parts[lo] = fn(*(a[lo:hi] for a in flat), *args)

    _kernels.split_run(part, flat[0].size)
    return float(sum(parts[lo] or 0.0 for lo in sorted(parts)))  # in order: deterministic


def run_rows(name: str, arrays: tuple[Any, ...], scalars: tuple[Any, ...]) -> bool:
    """Run a row loop over 2-D ``arrays`` of one shape, their rows split over threads.

    ``scalars`` are passed as given (the loops that take them convert them themselves).
    Returns False, having changed nothing, when the loops are unavailable or the arrays
    unsuitable.
    """
    if not usable(*arrays) or arrays[0].ndim != 2:
        return False
    from sparsekit.kernels import PARALLEL_MIN_SIZE, split_run

    fn = _compiled(name, arrays[0].dtype, *(a[:0] for a in arrays), *scalars)
    if fn is None:
        return False
    rows, cols = arrays[0].shape
    split_run(
        lambda lo, hi: fn(*(a[lo:hi] for a in arrays), *scalars),
        rows,
        min_size=max(2, PARALLEL_MIN_SIZE // max(1, cols)),
    )
    return True
