"""Elementwise functions of the autoencoder step, declared with their derivatives.

A method declares its hidden activation f and its output function g as objects
(``Method.hidden_activation``, ``Method.output_activation``); the step asks the object for
the value, the derivative and the two backward products it needs, never the method's class::

    output_delta:  G = ((X̂ − X)·s) ∘ g′(Y),  Σ_rows G,  Σ (X̂ − X)²
    hidden_delta:  D ← ((D + r)·s) ∘ f′(Z)  (in place),  Σ_rows D

(``s`` = 1/B, ``r`` a code penalty's gradient row shared by every sample, or none).
:class:`Activation`'s versions are the reference formulas, for any f; :class:`Sigmoid`'s
are fused ops, each a formula with a compiled twin beside it that gives the same bits
(:mod:`sparsekit.backend.fused`).

Write your own by subclassing :class:`Activation` (``value`` and ``derivative``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import fused
from sparsekit.backend.threads import TRANSCENDENTAL_COST, split_elementwise


class Activation:
    """An elementwise function with its derivative (the reference backward formulas)."""

    name = "activation"

    def value(self, xp: Any, z: Any) -> Any:
        """f(Z), a new array."""
        raise NotImplementedError

    def derivative(self, xp: Any, z: Any, a: Any) -> Any:
        """f′(Z) given Z and A = f(Z); ``None`` when f′ ≡ 1 (saves a pass)."""
        raise NotImplementedError

    def output_delta(
        self, xp: Any, xhat: Any, y: Any, x: Any, scale: float
    ) -> tuple[Any, Any, Any]:
        """``(G, Σ_rows G, Σ (X̂ − X)²)`` with ``G = ((X̂ − X)·scale) ∘ g′(Y)``; the sum of
        squares is a 0-d array or NumPy scalar, in any float dtype (the step casts its term to
        X's)."""
        g = xhat - x
        squares = xp.vdot(g, g)
        g *= scale
        derivative = self.derivative(xp, y, xhat)
        if derivative is not None:
            g *= derivative
        return g, g.sum(axis=0), squares

    def hidden_delta(self, xp: Any, d: Any, z: Any, a: Any, row: Any, scale: float) -> Any:
        """``d ← ((d + row)·scale) ∘ f′(Z)`` in place (``row``: length H, or None); returns
        ``Σ_rows d``."""
        if row is not None:
            d += row
        if scale != 1:
            d *= scale
        derivative = self.derivative(xp, z, a)
        if derivative is not None:
            d *= derivative
        return d.sum(axis=0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Activation):
    """f(z) = z."""

    name = "identity"

    def value(self, xp: Any, z: Any) -> Any:
        return z

    def derivative(self, xp: Any, z: Any, a: Any) -> Any:
        return None


class ReLU(Activation):
    """f(z) = max(z, 0), f′(z) = 1[z > 0]; its hidden backward pass is a fused op."""

    name = "relu"

    def value(self, xp: Any, z: Any) -> Any:
        out = xp.empty_like(z)
        # parts on threads for a wide SAE's B×H pre-activations (the same bits)
        split_elementwise(lambda z_part, out_part: xp.maximum(z_part, 0, out=out_part), z, out)
        return out

    def derivative(self, xp: Any, z: Any, a: Any) -> Any:
        return (z > 0).astype(z.dtype)

    def hidden_delta(self, xp: Any, d: Any, z: Any, a: Any, row: Any, scale: float) -> Any:
        return relu_hidden_delta(xp, d, z, row, scale)


class Sigmoid(Activation):
    """The logistic function σ(z) = ½(1 + tanh(z/2)) (no overflow for large |z|), with
    σ′ = σ(1 − σ) taken from the output; its backward products are fused ops."""

    name = "sigmoid"

    def value(self, xp: Any, z: Any) -> Any:
        out = xp.empty_like(z)

        def part(z_part: Any, out_part: Any) -> None:
            xp.multiply(z_part, 0.5, out=out_part)
            xp.tanh(out_part, out=out_part)  # in place: one B×H temporary, not two
            sigmoid_tail(xp, out_part)

        # NumPy's float32 tanh costs ~16 additions an element: worth the threads at B×H
        split_elementwise(part, z, out, cost=TRANSCENDENTAL_COST)
        return out

    def derivative(self, xp: Any, z: Any, a: Any) -> Any:
        return a * (1 - a)

    def output_delta(
        self, xp: Any, xhat: Any, y: Any, x: Any, scale: float
    ) -> tuple[Any, Any, Any]:
        return sigmoid_output_delta(xp, xhat, x, scale)

    def hidden_delta(self, xp: Any, d: Any, z: Any, a: Any, row: Any, scale: float) -> Any:
        return sigmoid_hidden_delta(xp, d, a, row, scale)


SIGMOID = Sigmoid()
IDENTITY = Identity()
RELU = ReLU()


def sigmoid(xp: Any, z: Any) -> Any:
    """σ(z) as a new array (see :class:`Sigmoid`)."""
    return SIGMOID.value(xp, z)


# -- the sigmoid's formulas and their fused twins ------------------------------------------------


@fused.op
def sigmoid_tail(xp: Any, t: Any) -> None:
    """t ← (t + 1)·½ in place: the sigmoid from its tanh(z/2)."""
    t += 1
    t *= 0.5


@sigmoid_tail.twin
def _sigmoid_tail_fused(xp: Any, t: Any) -> Any:
    return None if fused.run(_sigmoid_tail_loop, (t,), (1.0, 0.5)) else fused.NOT_RUN


@fused.loop
def _sigmoid_tail_loop(t, one, half):  # pragma: no cover - runs compiled
    for i in range(t.size):
        t[i] = (t[i] + one) * half


@fused.op
def sigmoid_output_delta(xp: Any, xhat: Any, x: Any, scale: float) -> tuple[Any, Any, Any]:
    """``(G, Σ_rows G, Σ (X̂ − X)²)``, G = ((X̂ − X)·scale) ∘ X̂(1 − X̂), for X̂ = σ(Y): the
    generic formula with σ′ taken from X̂."""
    return Activation.output_delta(SIGMOID, xp, xhat, None, x, scale)


@sigmoid_output_delta.twin
def _sigmoid_output_delta_fused(xp: Any, xhat: Any, x: Any, scale: float) -> Any:
    if not fused.usable(xhat, x) or xhat.ndim != 2:
        return fused.NOT_RUN
    g = np.empty_like(xhat)
    colsum = np.empty(xhat.shape[1], xhat.dtype)
    args = (xhat.dtype.type(scale), xhat.dtype.type(1.0))
    fn = _output_delta_loop.ready(xhat.dtype.char, g[:0], xhat[:0], x[:0], colsum, *args)
    if fn is None:
        return fused.NOT_RUN
    return g, colsum, np.float64(fn(g, xhat, x, colsum, *args))  # a NumPy scalar, as vdot's


_LANES = 16


@fused.loop
def _output_delta_loop(g, xhat, x, colsum, scale, one):  # pragma: no cover - runs compiled
    # colsum is accumulated row after row, as NumPy's g.sum(axis=0) (the same bits); the sum
    # of squares in float64, 16 lanes per row so the loop stays vectorised.
    rows, cols = g.shape
    for j in range(cols):
        colsum[j] = 0
    lanes = np.zeros(_LANES, np.float64)
    full = cols - cols % _LANES
    for r in range(rows):
        gr, hr, xr = g[r], xhat[r], x[r]
        for start in range(0, full, _LANES):
            for lane in range(_LANES):
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


def _loop_row(d: np.ndarray, row: Any) -> np.ndarray | None:
    """The hidden passes' shared row as their loops take it: zeros for none, else ``row``
    when it is a contiguous NumPy vector of d's dtype and width; None when the loop cannot."""
    if row is None:
        return np.zeros(d.shape[1], d.dtype)
    usable = (
        isinstance(row, np.ndarray)
        and row.dtype == d.dtype
        and row.shape == d.shape[1:]
        and row.flags.c_contiguous
    )
    return row if usable else None


@fused.op
def relu_hidden_delta(xp: Any, d: Any, z: Any, row: Any, scale: float) -> Any:
    """``d ← ((d + row)·scale) ∘ 1[Z > 0]`` in place, returning ``Σ_rows d``: the generic
    formula with ReLU's f′."""
    return Activation.hidden_delta(RELU, xp, d, z, None, row, scale)


@relu_hidden_delta.twin
def _relu_hidden_delta_fused(xp: Any, d: Any, z: Any, row: Any, scale: float) -> Any:
    has_row = row is not None
    row = _loop_row(d, row) if fused.usable(d, z) and d.ndim == 2 else None
    if row is None:
        return fused.NOT_RUN
    colsum = np.empty(d.shape[1], d.dtype)
    args = (d.dtype.type(scale), scale != 1, has_row, d.dtype.type(1.0), d.dtype.type(0.0))
    fn = _relu_hidden_delta_loop.ready(d.dtype.char, d[:0], z[:0], row, colsum, *args, 0, 0)
    if fn is None:
        return fused.NOT_RUN
    # a B×H pass (256 MiB for a wide SAE) in one sweep instead of four, columns on threads
    fused.run_columns(lambda lo, hi: fn(d, z, row, colsum, *args, lo, hi), *d.shape)
    return colsum


@fused.loop
def _relu_hidden_delta_loop(
    d, z, row, colsum, scale, scaled, has_row, one, zero, lo, hi
):  # pragma: no cover - runs compiled
    # the reference's passes in its order: + row, × scale, × 1[z > 0] (1.0 or 0.0, as NumPy
    # multiplies by the bool), and colsum row after row from 0 as NumPy's d.sum(axis=0)
    for j in range(lo, hi):
        colsum[j] = 0
    for r in range(d.shape[0]):
        dr, zr = d[r], z[r]
        for j in range(lo, hi):
            v = dr[j]
            if has_row:
                v = v + row[j]
            if scaled:
                v = v * scale
            v = v * (one if zr[j] > 0 else zero)
            dr[j] = v
            colsum[j] += v


@fused.op
def sigmoid_hidden_delta(xp: Any, d: Any, a: Any, row: Any, scale: float) -> Any:
    """``d ← ((d + row)·scale) ∘ A(1 − A)`` in place, returning ``Σ_rows d``: the generic
    formula with σ′ taken from A."""
    return Activation.hidden_delta(SIGMOID, xp, d, None, a, row, scale)


@sigmoid_hidden_delta.twin
def _sigmoid_hidden_delta_fused(xp: Any, d: Any, a: Any, row: Any, scale: float) -> Any:
    row = _loop_row(d, row) if fused.usable(d, a) and d.ndim == 2 else None
    if row is None:
        return fused.NOT_RUN
    colsum = np.empty(d.shape[1], d.dtype)
    args = (d.dtype.type(scale), d.dtype.type(1.0))
    fn = _hidden_delta_loop.ready(d.dtype.char, d[:0], a[:0], row, colsum, *args)
    if fn is None:
        return fused.NOT_RUN
    fn(d, a, row, colsum, *args)
    return colsum


@fused.loop
def _hidden_delta_loop(d, a, row, colsum, scale, one):  # pragma: no cover - runs compiled
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
