"""The sparsity methods, one file each, their registry and the plugin hook.

This module is also the plugin author's one import: everything a method's file needs (the
three method types, the declarations, parameter checks, the declared activations, the
SAELens declaration and the hook marker) is here, and the built-ins import it from here too::

    from sparsekit.methods import IDENTITY, RELU, Method, Param, hookimpl, non_negative

Subclass :class:`Method` for the generic step (declare f and g, write the mask and the
penalties), :class:`UpdateMethod` for a generic-step model trained by its own update, or
:class:`ObjectiveMethod` for a forward pass, loss and gradients of the method's own
(``docs/plugins.md``). :func:`check_method_class` is the check a class passes when it
registers, trains or is gradient-checked.
"""

from sparsekit.core.activations import IDENTITY, RELU, SIGMOID, Activation, Identity, ReLU, Sigmoid
from sparsekit.core.contract import (
    BaseMethod,
    Method,
    ObjectiveMethod,
    ObjectiveUpdateMethod,
    UpdateMethod,
    check_method_class,
)
from sparsekit.core.declarations import (
    COLUMN_MEANS,
    ROW_MEAN,
    Param,
    RowPenalty,
    StepResult,
    StepState,
    TopK,
    Upkeep,
    WeightDecay,
    between_one_and_hidden,
    non_negative,
    open_unit_interval,
    penalty_pair,
    positive,
)
from sparsekit.core.saelens_arch import SAELensArch
from sparsekit.core.step import Forward, decoder_weights, pre_activation
from sparsekit.methods.hookspecs import hookimpl

__all__ = [
    "COLUMN_MEANS",
    "IDENTITY",
    "ROW_MEAN",
    "RELU",
    "SIGMOID",
    "Activation",
    "BaseMethod",
    "Forward",
    "Identity",
    "Method",
    "ObjectiveMethod",
    "ObjectiveUpdateMethod",
    "Param",
    "ReLU",
    "RowPenalty",
    "SAELensArch",
    "Sigmoid",
    "StepResult",
    "StepState",
    "TopK",
    "UpdateMethod",
    "Upkeep",
    "WeightDecay",
    "between_one_and_hidden",
    "check_method_class",
    "decoder_weights",
    "hookimpl",
    "non_negative",
    "open_unit_interval",
    "penalty_pair",
    "pre_activation",
    "positive",
]
