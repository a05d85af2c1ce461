"""Sparsity methods. Each built-in lives in its own module and registers as a plugin."""

from sparsekit.methods.base import Method, Param, TopK, WeightDecay

__all__ = ["Method", "Param", "TopK", "WeightDecay"]
