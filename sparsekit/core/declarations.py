"""The declarations a method returns or states, apart from the method types themselves.

A method's class (:mod:`sparsekit.core.contract`) states its hyperparameters as
:class:`Param` declarations and returns these objects to the trainer: a :class:`TopK`
support from ``mask()``, a :class:`WeightDecay` or a :class:`RowPenalty` from its
penalties, an :class:`Upkeep` saying what the trainer maintains, a :class:`StepResult` from
an own update; the trainer hands it a :class:`StepState`. Each is a declaration the step
reads as data, so the step never needs to know which class produced it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparsekit.backend import fused
from sparsekit.errors import ParameterError


def option_of(name: str) -> str:
    """``pre_bias`` -> ``--pre-bias``: how every message names a method parameter.

    One form for both audiences: the command line takes it as typed, and a caller of the
    Python API (``pre_bias=True``) still recognises its keyword in it.
    """
    return "--" + name.replace("_", "-")


def did_you_mean(option: str, options: Iterable[str]) -> str:
    """``"did you mean --epochs? "`` when ``option`` is close to one of ``options``, else ``""``.

    Both are written as options (``--epoch``), so that a typo is compared with what the
    user could have typed.
    """
    close = difflib.get_close_matches(option, list(options), n=1)
    return f"did you mean {close[0]}? " if close else ""


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

    @property
    def option(self) -> str:
        """The parameter as messages and ``sparsekit train`` name it (``--pre-bias``)."""
        return option_of(self.name)

    def convert(self, value: Any) -> Any:
        """``value`` (possibly a command-line string) as this parameter's type."""
        if isinstance(value, str) and self.type is not str:
            if self.type is bool:
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ParameterError(f"{self.option}: expected true or false, got {value!r}")
            try:
                return self.type(value)
            except ValueError:
                raise ParameterError(
                    f"{self.option}: expected {self.type.__name__}, got {value!r}"
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
                f"{self.option}: expected {self.type.__name__}, "
                f"got {type(value).__name__} {value!r}"
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

    A method declares it by returning one from :meth:`BaseMethod.upkeep`; the trainer applies it
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
    """What :meth:`UpdateMethod.update` returns: the step's loss and reconstruction term (0-d
    backend arrays) and the forward pass it computed before updating (a
    :class:`sparsekit.core.step.Forward`, for the trainer's statistics)."""

    loss: Any
    reconstruction: Any
    forward: Any


@dataclass(frozen=True)
class BatchShare:
    """This rank's share of a global batch under data-parallel training: ``rows`` of the
    ``total`` rows, and the communicator (a :class:`sparsekit.parallel.Communicator` working
    on the backend's arrays) that sums over the ranks. The generic step reads it for a method
    declaring ``COLUMN_MEANS``; a :class:`ObjectiveMethod` declaring ``ROW_MEAN`` whose
    objective has a batch-wide part (AuxK's variance-normalised weight, BatchTopK's
    selection) finds it in :attr:`StepState.share` and computes that part over the ranks."""

    comm: Any
    rows: int
    total: int

    def sum(self, array: Any) -> Any:
        """``array`` summed over the ranks (the same on every rank)."""
        return self.comm.allreduce_sum(array)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (small objects), in rank order."""
        return self.comm.allgather(value)

    def column_means(self, code: Any) -> Any:
        """Each code unit's mean over the global batch (the same on every rank)."""
        return self.sum(code.sum(axis=0)) / self.total


@dataclass
class StepState:
    """What the trainer knows beyond the minibatch, handed to
    :meth:`ObjectiveMethod.loss_and_grads`.

    ``dead`` is a boolean (H,) backend array, true for units dead by
    :attr:`Upkeep.dead_after`, or ``None`` when nothing is tracked. A gradient check builds
    its own (:meth:`ObjectiveMethod.check_state`). ``share``: see :class:`BatchShare`.
    """

    dead: Any = None
    #: Under data-parallel training, this rank's :class:`BatchShare` (else ``None``): an
    #: objective with a batch-wide part computes that part over every rank's rows with it.
    share: BatchShare | None = None


#: :attr:`BaseMethod.batch_reduction` values: how a step reads its batch, which is what
#: data-parallel training (``--distributed``) needs to know to give the one-process model.
#:
#: ``ROW_MEAN``: the loss is a mean over the batch's rows of per-row terms, plus terms that do
#: not depend on the batch (weight penalties); the mask of each row depends on that row alone.
#: Each rank then computes the step on its share as if it were the whole batch, its loss and
#: gradients are weighted by its share of the rows, and the weighted sums over the ranks are
#: the global ones (an :class:`UpdateMethod` receives the summing function as ``reduce``).
ROW_MEAN = "row_mean"
#: ``COLUMN_MEANS``: as ``ROW_MEAN``, except that the code penalty reads the batch through the
#: mean of each code unit over the batch (KL's ρ̂); the method defines
#: :meth:`Method.penalty_from_column_means`, which the step calls with the global means.
COLUMN_MEANS = "column_means"
BATCH_REDUCTIONS = (ROW_MEAN, COLUMN_MEANS)


#: What :meth:`Method.mask` returns: ``None`` (keep every unit), a B×H array of 0/1 in the
#: compute dtype, or a :class:`TopK`.
Support = Any
