"""Plugins written against the first method contract, shared by the refusal tests.

Each overrides a member the step no longer reads (f or g by override, never declared), so
registered or trained it would silently be a sigmoid autoencoder: every entry point must
refuse it (tests/core/test_method_types.py, tests/methods/test_registry.py,
tests/testing/test_refused_methods.py).
"""

from __future__ import annotations

from sparsekit import Method


class OldReLU(Method):
    """f overridden as a ReLU in activation() and activation_grad(), never declared."""

    name = "old-relu"
    description = "ReLU by override (first contract)."

    def activation(self, xp, z):
        return xp.maximum(z, 0)

    def activation_grad(self, xp, z, a):
        return (z > 0).astype(z.dtype)


class OldLinearOutput(Method):
    """g overridden as the identity in output() and output_grad(), never declared."""

    name = "old-linear"
    description = "Linear output by override (first contract)."

    def output(self, xp, y):
        return y

    def output_grad(self, xp, y, xhat):
        return None
