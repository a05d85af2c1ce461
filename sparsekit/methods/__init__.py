"""The sparsity methods, one file each, their registry and the plugin hook.

This module is also the plugin author's one import: everything a method's file needs (the
contract types, parameter checks, the declared activations, the SAELens declaration and the
hook marker) is here, and the built-ins import it from here too::

    from sparsekit.methods import IDENTITY, RELU, Method, Param, hookimpl, non_negative
"""

from sparsekit.core.activations import IDENTITY, RELU, SIGMOID, Activation, Identity, ReLU, Sigmoid
from sparsekit.core.contract import (
    Method,
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
    positive,
)
from sparsekit.core.saelens_arch import SAELensArch
from sparsekit.core.step import Forward
from sparsekit.methods.hookspecs import hookimpl

__all__ = [
    "IDENTITY",
    "RELU",
    "SIGMOID",
    "Activation",
    "Forward",
    "Identity",
    "Method",
    "Param",
    "ReLU",
    "RowPenalty",
    "SAELensArch",
    "Sigmoid",
    "StepResult",
    "StepState",
    "TopK",
    "Upkeep",
    "WeightDecay",
    "between_one_and_hidden",
    "hookimpl",
    "non_negative",
    "open_unit_interval",
    "positive",
]
