"""Sparsity methods. Each built-in lives in its own module and registers as a plugin."""

from sparsekit.methods.base import Method, Param, StepState, TopK, Upkeep, WeightDecay

__all__ = ["Method", "Param", "StepState", "TopK", "Upkeep", "WeightDecay"]
