"""Sparsity methods. Each built-in lives in its own module and registers as a plugin."""

from sparsekit.methods.base import (
    Method,
    Param,
    RowPenalty,
    StepResult,
    StepState,
    TopK,
    Upkeep,
    WeightDecay,
)

__all__ = [
    "Method",
    "Param",
    "RowPenalty",
    "StepResult",
    "StepState",
    "TopK",
    "Upkeep",
    "WeightDecay",
]
