"""Check hand-written gradients against central finite differences, in float64.

The relative error of a gradient is ‖num − grad‖ / ‖num + grad‖ (CS294A's measure), where
``num`` comes from (L(θ + ε) − L(θ − ε)) / 2ε entry by entry. Problems are small and random so
every entry can be perturbed.

Two levels:

* :func:`check_gradients` – the full objective's gradient for every parameter (``W_enc``,
  ``b_enc``, ``b_dec`` and ``W_dec`` if untied), through the generic backward pass.
* with ``terms=True`` it also checks each piece a method contributes, on the values of the
  same random problem: f′ against differences of f, g′ against differences of g, and the
  gradients of Ω_H, Ω_W and Ω_HW against differences of their values. A failing term tells
  a plugin author which of their methods is wrong.

An :class:`~sparsekit.core.contract.UpdateMethod` is checked on the model it defines (the
generic step's); its update is not a gradient, so only the model's loss is differentiated.

An :class:`~sparsekit.core.contract.ObjectiveMethod` (an
:class:`~sparsekit.core.contract.ObjectiveUpdateMethod` too) is checked the same way on its
:meth:`~sparsekit.core.contract.ObjectiveMethod.loss_and_grads`, given its
:meth:`~sparsekit.core.contract.ObjectiveMethod.check_state` (e.g. which units are dead),
and with ``terms=True`` each of its ``terms`` on its own. When a method declares
stop-gradient quantities or surrogate (straight-through) gradients, the finite differences
are those of its ``anchored_loss`` around the problem's point: there the stopped
quantities are constants and each step function with a pseudo-derivative is replaced by the
smoothed function that pseudo-derivative differentiates. The gradients of the parameters in
its ``surrogates`` are reported as ``surrogate: ...``; every other gradient is a true
derivative of the (anchored) loss.

Every check first passes the method's class through
:func:`~sparsekit.core.contract.check_method_class`, as registering and training do: a class
the step would train as something else than it says is refused, not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparsekit.backend import get_backend
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import (
    BaseMethod,
    Method,
    ObjectiveMethod,
    StepState,
    UpdateMethod,
    check_method_class,
    code_penalty_pair,
    penalty_pair,
)
from sparsekit.errors import ParameterError

#: Names of the per-term checks, in the order they are reported.
TERM_ACTIVATION = "activation: f′(Z)"
TERM_OUTPUT = "output: g′(Y)"
TERM_CODE_PENALTY = "code penalty: ∂Ω_H/∂Hc"
TERM_WEIGHT_PENALTY = "weight penalty: ∂Ω_W/∂{}"
TERM_COUPLED_CODE = "code-weight penalty: ∂Ω_HW/∂Hc"
TERM_COUPLED_WEIGHT = "code-weight penalty: ∂Ω_HW/∂{}"


@dataclass(frozen=True)
class GradientReport:
    """Relative errors for one method and weight layout.

    ``errors`` holds the full objective's gradient per parameter; ``terms`` the method's own
    pieces (empty unless asked for); ``skipped`` the terms the method does not define, with
    the reason; ``notes`` anything a reader must know (e.g. an own update is not a gradient).
    """

    method: str
    tied: bool
    errors: dict[str, float]
    tolerance: float
    terms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Parameters whose gradient is (partly) a declared straight-through estimator.
    surrogates: tuple[str, ...] = ()
    #: Per parameter, the cosine between the gradient and the finite differences (only
    #: where both are non-zero): a negative one is a gradient of the wrong sign.
    cosines: dict[str, float] = field(default_factory=dict)

    @property
    def wrong_signs(self) -> dict[str, float]:
        """The parameters whose gradient points against the finite differences, by cosine."""
        return {k: c for k, c in self.cosines.items() if c < 0}

    @property
    def ok(self) -> bool:
        return not self.wrong_signs and all(
            _fine(err, self.tolerance) for err in self.all_errors.values()
        )

    @property
    def worst(self) -> float:
        values = list(self.all_errors.values())
        if any(not np.isfinite(v) for v in values):
            return float("inf")
        return max(values) if values else 0.0

    @property
    def all_errors(self) -> dict[str, float]:
        """Every checked quantity: the parameters' gradients, then the terms."""
        return {**{self._key(k): v for k, v in self.errors.items()}, **self.terms}

    @property
    def failures(self) -> dict[str, float]:
        return {k: v for k, v in self.all_errors.items() if not _fine(v, self.tolerance)}

    def summary(self) -> str:
        layout = "tied" if self.tied else "untied"
        if self.ok:
            return (
                f"{self.method} ({layout}): gradients match (worst relative error {self.worst:.1e})"
            )
        # A sign flip makes ‖num + grad‖ vanish, so its relative error (e.g. 7.7e+08) says
        # nothing a reader can act on: name the sign instead.
        signs = [
            f"gradient of {k} has the wrong sign (cosine {c:.2f} with finite differences)"
            for k, c in self.wrong_signs.items()
        ]
        flipped = {self._key(k) for k in self.wrong_signs}
        rest = {k: v for k, v in self.failures.items() if k not in flipped}
        parts = signs
        if rest:
            bad = ", ".join(f"{k}: {v:.2e}" for k, v in rest.items())
            parts = [*signs, f"relative error above {self.tolerance:.0e} for {bad}"]
        return f"{self.method} ({layout}): " + "; ".join(parts)

    def _key(self, name: str) -> str:
        """The :attr:`all_errors` key of parameter ``name``'s full-objective gradient."""
        return f"{'surrogate' if name in self.surrogates else 'loss'}: ∂L/∂{name}"


def _fine(err: float, tolerance: float) -> bool:
    return bool(np.isfinite(err)) and err <= tolerance


def relative_error(numeric: np.ndarray, analytic: np.ndarray) -> float:
    numeric = np.asarray(numeric, dtype=np.float64)
    analytic = np.asarray(analytic, dtype=np.float64)
    if numeric.shape != analytic.shape:
        try:
            analytic = np.broadcast_to(analytic, numeric.shape)
        except ValueError:
            return float("inf")
    denom = np.linalg.norm(numeric + analytic)
    if denom == 0:
        return float(np.linalg.norm(numeric - analytic))
    return float(np.linalg.norm(numeric - analytic) / denom)


def cosine(numeric: np.ndarray, analytic: np.ndarray) -> float | None:
    """The cosine between two gradients; ``None`` when either is zero (no direction)."""
    numeric = np.asarray(numeric, dtype=np.float64).reshape(-1)
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.size != numeric.size:
        return None
    analytic = analytic.reshape(-1)
    norms = float(np.linalg.norm(numeric) * np.linalg.norm(analytic))
    return float(numeric @ analytic) / norms if norms > 0 else None


def random_problem(
    method: BaseMethod, *, tied: bool, dim: int = 12, hidden: int = 8, batch: int = 6, seed: int = 0
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


def numeric_gradient(f: Callable[[], float], value: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of the scalar ``f()`` for every entry of ``value`` (in place)."""
    numeric = np.zeros_like(value)
    flat = value.reshape(-1)
    num_flat = numeric.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = f()
        flat[i] = saved - eps
        minus = f()
        flat[i] = saved
        num_flat[i] = (plus - minus) / (2 * eps)
    return numeric


def check_gradients(
    method: BaseMethod,
    *,
    tied: bool,
    dim: int = 12,
    hidden: int = 8,
    batch: int = 6,
    seed: int = 0,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
    terms: bool = False,
) -> GradientReport:
    """Compare :func:`sparsekit.core.step.loss_and_grads` with finite differences.

    With ``terms=True`` also check every piece the method contributes (see the module
    docstring); :attr:`GradientReport.ok` then covers them too. A class that
    :func:`~sparsekit.core.contract.check_method_class` refuses raises its
    :class:`~sparsekit.errors.PluginError`.
    """
    check_method_class(type(method))
    backend = get_backend(gpu=False, dtype="float64")
    method.validate(hidden, dim)
    params, x = random_problem(method, tied=tied, dim=dim, hidden=hidden, batch=batch, seed=seed)
    state = None
    if isinstance(method, ObjectiveMethod):
        rng = np.random.default_rng([seed, 1])
        state = method.check_state(rng, hidden)
        params = {
            k: np.asarray(v, dtype=np.float64)
            for k, v in method.check_problem(rng, _copy(params), x.copy()).items()
        }
    _, grads, _, _ = autoencoder.loss_and_grads(method, backend, _copy(params), x.copy(), state)
    loss = _loss_function(method, backend, params, x, state)

    errors, cosines = {}, {}
    for name, value in params.items():
        numeric = numeric_gradient(lambda: loss(params), value, eps)
        errors[name] = relative_error(numeric, np.asarray(grads[name]))
        cos = cosine(numeric, np.asarray(grads[name]))
        if cos is not None:
            cosines[name] = cos
    term_errors: dict[str, float] = {}
    skipped: dict[str, str] = {}
    if terms and isinstance(method, ObjectiveMethod):
        assert state is not None
        term_errors, skipped = check_own_terms(method, params, x, state, eps=eps)
    elif terms:
        assert isinstance(method, Method)
        term_errors, skipped = check_terms(method, params, x, eps=eps)
    notes: tuple[str, ...] = ()
    if isinstance(method, UpdateMethod):
        notes = (
            f"{method.name} trains with its own update (UpdateMethod.update), which is not "
            "the gradient of this loss: the check covers the model's loss and its pieces only.",
        )
    elif method.own_update:  # an ObjectiveUpdateMethod
        notes = (
            f"{method.name} trains with its own update, which is not a gradient step: the "
            "check covers the gradients of its objective (loss_and_grads) only.",
        )
    surrogates = tuple(k for k in _surrogates(method) if k in params)
    return GradientReport(
        method.name, tied, errors, tolerance, term_errors, skipped, notes, surrogates, cosines
    )


def _surrogates(method: BaseMethod) -> Any:
    """The parameters with a surrogate gradient (an own objective's declaration; else none)."""
    return method.surrogates if isinstance(method, ObjectiveMethod) else {}


def _anchored(method: ObjectiveMethod) -> bool:
    """Whether the method's gradient is that of its anchored loss (see the module doc)."""
    return bool(method.surrogates or method.stop_gradients)


def _loss_function(
    method: BaseMethod,
    backend: Any,
    anchor: dict[str, np.ndarray],
    x: np.ndarray,
    state: StepState | None,
    term: str | None = None,
) -> Callable[[dict[str, np.ndarray]], float]:
    """``p -> loss`` whose finite differences the gradients are checked against."""
    if isinstance(method, ObjectiveMethod) and _anchored(method):
        fixed = _copy(anchor)  # the point the stopped quantities are taken at
        assert state is not None

        def anchored(p: dict[str, np.ndarray]) -> float:
            return float(method.anchored_loss(backend, _copy(p), x.copy(), state, fixed, term))

        return anchored
    if isinstance(method, ObjectiveMethod):
        assert state is not None

        def own(p: dict[str, np.ndarray]) -> float:
            return float(method.loss_and_grads(backend, _copy(p), x.copy(), state, term)[0])

        return own

    def plain(p: dict[str, np.ndarray]) -> float:
        return float(autoencoder.loss_and_grads(method, backend, _copy(p), x.copy())[0])

    return plain


def check_own_terms(
    method: ObjectiveMethod,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    state: StepState,
    *,
    eps: float = 1e-6,
) -> tuple[dict[str, float], dict[str, str]]:
    """Each term of an own objective, every parameter: analytic vs finite differences.

    Keys read ``term NAME: ∂/∂PARAM`` (``surrogate term ...`` for a surrogate parameter).
    """
    backend = get_backend(gpu=False, dtype="float64")
    errors: dict[str, float] = {}
    skipped: dict[str, str] = {}
    if not method.terms:
        skipped["terms"] = "the method names no separate loss terms"
    for term in method.terms:
        _, grads, _, _ = method.loss_and_grads(backend, _copy(params), x.copy(), state, term)
        loss = _loss_function(method, backend, params, x, state, term)
        for name in params:
            probe = _copy(params)
            numeric = numeric_gradient(lambda p=probe, f=loss: f(p), probe[name], eps)
            kind = "surrogate term" if name in method.surrogates else "term"
            errors[f"{kind} {term}: ∂/∂{name}"] = relative_error(numeric, np.asarray(grads[name]))
    return errors, skipped


def check_terms(
    method: Method, params: dict[str, np.ndarray], x: np.ndarray, *, eps: float = 1e-6
) -> tuple[dict[str, float], dict[str, str]]:
    """Relative errors of each derivative the method provides, at the problem's values.

    Returns ``(errors, skipped)``: ``skipped`` maps a term the method does not define to why.
    """
    backend = get_backend(gpu=False, dtype="float64")
    fwd = autoencoder.forward(method, backend, _copy(params), x.copy(), training=True)
    errors: dict[str, float] = {}
    skipped: dict[str, str] = {}
    _activation_terms(method, fwd, eps, errors)
    code = np.array(autoencoder.dense_code(backend, fwd), dtype=np.float64)
    weights = {k: np.array(params[k]) for k in ("W_enc", "W_dec") if k in params}
    _code_penalty_term(method, code, eps, errors, skipped)
    _weight_penalty_terms(method, weights, eps, errors, skipped)
    _code_weight_penalty_terms(method, code, weights, eps, errors, skipped)
    return errors, skipped


def _activation_terms(method: Method, fwd: Any, eps: float, errors: dict[str, float]) -> None:
    """f′ and g′ of the declared activations, at the problem's Z and Y."""
    xp = np
    # f and g are elementwise: one perturbation of the whole array gives every derivative.
    errors[TERM_ACTIVATION] = _elementwise(
        lambda z: method.hidden_activation.value(xp, z),
        lambda z, a: method.hidden_activation.derivative(xp, z, a),
        np.array(fwd.z),
        eps,
    )
    errors[TERM_OUTPUT] = _elementwise(
        lambda y: method.output_activation.value(xp, y),
        lambda y, out: method.output_activation.derivative(xp, y, out),
        np.array(fwd.y),
        eps,
    )


def _code_penalty_term(
    method: Method,
    code: np.ndarray,
    eps: float,
    errors: dict[str, float],
    skipped: dict[str, str],
) -> None:
    """∂Ω_H/∂Hc against differences of Ω_H, at the problem's code."""
    xp = np
    result = method.code_penalty(xp, code.copy())
    if result is None:
        skipped[TERM_CODE_PENALTY] = "no code penalty"
        return
    probe = code.copy()
    numeric = numeric_gradient(
        lambda: float(code_penalty_pair(xp, method.code_penalty(xp, probe.copy()), code.shape)[0]),
        probe,
        eps,
    )
    d_code = code_penalty_pair(xp, result, code.shape)[1]
    errors[TERM_CODE_PENALTY] = relative_error(numeric, np.asarray(d_code))


def _weight_penalty_terms(
    method: Method,
    weights: dict[str, np.ndarray],
    eps: float,
    errors: dict[str, float],
    skipped: dict[str, str],
) -> None:
    """∂Ω_W/∂W for each weight matrix against differences of Ω_W."""
    xp = np
    result = method.weight_penalty(xp, _copy(weights))
    if result is None:
        skipped[TERM_WEIGHT_PENALTY.format("W")] = "no weight penalty"
        return
    for name in weights:
        probe = _copy(weights)
        numeric = numeric_gradient(
            lambda probe=probe: float(penalty_pair(method.weight_penalty(xp, _copy(probe)))[0]),
            probe[name],
            eps,
        )
        analytic = penalty_pair(result)[1].get(name, np.zeros_like(weights[name]))
        errors[TERM_WEIGHT_PENALTY.format(name)] = relative_error(numeric, analytic)


def _code_weight_penalty_terms(
    method: Method,
    code: np.ndarray,
    weights: dict[str, np.ndarray],
    eps: float,
    errors: dict[str, float],
    skipped: dict[str, str],
) -> None:
    """∂Ω_HW/∂Hc and ∂Ω_HW/∂W for each weight matrix against differences of Ω_HW."""
    xp = np
    result = method.code_weight_penalty(xp, code.copy(), _copy(weights))
    if result is None:
        skipped[TERM_COUPLED_CODE] = "no code-weight penalty"
        return
    _, d_code, d_weights = result
    probe_code = code.copy()
    numeric = numeric_gradient(
        lambda: float(method.code_weight_penalty(xp, probe_code.copy(), _copy(weights))[0]),
        probe_code,
        eps,
    )
    errors[TERM_COUPLED_CODE] = relative_error(numeric, np.asarray(d_code))
    for name in weights:
        probe = _copy(weights)
        numeric = numeric_gradient(
            lambda probe=probe: float(method.code_weight_penalty(xp, code.copy(), _copy(probe))[0]),
            probe[name],
            eps,
        )
        analytic = d_weights.get(name, np.zeros_like(weights[name]))
        errors[TERM_COUPLED_WEIGHT.format(name)] = relative_error(numeric, analytic)


def _elementwise(
    f: Callable[[np.ndarray], Any],
    f_prime: Callable[[np.ndarray, np.ndarray], Any],
    at: np.ndarray,
    eps: float,
) -> float:
    numeric = (np.asarray(f(at + eps)) - np.asarray(f(at - eps))) / (2 * eps)
    analytic = f_prime(at.copy(), np.asarray(f(at.copy())))
    if analytic is None:  # the contract's "derivative is one everywhere"
        analytic = np.ones_like(at)
    return relative_error(numeric, np.asarray(analytic))


def layouts(method: BaseMethod | type[BaseMethod]) -> list[bool]:
    """The weight layouts a method supports, as values of ``tied``."""
    return [t for t, ok in ((True, method.allows_tied), (False, method.allows_untied)) if ok]


def _copy(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in params.items()}


#: The random problem's sizes when nothing asks for more.
PROBLEM_HIDDEN = 8
PROBLEM_DIM = 12
#: The largest hidden size :func:`problem_hidden` tries.
MAX_PROBLEM_HIDDEN = 4096


def problem_hidden(method: BaseMethod, *, dim: int = PROBLEM_DIM, start: int = PROBLEM_HIDDEN) -> int:
    """The hidden size of the random problem for ``method``'s parameter values: ``start``
    when the method's own parameter checks accept it; otherwise the first doubling of
    ``start`` they accept, doubled once more, so that a size-bound parameter does not take
    every unit (k-sparse's k = 25 needs 25 units: 64, where a top-k really drops units).
    Raises the method's :class:`~sparsekit.errors.ParameterError` when no size up to
    :data:`MAX_PROBLEM_HIDDEN` is accepted."""
    hidden = start
    while True:
        try:
            method.validate(hidden, dim)
            return hidden if hidden == start else min(2 * hidden, MAX_PROBLEM_HIDDEN)
        except ParameterError:
            if hidden >= MAX_PROBLEM_HIDDEN:
                raise
            hidden = min(2 * hidden, MAX_PROBLEM_HIDDEN)
