"""Optimizers written by hand: SGD, momentum and Adam.

They update a dict of backend arrays in place and keep their state as arrays of the same
shape and dtype, so a checkpoint can store it and a resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sparsekit import _jit
from sparsekit.errors import ParameterError
from sparsekit.kernels import split_run


def _flat_ok(*arrays: Any) -> bool:
    """Whether the arrays are C-contiguous NumPy arrays (flat views, threaded updates)."""
    return all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays)


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


class Optimizer:
    """Base class: ``step(params, grads)`` updates ``params`` in place.

    ``decay`` (``{name: λ}``) asks for L2 weight decay folded into the update: the gradient
    of ``params[name]`` is taken as ``grads[name] + λ·params[name]``. The built-in
    optimizers fuse it into their update pass (``folds_decay``); the trainer adds λW to the
    gradients itself for an optimizer that does not.
    """

    name: ClassVar[str] = ""
    #: Whether :meth:`step` accepts ``decay``.
    folds_decay: ClassVar[bool] = False

    def __init__(self, lr: float) -> None:
        if not (lr > 0 and math.isfinite(lr)):
            raise ParameterError(f"learning rate must be > 0, got {lr}")
        self.lr = float(lr)
        self.steps = 0

    def step(
        self,
        xp: Any,
        params: dict[str, Any],
        grads: dict[str, Any],
        decay: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Update ``params`` in place; ``grads`` may be overwritten (scratch).

        Returns ``{name: Σ params[name]²}`` for the keys of ``decay``, taken *before* the
        update (weight decay's value needs it; the built-ins get it from their update pass):
        a Python float or a 0-d array.
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Arrays and counters to restore this optimizer exactly."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


def _add_decay(
    xp: Any, p: Any, g: Any, key: str, decay: Mapping[str, float], squares: dict
) -> None:
    """g ← g + λ·p and Σp², the NumPy way (the fused loops do both in their own pass)."""
    if key in decay:
        squares[key] = xp.vdot(p, p)
        if decay[key]:
            g += decay[key] * p


class SGD(Optimizer):
    """θ ← θ − lr·g."""

    name = "sgd"
    folds_decay = True

    def step(
        self,
        xp: Any,
        params: dict[str, Any],
        grads: dict[str, Any],
        decay: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        decay, squares = decay or {}, {}
        for key, g in grads.items():
            p = params[key]
            sq = _jit.run_sum("sgd", (p, g), (decay.get(key, 0.0), self.lr))
            if sq is None:
                _add_decay(xp, p, g, key, decay, squares)
                g *= self.lr
                p -= g
            elif key in decay:
                squares[key] = sq
        self.steps += 1
        return squares


class Momentum(Optimizer):
    """Classical momentum: v ← μ·v − lr·g;  θ ← θ + v."""

    name = "momentum"
    folds_decay = True

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        if not 0 <= momentum < 1:
            raise ParameterError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.velocity: dict[str, Any] = {}

    def step(
        self,
        xp: Any,
        params: dict[str, Any],
        grads: dict[str, Any],
        decay: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        decay, squares = decay or {}, {}
        for key, g in grads.items():
            p = params[key]
            v = self.velocity.get(key)
            if v is None:
                v = self.velocity[key] = xp.zeros_like(p)
            sq = _jit.run_sum("momentum", (p, g, v), (decay.get(key, 0.0), self.momentum, self.lr))
            if sq is None:
                _add_decay(xp, p, g, key, decay, squares)
                v *= self.momentum
                g *= self.lr
                v -= g
                p += v
            elif key in decay:
                squares[key] = sq
        self.steps += 1
        return squares

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, **{f"velocity.{k}": v for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.velocity = {k.split(".", 1)[1]: v for k, v in state.items() if k != "steps"}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    name = "adam"
    folds_decay = True

    def __init__(
        self, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        super().__init__(lr)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.m: dict[str, Any] = {}
        self.v: dict[str, Any] = {}

    def step(
        self,
        xp: Any,
        params: dict[str, Any],
        grads: dict[str, Any],
        decay: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        decay, squares = decay or {}, {}
        self.steps += 1
        t = self.steps
        # Bias corrections folded into the step size and epsilon (one scalar each).
        step_size = self.lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        eps_hat = self.eps * math.sqrt(1 - self.beta2**t)
        b1, b2 = self.beta1, self.beta2
        for key, g in grads.items():
            p = params[key]
            m = self.m.get(key)
            if m is None:
                m = self.m[key] = xp.zeros_like(p)
                self.v[key] = xp.zeros_like(p)
            v = self.v[key]
            lam = decay.get(key, 0.0)
            sq = _jit.run_sum("adam", (p, g, m, v), (lam, b1, b2, eps_hat, step_size))
            if sq is not None:  # one fused pass (sparsekit._jit)
                if key in decay:
                    squares[key] = sq
                continue
            _add_decay(xp, p, g, key, decay, squares)
            if _flat_ok(p, g, m, v):
                flat = [a.reshape(-1) for a in (p, g, m, v)]
                split_run(
                    lambda lo, hi, flat=flat: _adam_update(
                        xp, *(a[lo:hi] for a in flat), b1, b2, eps_hat, step_size
                    ),
                    p.size,
                )
            else:
                _adam_update(xp, p, g, m, v, b1, b2, eps_hat, step_size)
        return squares

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
