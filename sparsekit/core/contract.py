"""The method contract: three kinds of method, and the check every method class passes.

Every method (built-in or from a plugin) subclasses exactly one of three types, each with
its own documented members, and the trainer, the step, the gradient check and the test kit
choose what to run from that type alone:

* :class:`Method` – the generic autoencoder step of ``docs/methods.md``, differentiated by
  hand; the method *declares* f and g and contributes the mask and the penalties::

      Z  = X W_encᵀ + b_enc          pre-activation                     B×H
      A  = f(Z)                      f: hidden_activation (declared)
      M  = mask(Z, A)                kept units        -> mask()
      Hc = A ∘ M                     the code
      Y  = Hc W_dec + b_dec;  X̂ = g(Y)                 g: output_activation (declared)
      L  = (1/2B)‖X̂ − X‖² + Ω_W(W) + Ω_H(Hc)          -> weight_penalty(), code_penalty()
                                      + Ω_HW(Hc, W)   -> code_weight_penalty() (optional)

* :class:`UpdateMethod` – a :class:`Method` whose model is that step but which trains with
  its own :meth:`UpdateMethod.update` instead of an optimizer (e.g. Arora et al.).
* :class:`ObjectiveMethod` – a method that computes its forward pass, loss and gradients
  itself (:meth:`ObjectiveMethod.forward`, :meth:`ObjectiveMethod.loss_and_grads`), e.g.
  sparse autoencoders with a pre-encoder bias, an auxiliary loss or extra parameters.
* :class:`ObjectiveUpdateMethod` – an :class:`ObjectiveMethod` (its forward pass and the
  gradient the check differentiates are its own) trained by its own
  :meth:`ObjectiveUpdateMethod.update` instead of an optimizer, e.g. online dictionary
  learning, whose code comes from an optimiser and whose atoms from block-coordinate
  descent.

What every method has (name, parameters, layouts, initialisation, schedules, upkeep, state)
is :class:`BaseMethod`. :func:`check_method_class` refuses, with one line saying what to
declare instead, a class the step would otherwise train as something else than it says:
one that overrides a member the step no longer reads (:data:`RETIRED`), that sets
``own_objective`` / ``own_update`` instead of subclassing the type, or that mixes the types.
The registry, the trainer and the gradient check all call it.

Weights are stored one row per hidden unit: ``W_enc`` and ``W_dec`` both have shape (H, D),
so row j of either is unit j's filter (``W_e`` of the notes is ``W_encᵀ``). Tied weights keep
only ``W_enc`` and decode with it. The declarations methods return (:class:`TopK`,
:class:`WeightDecay`, ...) live in :mod:`sparsekit.core.declarations` and are re-exported
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sparsekit.core.activations import (  # noqa: F401  (sigmoid: re-export)
    IDENTITY,
    SIGMOID,
    Activation,
    sigmoid,
)
from sparsekit.core.declarations import (  # noqa: F401  (re-exported: the contract's names)
    BATCH_REDUCTIONS,
    COLUMN_MEANS,
    ROW_MEAN,
    BatchShare,
    Param,
    RowPenalty,
    StepResult,
    StepState,
    Support,
    TopK,
    Upkeep,
    WeightDecay,
    add_scaled,
    between_one_and_hidden,
    code_penalty_pair,
    did_you_mean,
    non_negative,
    open_unit_interval,
    option_of,
    penalty_pair,
    positive,
)
from sparsekit.errors import ParameterError, PluginError


class BaseMethod:
    """What every sparsity method has, whichever step trains it. Do not subclass it
    directly: subclass :class:`Method`, :class:`UpdateMethod` or :class:`ObjectiveMethod`.

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
    #: Parameters with one entry per unit along their first axis (besides W_enc, b_enc and
    #: W_dec): the trainer resets their optimizer moments when it resamples a unit.
    unit_params: ClassVar[tuple[str, ...]] = ()
    #: How the step reads the batch (:data:`ROW_MEAN` or :data:`COLUMN_MEANS`, see
    #: :mod:`sparsekit.core.declarations`), or ``None``: undeclared. Data-parallel training
    #: (``--distributed``) trains a declared method exactly as one process does and refuses
    #: an undeclared one rather than train it as something else. A method whose declaration
    #: depends on its parameters (an auxiliary term that reads the whole batch) makes it a
    #: property, ``None`` for the settings it cannot distribute.
    batch_reduction: ClassVar[str | None] = None
    #: With ``batch_reduction`` undeclared: why the method cannot train data-parallel, said
    #: in the refusal (``None``: the generic reason, an undeclared batch reduction).
    distributed_refusal: ClassVar[str | None] = None
    #: Derived from the type: true for an :class:`UpdateMethod` or an
    #: :class:`ObjectiveUpdateMethod` (trained by ``update()``, with no optimizer). Subclass
    #: one of those types rather than setting it.
    own_update: ClassVar[bool] = False
    #: Derived from the type: true for an :class:`ObjectiveMethod` only.
    own_objective: ClassVar[bool] = False

    def __init__(self, **values: Any) -> None:
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            options = [p.option for p in self.params]
            wrong = option_of(unknown[0])
            raise ParameterError(
                f"method {self.name!r} has no parameter {wrong} "
                f"({did_you_mean(wrong, options)}its parameters: {', '.join(options) or 'none'})"
            )
        for p in self.params:
            value = values.get(p.name, p.default)
            if value is None and p.default is not None:  # None is no value of an int or float
                raise ParameterError(f"{p.option}: expected {p.type.__name__}, got None")
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
                    raise ParameterError(f"{self.name}: {p.option} {problem}")

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


class Method(BaseMethod):
    """A method trained by the generic step: subclass it and override what differs.

    The defaults describe a plain sigmoid autoencoder: sigmoid activation and output, every
    unit kept, no penalties. The step reads f and g from the declarations
    :attr:`hidden_activation` and :attr:`output_activation` only (there is no
    ``activation()`` or ``output()`` to override: :func:`check_method_class` refuses a class
    that defines one), the support from :meth:`mask` and the penalties from their methods.
    """

    #: f, the hidden activation, as a declared :class:`~sparsekit.core.activations.Activation`
    #: (value, derivative and the backward products the step needs).
    hidden_activation: ClassVar[Activation] = SIGMOID
    #: g, the output function, likewise.
    output_activation: ClassVar[Activation] = SIGMOID
    #: Whether :meth:`code_penalty` or :meth:`code_weight_penalty` can return a penalty:
    #: with a top-k support the step builds the dense B×H code only for such a method.
    uses_code_penalty: ClassVar[bool] = False

    def mask(self, xp: Any, z: Any, a: Any, training: bool) -> Support:
        """Which code units are kept: ``None``, a 0/1 array like ``z``, or :class:`TopK`.

        ``training`` is false when encoding for downstream use (e.g. k-sparse's αk).
        """
        return None

    def code_penalty(self, xp: Any, code: Any) -> tuple[Any, Any] | RowPenalty | None:
        """Ω_H(Hc) and ∂Ω_H/∂Hc for the dense B×H code, or ``None`` for no penalty.

        Return ``(value, B×H gradient)``, or a :class:`RowPenalty` when the gradient is one
        row shared by every sample. Set :attr:`uses_code_penalty` when overriding it.
        """
        return None

    def penalty_from_column_means(self, xp: Any, means: Any, rows: int) -> RowPenalty:
        """The code penalty of a method that declares ``batch_reduction = COLUMN_MEANS``,
        from ``means`` (each unit's mean code over the *global* batch) for a share of
        ``rows`` rows: its value for the whole batch, and the gradient row scaled for a batch
        of ``rows`` rows (the trainer weights each rank's share)."""
        raise NotImplementedError(f"{self.name} declares no penalty from column means")

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


class UpdateMethod(Method):
    """A generic-step model trained by its own update instead of an optimizer.

    Its forward pass, reported loss and gradient check are the generic step's (declare f,
    g, the mask and any penalties as for :class:`Method`); each training step calls
    :meth:`update` instead, which must be defined.
    """

    own_update: ClassVar[bool] = True

    def update(
        self, backend: Any, params: dict[str, Any], x: Any, lr: float, reduce: Any = None
    ) -> StepResult:
        """Update ``params`` in place from minibatch ``x`` (a backend array).

        Returns a :class:`StepResult` (the forward pass is the one before the update, for
        the trainer's statistics). ``reduce`` is ``None`` in one process; under data-parallel
        training (a method declaring ``batch_reduction = ROW_MEAN``) it is a function that
        turns a row-mean quantity computed on this rank's rows (the update direction, the
        loss) into the global batch's, the same on every rank: apply it before changing
        ``params``.
        """
        raise NotImplementedError(f"{self.name} does not define its own update")


class ObjectiveMethod(BaseMethod):
    """A method that computes its forward pass, loss and gradients itself.

    For models outside the generic step (a pre-encoder bias, an auxiliary loss, parameters
    beyond the four): the trainer, the optimizers, checkpoints, ``Model.encode`` and the
    gradient check use :meth:`forward` and :meth:`loss_and_grads`, which must be defined.
    """

    own_objective: ClassVar[bool] = True
    #: g, the output function ``Model.decode`` applies to ``code W_dec + b_dec``: linear
    #: for the sparse autoencoders (the step never reads it; :meth:`forward` computes X̂).
    output_activation: ClassVar[Activation] = IDENTITY
    #: Names of the separately checkable terms of the objective (each is a loss with its
    #: gradients, :meth:`loss_and_grads` with ``term=name``; they sum to the objective).
    terms: ClassVar[tuple[str, ...]] = ()
    #: Parameters beyond W_enc, b_enc, b_dec, W_dec that :meth:`init_params` creates, with
    #: their shape as a tuple of ``"hidden"``, ``"dim"`` (e.g. ``("hidden",)``).
    extra_params: ClassVar[Mapping[str, tuple[str, ...]]] = {}
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
        """The forward pass, a :class:`sparsekit.core.step.Forward`."""
        raise NotImplementedError(f"{self.name} has no forward pass of its own")

    def loss_and_grads(
        self,
        backend: Any,
        params: dict[str, Any],
        x: Any,
        state: StepState,
        term: str | None = None,
    ) -> tuple[Any, dict[str, Any], Any, Any]:
        """``(loss, {name: gradient}, forward, reconstruction)`` of the objective.

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


class ObjectiveUpdateMethod(ObjectiveMethod):
    """An :class:`ObjectiveMethod` trained by its own update instead of an optimizer.

    Its forward pass (what ``Model.encode`` returns), its loss and the gradients the check
    compares with finite differences are its own, as for any :class:`ObjectiveMethod`; each
    training step calls :meth:`update`, which must be defined, and the trainer keeps no
    optimizer for it (``own_update`` is true).
    """

    own_update: ClassVar[bool] = True

    def update(self, backend: Any, params: dict[str, Any], x: Any, lr: float) -> StepResult:
        """Update ``params`` in place from minibatch ``x``; as :meth:`UpdateMethod.update`."""
        raise NotImplementedError(f"{self.name} does not define its own update")


# -- the one check every method class passes ---------------------------------------------------

#: The contract's own types: members found in their ``__dict__`` are the contract's, every
#: other class in a method's MRO is the author's.
CONTRACT_TYPES: tuple[type, ...] = (
    BaseMethod,
    Method,
    UpdateMethod,
    ObjectiveMethod,
    ObjectiveUpdateMethod,
)

#: The types trained by their own ``update()`` (``own_update`` is true for them alone).
UPDATE_TYPES: tuple[type, ...] = (UpdateMethod, ObjectiveUpdateMethod)

#: Members of the first contract that the step no longer reads, with what to declare instead.
RETIRED: Mapping[str, str] = {
    "activation": "declare hidden_activation = an Activation (RELU, IDENTITY, SIGMOID or your "
    "own subclass of Activation)",
    "activation_grad": "declare hidden_activation = an Activation, whose derivative() is f′",
    "output": "declare output_activation = an Activation (IDENTITY, SIGMOID or your own "
    "subclass of Activation)",
    "output_grad": "declare output_activation = an Activation, whose derivative() is g′",
}

#: Members only one type's step reads, by the type that reads them.
ONLY_READ_BY: Mapping[type | tuple[type, ...], tuple[str, ...]] = {
    Method: (
        "hidden_activation",
        "uses_code_penalty",
        "mask",
        "code_penalty",
        "weight_penalty",
        "code_weight_penalty",
        "penalty_from_column_means",
    ),
    UPDATE_TYPES: ("update",),
    ObjectiveMethod: (
        "terms",
        "extra_params",
        "surrogates",
        "stop_gradients",
        "forward",
        "loss_and_grads",
        "anchored_loss",
        "check_state",
        "check_problem",
    ),
}

#: Members a type leaves undefined (its default raises): a class of that type defines them.
REQUIRED: Mapping[type, tuple[str, ...]] = {
    UpdateMethod: ("update",),
    ObjectiveMethod: ("forward", "loss_and_grads"),
    ObjectiveUpdateMethod: ("forward", "loss_and_grads", "update"),
}

#: The flags of the first contract and the type that replaces each.
_FLAGS: Mapping[str, type | tuple[type, ...]] = {
    "own_update": UPDATE_TYPES,
    "own_objective": ObjectiveMethod,
}


def _readers(types: type | tuple[type, ...]) -> str:
    """``Method's step reads`` or ``UpdateMethod's step reads (or ObjectiveUpdateMethod's)``."""
    group = types if isinstance(types, tuple) else (types,)
    others = "".join(f" (or {t.__name__}'s)" for t in group[1:])
    return f"{group[0].__name__}'s step reads{others}"


def _type_names(types: type | tuple[type, ...], prefix: str = "") -> str:
    """``Method`` or ``UpdateMethod or ObjectiveUpdateMethod`` (each with ``prefix``)."""
    group = types if isinstance(types, tuple) else (types,)
    return " or ".join(prefix + t.__name__ for t in group)


def method_type(cls: type[BaseMethod]) -> type[BaseMethod]:
    """Which of :class:`Method`, :class:`UpdateMethod`, :class:`ObjectiveMethod`,
    :class:`ObjectiveUpdateMethod` ``cls`` is (the most specific one;
    :func:`check_method_class` has refused any mix)."""
    for kind in (UpdateMethod, ObjectiveUpdateMethod, ObjectiveMethod, Method):
        if issubclass(cls, kind):
            return kind
    return BaseMethod


def check_method_class(cls: Any) -> None:
    """Refuse a class the step would train as something else than it says.

    Raises :class:`~sparsekit.errors.PluginError` with one line naming the class and what to
    declare instead when ``cls``

    * is not a subclass of exactly one of :class:`Method` (with :class:`UpdateMethod`) and
      :class:`ObjectiveMethod`;
    * defines, in any class of its MRO below those types, a member of :data:`RETIRED` (the
      first contract's ``activation()``, ``output()``, ...: the step reads the declared
      activations only);
    * sets ``own_objective`` or ``own_update`` against its type (the first contract's flags:
      subclass :class:`ObjectiveMethod` or :class:`UpdateMethod` instead);
    * defines a member only another type's step reads (:data:`ONLY_READ_BY`), or lacks one
      its own type needs (:data:`REQUIRED`).

    Members are looked up in the ``__dict__`` of each of the author's classes, so the check
    sees overrides however the method is built. The registry, :func:`make_method`, the
    trainer and the gradient check call it.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseMethod)):
        raise PluginError(f"expected a subclass of sparsekit.methods.Method, got {cls!r}")
    label = f"method class {cls.__qualname__}" + (f" ({cls.name!r})" if cls.name else "")
    problem = _type_problem(cls) or _member_problem(cls)
    if problem:
        raise PluginError(f"{label} {problem}")


def _type_problem(cls: type[BaseMethod]) -> str | None:
    """What is wrong with the types ``cls`` subclasses and the flags it sets, if anything."""
    if issubclass(cls, Method) and issubclass(cls, ObjectiveMethod):
        return (
            "subclasses both Method and ObjectiveMethod: subclass one (Method or UpdateMethod "
            "for the generic step, ObjectiveMethod for an objective of its own)"
        )
    if method_type(cls) is BaseMethod:
        return "subclasses BaseMethod directly: subclass Method, UpdateMethod or ObjectiveMethod"
    for flag, kind in _FLAGS.items():
        if bool(getattr(cls, flag)) != issubclass(cls, kind):
            verb = "sets" if getattr(cls, flag) else "clears"
            return (
                f"{verb} {flag}, which is derived from its type: subclass "
                + (
                    _type_names(kind, "sparsekit.methods.")
                    if getattr(cls, flag)
                    else "sparsekit.methods.Method"
                )
                + " instead"
            )
    return None


def _member_problem(cls: type[BaseMethod]) -> str | None:
    """A member ``cls`` defines that its type's step does not read, or one it lacks."""
    kind = method_type(cls)
    authors = [k for k in cls.__mro__ if k not in CONTRACT_TYPES and k is not object]
    for klass in authors:
        for member in vars(klass):
            if member in RETIRED:
                return (
                    f"defines {member}(), which the step no longer reads: {RETIRED[member]}"
                    " instead"
                )
            for reader, members in ONLY_READ_BY.items():
                if member in members and not issubclass(cls, reader):
                    return (
                        f"defines {member}, which only {_readers(reader)} (its "
                        f"type is {kind.__name__}): subclass "
                        f"{_type_names(reader, 'sparsekit.methods.')} or remove {member}"
                    )
    for member in REQUIRED.get(kind, ()):
        if not any(member in vars(klass) for klass in authors):
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            return f"is {article} {kind.__name__} but does not define {member}(): define it"
    return None
