"""Check hand-written gradients against central finite differences, in float64.

The relative error of a gradient is ‖num − grad‖ / ‖num + grad‖ (CS294A's measure), where
``num`` comes from (L(θ + ε) − L(θ − ε)) / 2ε entry by entry. Problems are small and random so
every entry can be perturbed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit import autoencoder
from sparsekit.backend import get_backend
from sparsekit.methods.base import Method


@dataclass(frozen=True)
class GradientReport:
    """Relative error of each parameter's gradient for one method and weight layout."""

    method: str
    tied: bool
    errors: dict[str, float]
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(err <= self.tolerance for err in self.errors.values())

    @property
    def worst(self) -> float:
        return max(self.errors.values())


def relative_error(numeric: np.ndarray, analytic: np.ndarray) -> float:
    denom = np.linalg.norm(numeric + analytic)
    if denom == 0:
        return float(np.linalg.norm(numeric - analytic))
    return float(np.linalg.norm(numeric - analytic) / denom)


def random_problem(
    method: Method, *, tied: bool, dim: int = 12, hidden: int = 8, batch: int = 6, seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Float64 parameters (with non-zero biases) and a minibatch in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(batch, dim))
    params = method.init_params(rng, dim, hidden, tied, x)
    # Make every term matter: biases away from zero, weights of order one.
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    params["b_enc"] = 0.1 * rng.standard_normal(hidden)
    params["b_dec"] = 0.1 * rng.standard_normal(dim)
    for name in ("W_enc", "W_dec"):
        if name in params:
            params[name] = params[name] + 0.3 * rng.standard_normal(params[name].shape)
    return params, x


def check_gradients(
    method: Method,
    *,
    tied: bool,
    dim: int = 12,
    hidden: int = 8,
    batch: int = 6,
    seed: int = 0,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
) -> GradientReport:
    """Compare :func:`sparsekit.autoencoder.loss_and_grads` with finite differences."""
    backend = get_backend(gpu=False, dtype="float64")
    method.validate(hidden, dim)
    params, x = random_problem(method, tied=tied, dim=dim, hidden=hidden, batch=batch, seed=seed)
    _, grads, _, _ = autoencoder.loss_and_grads(method, backend, _copy(params), x.copy())

    def loss(p: dict[str, Any]) -> float:
        return float(autoencoder.loss_and_grads(method, backend, _copy(p), x.copy())[0])

    errors = {}
    for name, value in params.items():
        numeric = np.zeros_like(value)
        flat = value.reshape(-1)
        num_flat = numeric.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            plus = loss(params)
            flat[i] = saved - eps
            minus = loss(params)
            flat[i] = saved
            num_flat[i] = (plus - minus) / (2 * eps)
        errors[name] = relative_error(numeric, np.asarray(grads[name]))
    return GradientReport(method.name, tied, errors, tolerance)


def _copy(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in params.items()}
