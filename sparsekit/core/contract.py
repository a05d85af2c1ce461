"""The method contract: what a sparsity method provides to the one generic trainer.

Every method (built-in or from a plugin) subclasses :class:`Method`. The trainer runs the
generic autoencoder step of ``docs/methods.md``::

    Z  = X W_encᵀ + b_enc          pre-activation                     B×H
    A  = f(Z)                      activation        -> activation()
    M  = mask(Z, A)                kept units        -> mask()
    Hc = A ∘ M                     the code
    Y  = Hc W_dec + b_dec;  X̂ = g(Y)                 -> output()
    L  = (1/2B)‖X̂ − X‖² + Ω_W(W) + Ω_H(Hc)          -> weight_penalty(), code_penalty()
                                    + Ω_HW(Hc, W)   -> code_weight_penalty() (optional)

and differentiates it by hand; a method contributes the pieces marked with ``->`` (each with
its derivative or gradient), and may replace the whole update with :meth:`Method.update`.

Weights are stored one row per hidden unit: ``W_enc`` and ``W_dec`` both have shape (H, D),
so row j of either is unit j's filter (``W_e`` of the notes is ``W_encᵀ``). Tied weights keep
only ``W_enc`` and decode with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sparsekit.backend import fused
from sparsekit.core.activations import SIGMOID, Activation, sigmoid  # noqa: F401  (sigmoid: re-export)
from sparsekit.errors import ParameterError


@dataclass(frozen=True)
class Param:
    """One hyperparameter a method declares: name, type, default, help and a check."""

    name: str
    type: type
    default: Any
    help: str
    #: Returns an error message (without the parameter name) or None when the value is fine.
    #: Receives the value and the problem size ``{"hidden": H, "dim": D}``.
    check: Callable[[Any, Mapping[str, int]], str | None] | None = field(
        default=None, compare=False
    )

    def convert(self, value: Any) -> Any:
        """``value`` (possibly a command-line string) as this parameter's type."""
        if isinstance(value, str) and self.type is not str:
            if self.type is bool:
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ParameterError(f"{self.name}: expected true or false, got {value!r}")
            try:
                return self.type(value)
            except ValueError:
                raise ParameterError(
                    f"{self.name}: expected {self.type.__name__}, got {value!r}"
                ) from None
        if self.type is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if (
            self.type is int
            and isinstance(value, (int, np.integer))
            and not isinstance(value, bool)
        ):
            return int(value)
        if not isinstance(value, self.type):
            raise ParameterError(
                f"{self.name}: expected {self.type.__name__}, got {type(value).__name__} {value!r}"
            )
        return value


# Reusable checks -----------------------------------------------------------------------------


def positive(value: float, _size: Mapping[str, int]) -> str | None:
    return None if value > 0 and np.isfinite(value) else f"must be > 0, got {value}"


def non_negative(value: float, _size: Mapping[str, int]) -> str | None:
    return None if value >= 0 and np.isfinite(value) else f"must be >= 0, got {value}"


def open_unit_interval(value: float, _size: Mapping[str, int]) -> str | None:
    return None if 0 < value < 1 else f"must be strictly between 0 and 1, got {value}"


def between_one_and_hidden(value: int, size: Mapping[str, int]) -> str | None:
    hidden = size.get("hidden")
    if value < 1 or (hidden is not None and value > hidden):
        return f"must be between 1 and the hidden size ({hidden}), got {value}"
    return None


@dataclass
class TopK:
    """A support with the same number of kept units in every row.

    ``indices`` (B×k integers) lists the kept units of each row, in no particular order. The
    trainer then computes the decoder and every gradient term on those k columns only.
    ``kept`` (B×k, 0/1 or boolean) marks the entries that are really kept when rows of
    different lengths are padded to one width k (BatchTopK's code); ``None``: every entry is.
    """

    indices: Any
    kept: Any = None


class WeightDecay:
    """L2 weight decay, Ω_W = (λ/2) Σ_W ‖W‖²_F with ∂Ω_W/∂W = λW, as a weight penalty.

    :meth:`Method.weight_penalty` may return ``WeightDecay(xp, weights, λ)`` instead of a
    ``(value, gradients)`` pair. The type tells the trainer that the gradient is λW: its
    optimizer then adds λW as it updates each weight and returns the Σ‖W‖² it read on the
    way for the value, so weight decay costs no pass and no temporary of its own.
    :attr:`value` and :attr:`grads` compute the pair when asked (:func:`penalty_pair`);
    :meth:`add_to` adds λW to gradients directly (for an optimizer that cannot fold it in).
    """

    __slots__ = ("xp", "weights", "strength", "_value", "_grads")

    def __init__(self, xp: Any, weights: Mapping[str, Any], strength: float) -> None:
        self.xp = xp
        self.weights = dict(weights)
        self.strength = float(strength)
        self._value: Any = None
        self._grads: dict[str, Any] | None = None

    @property
    def value(self) -> Any:
        """(λ/2) Σ ‖W‖², a 0-d backend array (computed on first use)."""
        if self._value is None:
            xp = self.xp
            squares = {name: xp.vdot(w, w) for name, w in self.weights.items()}
            self._value = self.value_from_squares(squares)
        return self._value

    @property
    def grads(self) -> dict[str, Any]:
        """``{name: λW}`` (allocated on first use; the trainer never asks)."""
        if self._grads is None:
            self._grads = {name: self.strength * w for name, w in self.weights.items()}
        return self._grads

    def value_from_squares(self, squares: Mapping[str, Any]) -> Any:
        """(λ/2) Σ ‖W‖² from ``{name: ‖W‖²}`` computed elsewhere (by the optimizer's pass)."""
        return sum(0.5 * self.strength * squares[name] for name in self.weights)

    def strengths(self) -> dict[str, float]:
        """``{name: λ}`` for every decayed weight."""
        return dict.fromkeys(self.weights, self.strength)

    def add_to(self, grads: dict[str, Any]) -> None:
        """``grads[name] += λW`` for every weight, in place (one pass each on the CPU)."""
        for name, w in self.weights.items():
            add_scaled(grads[name], w, self.strength)

    def __repr__(self) -> str:
        return f"WeightDecay(strength={self.strength!r}, weights={sorted(self.weights)})"


@fused.op
def add_scaled(g: Any, w: Any, scale: float) -> None:
    """g ← g + scale·w in place (weight decay's λW added to a gradient, no temporary)."""
    g += scale * w


@add_scaled.twin
def _add_scaled_fused(g: Any, w: Any, scale: float) -> Any:
    return None if fused.run(_add_scaled_loop, (g, w), (scale,)) else fused.NOT_RUN


@fused.loop
def _add_scaled_loop(g, w, scale):  # pragma: no cover - runs compiled
    for i in range(g.size):
        g[i] += w[i] * scale


def penalty_pair(penalty: tuple[Any, dict[str, Any]] | WeightDecay) -> tuple[Any, dict[str, Any]]:
    """``(value, {name: gradient})`` of a weight penalty, whichever form it was returned in."""
    if isinstance(penalty, WeightDecay):
        return penalty.value, penalty.grads
    value, grads = penalty
    return value, grads


def code_penalty_pair(xp: Any, penalty: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """``(value, B×H gradient)`` of a code penalty, whichever form it was returned in."""
    if isinstance(penalty, RowPenalty):
        return penalty.value, penalty.dense(xp, shape)
    value, d_code = penalty
    return value, d_code


@dataclass
class RowPenalty:
    """A code penalty whose gradient is the same row for every sample (e.g. KL's, which
    depends on the mean activations only): Ω_H = ``value``, ∂Ω_H/∂Hc[i, :] = ``row`` for
    every i.

    :meth:`Method.code_penalty` may return it instead of ``(value, B×H gradient)``; the step
    then adds the row inside the pass that applies f′ instead of building a B×H array.
    """

    value: Any
    row: Any

    def dense(self, xp: Any, shape: tuple[int, ...]) -> Any:
        """The B×H gradient it stands for (a broadcast view: read it, do not write it)."""
        return xp.broadcast_to(self.row, shape)


@dataclass(frozen=True)
class Upkeep:
    """What a method asks of the trainer beyond the gradient step (see ``docs/methods.md``).

    A method declares it by returning one from :meth:`Method.upkeep`; the trainer applies it
    to any method, built-in or plugin:

    * ``unit_norm_decoder`` – decoder rows (atoms) kept at unit norm: initialised so, the
      component of each row's gradient parallel to the row removed before the optimizer
      step, the rows renormalised after it.
    * ``b_dec_init`` – ``"mean"`` or ``"geometric_median"`` (Weiszfeld) of the initial data
      sample replaces ``b_dec`` at initialisation; ``None`` leaves ``init_params``'s.
    * ``dead_after`` – a unit is *dead* when it has not fired (code value > 0) for this many
      training samples; the trainer counts samples since each unit last fired and hands the
      dead mask to the method (:class:`StepState`). ``0`` tracks nothing.
    * ``resample_every`` – every this many optimizer steps, dead units are re-initialised
      from poorly reconstructed inputs of the current batch and their optimizer moments
      reset (needs ``dead_after``). ``0`` never resamples.
    """

    unit_norm_decoder: bool = False
    b_dec_init: str | None = None
    dead_after: int = 0
    resample_every: int = 0

    def __post_init__(self) -> None:
        if self.b_dec_init not in (None, "mean", "geometric_median"):
            raise ParameterError(
                f"b_dec_init must be 'mean', 'geometric_median' or None, got {self.b_dec_init!r}"
            )
        if self.dead_after < 0 or self.resample_every < 0:
            raise ParameterError("dead_after and resample_every must be >= 0")
        if self.resample_every and not self.dead_after:
            raise ParameterError("resampling needs dead-unit tracking (dead_after > 0)")


@dataclass
class StepResult:
    """What :meth:`Method.update` returns: the step's loss and reconstruction term (0-d
    backend arrays) and the forward pass it computed before updating (a
    :class:`sparsekit.core.step.Forward`, for the trainer's statistics)."""

    loss: Any
    reconstruction: Any
    forward: Any


@dataclass
class StepState:
    """What the trainer knows beyond the minibatch, handed to :meth:`Method.loss_and_grads`.

    ``dead`` is a boolean (H,) backend array, true for units dead by
    :attr:`Upkeep.dead_after`, or ``None`` when nothing is tracked. A gradient check builds
    its own (:meth:`Method.check_state`).
    """

    dead: Any = None


#: What :meth:`Method.mask` returns: ``None`` (keep every unit), a B×H array of 0/1 in the
#: compute dtype, or a :class:`TopK`.
Support = Any


class Method:
    """Base class of every sparsity method. Subclass it and override what differs.

    The defaults describe a plain sigmoid autoencoder: sigmoid activation and output, every
    unit kept, no penalties, gradient training.

    Class attributes a method sets:

    * ``name`` – the name users type (``sparsekit train NAME``); lower case.
    * ``description`` – one line for ``sparsekit list``.
    * ``citation`` – where the method comes from.
    * ``params`` – the hyperparameters, as :class:`Param` declarations.
    * ``tied`` – the default for tied weights; ``allows_tied`` / ``allows_untied`` say which
      the method supports.
    * ``training_defaults`` – trainer settings the method works best with (optimizer, lr,
      batch_size, hidden, epochs, ...); a user's explicit choice wins.
    * ``saelens`` – the SAELens architecture the method is, as a
      :class:`sparsekit.interop.saelens.SAELensArch`, or ``None`` when it has no counterpart
      (``sparsekit export --format saelens``).

    Instances store the parameter values as attributes (``self.k``). Methods must be cheap
    to construct and must not hold arrays between steps except through
    :meth:`state_dict`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    tied: ClassVar[bool] = False
    allows_tied: ClassVar[bool] = True
    allows_untied: ClassVar[bool] = True
    training_defaults: ClassVar[Mapping[str, Any]] = {}
    saelens: ClassVar[Any] = None
    #: f, the hidden activation, as a declared :class:`~sparsekit.core.activations.Activation`
    #: (value, derivative and the backward products the step needs).
    hidden_activation: ClassVar[Activation] = SIGMOID
    #: g, the output function, likewise.
    output_activation: ClassVar[Activation] = SIGMOID
    #: Whether :meth:`code_penalty` or :meth:`code_weight_penalty` can return a penalty:
    #: with a top-k support the step builds the dense B×H code only for such a method.
    uses_code_penalty: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise ParameterError(
                f"method {self.name!r} has no parameter {unknown[0]!r} (its parameters: {known})"
            )
        for p in self.params:
            value = values.get(p.name, p.default)
            setattr(self, p.name, p.convert(value) if value is not None else None)

    # -- parameters ----------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The parameter values, as ``{name: value}``."""
        return {p.name: getattr(self, p.name) for p in self.params}

    def validate(self, hidden: int, dim: int | None = None) -> None:
        """Check every parameter against the problem size; raise :class:`ParameterError`.

        ``dim`` (the input size) is ``None`` when it is not known yet.
        """
        size = {"hidden": hidden, "dim": dim}
        for p in self.params:
            value = getattr(self, p.name)
            if p.check is not None and value is not None:
                problem = p.check(value, size)
                if problem:
                    raise ParameterError(f"{self.name}: {p.name} {problem}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- schedule ------------------------------------------------------------------------

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (0-based) of ``epochs``; update schedules here.

        Must depend only on ``epoch`` and ``epochs`` so that a resumed run is exact.
        """

    # -- initialisation ------------------------------------------------------------------

    def init_params(
        self, rng: np.random.Generator, dim: int, hidden: int, tied: bool, sample: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Initial parameters as float64 NumPy arrays (the trainer casts and moves them).

        Default: CS294A's uniform initialisation, r = √6/√(H + D + 1), biases zero.
        ``sample`` holds some training rows, for methods that start from data.
        """
        r = np.sqrt(6.0) / np.sqrt(hidden + dim + 1)
        params = {
            "W_enc": rng.uniform(-r, r, size=(hidden, dim)),
            "b_enc": np.zeros(hidden),
            "b_dec": np.zeros(dim),
        }
        if not tied:
            params["W_dec"] = rng.uniform(-r, r, size=(hidden, dim))
        return params

    # -- the forward pieces and their derivatives --------------------------------------

    def activation(self, xp: Any, z: Any) -> Any:
        """f(Z), elementwise: :attr:`hidden_activation`'s value (declare f there)."""
        return self.hidden_activation.value(xp, z)

    def activation_grad(self, xp: Any, z: Any, a: Any) -> Any:
        """f′(Z) given Z and A = f(Z), or ``None`` when f′ ≡ 1: :attr:`hidden_activation`'s."""
        return self.hidden_activation.derivative(xp, z, a)

    def mask(self, xp: Any, z: Any, a: Any, training: bool) -> Support:
        """Which code units are kept: ``None``, a 0/1 array like ``z``, or :class:`TopK`.

        ``training`` is false when encoding for downstream use (e.g. k-sparse's αk).
        """
        return None

    def output(self, xp: Any, y: Any) -> Any:
        """g(Y), the reconstruction: :attr:`output_activation`'s value (declare g there)."""
        return self.output_activation.value(xp, y)

    def output_grad(self, xp: Any, y: Any, xhat: Any) -> Any:
        """g′(Y) given Y and X̂ = g(Y), or ``None`` when g′ ≡ 1: :attr:`output_activation`'s."""
        return self.output_activation.derivative(xp, y, xhat)

    def code_penalty(self, xp: Any, code: Any) -> tuple[Any, Any] | RowPenalty | None:
        """Ω_H(Hc) and ∂Ω_H/∂Hc for the dense B×H code, or ``None`` for no penalty.

        Return ``(value, B×H gradient)``, or a :class:`RowPenalty` when the gradient is one
        row shared by every sample. Set :attr:`uses_code_penalty` when overriding it.
        """
        return None

    def weight_penalty(
        self, xp: Any, weights: Mapping[str, Any]
    ) -> tuple[Any, dict[str, Any]] | WeightDecay | None:
        """Ω_W and its gradient for each weight matrix (``W_enc``, and ``W_dec`` if untied).

        Return ``(value, {name: gradient})``, ``None`` for no penalty, or for plain L2 decay
        :class:`WeightDecay` (the same pair, applied by the trainer without a temporary).
        Biases are never passed.
        """
        return None

    def code_weight_penalty(
        self, xp: Any, code: Any, weights: Mapping[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]] | None:
        """A penalty Ω_HW(Hc, W) that couples the code and the weights, or ``None``.

        For example an L1 code penalty scaled by each unit's decoder norm. ``code`` is the
        dense B×H code, ``weights`` as for :meth:`weight_penalty` (``W_enc``, and ``W_dec``
        if untied: with tied weights the decoder is ``W_enc``). Returns the value,
        ∂Ω/∂Hc (B×H) and ``{name: ∂Ω/∂W}`` for the matrices it depends on. Added to the loss
        after Ω_W and Ω_H; methods that do not need it leave the default.
        """
        return None

    # -- non-gradient methods ------------------------------------------------------------

    #: True when the method trains with :meth:`update` instead of an optimizer.
    own_update: ClassVar[bool] = False

    def update(self, backend: Any, params: dict[str, Any], x: Any, lr: float) -> StepResult:
        """Update ``params`` in place from minibatch ``x`` (a backend array).

        Returns a :class:`StepResult` (the forward pass is the one before the update, for
        the trainer's statistics). Only called when ``own_update`` is true.
        """
        raise NotImplementedError(f"{self.name} does not define its own update")

    # -- a whole objective of the method's own --------------------------------------------

    #: True when the method computes its forward pass and its loss and gradients itself
    #: (:meth:`forward`, :meth:`loss_and_grads`) instead of the generic step's pieces
    #: (activation, mask, output, penalties), e.g. sparse autoencoders with a pre-encoder
    #: bias, an auxiliary loss or parameters beyond the four.
    own_objective: ClassVar[bool] = False
    #: Names of the separately checkable terms of an own objective (each is a loss with its
    #: gradients, :meth:`loss_and_grads` with ``term=name``; they sum to the objective).
    terms: ClassVar[tuple[str, ...]] = ()
    #: Parameters beyond W_enc, b_enc, b_dec, W_dec that :meth:`init_params` creates, with
    #: their shape as a tuple of ``"hidden"``, ``"dim"`` (e.g. ``("hidden",)``).
    extra_params: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: Parameters with one entry per unit along their first axis (besides W_enc, b_enc and
    #: W_dec): the trainer resets their optimizer moments when it resamples a unit.
    unit_params: ClassVar[tuple[str, ...]] = ()
    #: Parameters whose gradient holds a straight-through (surrogate) part, with what it is:
    #: ``{name: description}``. The gradient check compares them with finite differences of
    #: :meth:`anchored_loss`, where each step function is smoothed as the pseudo-derivative
    #: says; every other gradient is a true derivative.
    surrogates: ClassVar[Mapping[str, str]] = {}
    #: Quantities the objective holds constant (stop-gradient, e.g. AuxK's residual or
    #: Gated's frozen decoder copy): ``{quantity: description}``. The gradient check then
    #: differentiates :meth:`anchored_loss`, where they are taken at the unperturbed point.
    stop_gradients: ClassVar[Mapping[str, str]] = {}

    def forward(self, backend: Any, params: dict[str, Any], x: Any, training: bool) -> Any:
        """The forward pass (a :class:`sparsekit.core.step.Forward`) of an own objective."""
        raise NotImplementedError(f"{self.name} has no forward pass of its own")

    def loss_and_grads(
        self,
        backend: Any,
        params: dict[str, Any],
        x: Any,
        state: StepState,
        term: str | None = None,
    ) -> tuple[Any, dict[str, Any], Any, Any]:
        """``(loss, {name: gradient}, forward, reconstruction)`` of an own objective.

        ``loss`` and ``reconstruction`` ((1/2B)‖X̂ − X‖², for the trainer's MSE) are 0-d
        backend arrays; there is a gradient for every parameter. With ``term`` (one of
        :attr:`terms`), only that term's loss and gradients.
        """
        raise NotImplementedError(f"{self.name} has no objective of its own")

    def anchored_loss(
        self,
        backend: Any,
        params: dict[str, Any],
        x: Any,
        state: StepState,
        anchor: dict[str, Any],
        term: str | None = None,
    ) -> Any:
        """The function whose true gradient at ``params = anchor`` the method's gradient is.

        Needed when :attr:`surrogates` or :attr:`stop_gradients` is not empty. Every
        stop-gradient quantity is computed from ``anchor``; every step function whose
        derivative is a pseudo-derivative is evaluated as
        ``step(anchor) + smooth(params) − smooth(anchor)``: its value is the true one at
        ``anchor`` and the dependence on the parameters goes through the smoothed function the
        pseudo-derivative differentiates (what a straight-through estimator computes). The
        gradient check differentiates it by finite differences. A 0-d array or float.
        """
        raise NotImplementedError(f"{self.name} declares no anchored loss")

    def check_state(self, rng: np.random.Generator, hidden: int) -> StepState:
        """The :class:`StepState` a gradient check uses: here, a random third of units dead."""
        return StepState(dead=rng.uniform(size=hidden) < 1 / 3)

    def check_problem(
        self, rng: np.random.Generator, params: dict[str, np.ndarray], x: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Adjust a gradient check's random float64 problem so every term matters.

        E.g. put some pre-activations inside a pseudo-derivative's window. Default: as is.
        """
        return params

    # -- what the trainer does around the step ----------------------------------------------

    def upkeep(self) -> Upkeep:
        """What the trainer maintains for this method (unit-norm decoder, dead units, ...)."""
        return Upkeep()

    def epoch_metrics(self) -> dict[str, Any]:
        """Entries added to each epoch's metrics (e.g. a learned threshold); default none."""
        return {}

    def after_step(self, backend: Any, params: dict[str, Any], fwd: Any) -> None:
        """Called after each optimizer step with that step's forward pass (e.g. to update an
        inference threshold). State it changes must go through :meth:`state_dict`."""

    # -- state for checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Mutable state beyond the parameters (schedules are derived from the epoch)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
