"""Optimizers written by hand: SGD, momentum and Adam.

They update a dict of backend arrays in place and keep their state as arrays of the same
shape and dtype, so a checkpoint can store it and a resumed run continues exactly.

Each update is written twice, side by side: as array operations (``update_numpy``, every
backend) and as a fused loop (one pass over the parameter instead of a dozen; compiled by
:mod:`sparsekit.backend.fused`), with the same operations in the same order, so the same
bits (``tests/backend/test_fused.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sparsekit.backend import fused
from sparsekit.backend.threads import split_elementwise
from sparsekit.errors import ParameterError


def _adam_update(
    xp: Any, p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, eps: float, step: float
) -> None:
    """One Adam update in twelve in-place passes, with ``g`` (ours to overwrite) as scratch::

    m ← b1·(m − g) + g = b1·m + (1 − b1)·g
    v ← b2·(v − g²) + g² = b2·v + (1 − b2)·g²
    p ← p − step·m / (√v + eps)
    """
    m -= g
    m *= b1
    m += g
    xp.multiply(g, g, out=g)
    v -= g
    v *= b2
    v += g
    xp.sqrt(v, out=g)
    g += eps
    xp.divide(m, g, out=g)
    g *= step
    p -= g


# -- the fused twins of the updates ------------------------------------------------------------
# The loops also return Σp² over their slice (p before the update, in float64): weight decay's
# value (λ/2)‖W‖² then costs no pass of its own. The sum runs in 16 lanes, which keeps the loop
# vectorised without reordering any float32 arithmetic. Each loop repeats the few lines of that
# lane skeleton around its own `update`: a shared driver taking the update as an argument
# compiles, but is not vectorised (7x slower, measured).
LANES = 16


@fused.loop
def _adam_loop(p, g, m, v, lam, b1, b2, eps, step):  # pragma: no cover - runs compiled
    """g ← g + λ·p (if λ);  m ← b1·(m − g) + g;  v ← b2·(v − g²) + g²;  p ← p − (m/(√v + eps))·step.

    The operations of :func:`_adam_update`, in its order: the same bits.
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


@fused.loop
def _momentum_loop(p, g, vel, lam, mu, lr):  # pragma: no cover - runs compiled
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


@fused.loop
def _sgd_loop(p, g, lam, lr):  # pragma: no cover - runs compiled
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


class Optimizer:
    """Base class: ``step(xp, params, grads)`` updates ``params`` in place.

    A subclass describes one parameter's update, which :meth:`update` applies to one
    parameter and :meth:`step` to every parameter: :meth:`state_for` (the state arrays of one parameter, created on first use),
    :meth:`scalars` (this step's constants), ``loop`` (the fused loop that takes
    ``(p, g, *state, λ, *scalars)``, declared with :func:`sparsekit.backend.fused.loop`, or
    ``None``) and
    :meth:`update_numpy` (the same update as array operations, for every backend).

    ``decay`` (``{name: λ}``) asks for L2 weight decay folded into the update: the gradient
    of ``params[name]`` is taken as ``grads[name] + λ·params[name]``, and :meth:`step`
    returns ``{name: Σ params[name]²}`` (before the update) for those keys, which weight
    decay's value needs: the fused loops get both from the pass they make anyway.
    """

    name: ClassVar[str] = ""
    #: The fused twin of :meth:`update_numpy` (a :class:`~sparsekit.backend.fused.Loop`), or None.
    loop: ClassVar[fused.Loop | None] = None
    #: Whether :meth:`step` takes ``decay`` (set it to False in a subclass whose own
    #: ``step`` does not: the trainer then adds λW to the gradients itself).
    folds_decay: ClassVar[bool] = True
    #: Whether a step is :meth:`start_step` then :meth:`update` for each parameter (so the
    #: trainer may update each weight as soon as its gradient is final). A subclass whose
    #: own :meth:`step` does more sets it to False: the trainer then calls ``step`` once
    #: with every gradient.
    per_parameter: ClassVar[bool] = True

    def __init__(self, lr: float) -> None:
        if not (lr > 0 and math.isfinite(lr)):
            raise ParameterError(f"learning rate must be > 0, got {lr}")
        self.lr = float(lr)
        self.steps = 0
        self._scalars: tuple[float, ...] = ()

    def step(
        self,
        xp: Any,
        params: dict[str, Any],
        grads: dict[str, Any],
        decay: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Update ``params`` in place; ``grads`` may be overwritten (scratch).

        Returns ``{name: Σ params[name]²}`` for the keys of ``decay``, taken *before* the
        update: a Python float (from a fused loop) or a 0-d array.
        """
        decay = decay or {}
        self.start_step()
        squares: dict[str, Any] = {}
        for key, g in grads.items():
            sq = self.update(xp, params, key, g, decay.get(key))
            if key in decay:
                squares[key] = sq
        return squares

    def start_step(self) -> None:
        """Count a new step; :meth:`update` then applies it to one parameter at a time.

        ``step(xp, params, grads)`` is ``start_step()`` followed by :meth:`update` for every
        gradient; the trainer calls the two itself to update each weight as soon as its
        gradient is known (:func:`sparsekit.core.step.loss_and_grads_before_decay`).
        """
        self.steps += 1
        self._scalars = self.scalars()

    def update(
        self, xp: Any, params: dict[str, Any], key: str, g: Any, decay: float | None = None
    ) -> Any:
        """Update ``params[key]`` with gradient ``g`` (scratch) in this step.

        ``decay`` (λ) adds λ·params[key] to the gradient; the sum of squares of
        ``params[key]`` before the update is then returned (else ``None``).
        """
        p = params[key]
        state = self.state_for(xp, key, p)
        sq = update_parameter(self, xp, p, g, state, decay)
        return None if decay is None else sq

    def state_for(self, xp: Any, key: str, p: Any) -> tuple[Any, ...]:
        """The state arrays of parameter ``key`` (created on first use)."""
        return ()

    def scalars(self) -> tuple[float, ...]:
        """This step's constants, after ``self.steps`` has counted it."""
        return ()

    def update_numpy(self, xp: Any, p: Any, g: Any, *state_and_scalars: Any) -> None:
        """One parameter's update as array operations (``g`` is scratch)."""
        raise NotImplementedError

    def reset_rows(self, key: str, rows: Any) -> None:
        """Zero the state (moments, velocity) of entries ``rows`` along the first axis of
        parameter ``key`` (used when the trainer resamples units). Stateless: nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Arrays and counters to restore this optimizer exactly."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


@fused.op
def update_parameter(
    opt: Optimizer, xp: Any, p: Any, g: Any, state: tuple[Any, ...], decay: float | None
) -> Any:
    """One parameter's update (λ·p added to ``g`` when ``decay``); returns Σp² before it
    (weight decay's value; a 0-d array here, a Python float from the fused twin)."""
    sq = None
    if decay is not None:
        sq = xp.vdot(p, p)
        if decay:
            g += decay * p
    opt.update_numpy(xp, p, g, *state, *opt._scalars)
    return sq


@update_parameter.twin
def _update_parameter_fused(
    opt: Optimizer, xp: Any, p: Any, g: Any, state: tuple[Any, ...], decay: float | None
) -> Any:
    if opt.loop is None:
        return fused.NOT_RUN
    sq = fused.run_sum(opt.loop, (p, g, *state), (decay or 0.0, *opt._scalars))
    return fused.NOT_RUN if sq is None else sq


class SGD(Optimizer):
    """θ ← θ − lr·g."""

    name = "sgd"
    loop = _sgd_loop

    def scalars(self) -> tuple[float, ...]:
        return (self.lr,)

    def update_numpy(self, xp: Any, p: Any, g: Any, lr: float) -> None:
        g *= lr
        p -= g


class Momentum(Optimizer):
    """Classical momentum: v ← μ·v − lr·g;  θ ← θ + v."""

    name = "momentum"
    loop = _momentum_loop

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        if not 0 <= momentum < 1:
            raise ParameterError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocity: dict[str, Any] = {}

    def state_for(self, xp: Any, key: str, p: Any) -> tuple[Any, ...]:
        if key not in self.velocity:
            self.velocity[key] = xp.zeros_like(p)
        return (self.velocity[key],)

    def scalars(self) -> tuple[float, ...]:
        return (self.momentum, self.lr)

    def update_numpy(self, xp: Any, p: Any, g: Any, v: Any, mu: float, lr: float) -> None:
        v *= mu
        g *= lr
        v -= g
        p += v

    def reset_rows(self, key: str, rows: Any) -> None:
        if key in self.velocity:
            self.velocity[key][rows] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, **{f"velocity.{k}": v for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.velocity = {k.split(".", 1)[1]: v for k, v in state.items() if k != "steps"}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    name = "adam"
    loop = _adam_loop

    def __init__(
        self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m: dict[str, Any] = {}
        self.v: dict[str, Any] = {}

    def state_for(self, xp: Any, key: str, p: Any) -> tuple[Any, ...]:
        if key not in self.m:
            self.m[key] = xp.zeros_like(p)
            self.v[key] = xp.zeros_like(p)
        return (self.m[key], self.v[key])

    def scalars(self) -> tuple[float, ...]:
        """β1, β2, and the bias corrections folded into epsilon and the step size."""
        t = self.steps
        eps_hat = self.eps * math.sqrt(1 - self.beta2**t)
        step_size = self.lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        return (self.beta1, self.beta2, eps_hat, step_size)

    def update_numpy(
        self, xp: Any, p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, eps: float, step: float
    ) -> None:
        # contiguous parts on the backend's threads when it can split them (the same bits)
        split_elementwise(lambda *parts: _adam_update(xp, *parts, b1, b2, eps, step), p, g, m, v)

    def reset_rows(self, key: str, rows: Any) -> None:
        """Zero m and v of the entries ``rows`` (the global step count and so the bias
        correction are shared: the first update of a reset entry is about lr·sign(g)·(1−β1)
        /√(1−β2) larger than a fresh parameter's, as in the reference implementations)."""
        if key in self.m:
            self.m[key][rows] = 0
            self.v[key][rows] = 0

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"steps": self.steps}
        state.update({f"m.{k}": a for k, a in self.m.items()})
        state.update({f"v.{k}": a for k, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.m = {k[2:]: a for k, a in state.items() if k.startswith("m.")}
        self.v = {k[2:]: a for k, a in state.items() if k.startswith("v.")}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float, momentum: float = 0.9) -> Optimizer:
    """The optimizer called ``name`` (sgd, momentum or adam)."""
    if name not in OPTIMIZERS:
        raise ParameterError(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    if name == "momentum":
        return Momentum(lr, momentum)
    return OPTIMIZERS[name](lr)
