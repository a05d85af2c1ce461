"""(b) Autoencoder with L2 weight decay.

As :mod:`~sparsekit.methods.plain`, plus::

    Ω_W = (λ/2) Σ_W ‖W‖²_F       over the distinct weight matrices (W_enc, and W_dec if untied)
    ∂Ω_W/∂W = λ W                biases are not decayed

Source: Ng, CS294A lecture notes "Sparse autoencoder" (2011), section 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparsekit.methods import ROW_MEAN, Method, Param, WeightDecay, hookimpl, non_negative


def l2_penalty(xp: Any, weights: Mapping[str, Any], lam: float) -> WeightDecay:
    """(λ/2)·Σ‖W‖² and λ·W for each matrix: shared by every method with weight decay.

    A :class:`~sparsekit.core.contract.WeightDecay`: it unpacks as ``(value, gradients)``,
    and the trainer adds λW to the gradients in place.
    """
    return WeightDecay(xp, weights, lam)


class L2(Method):
    name = "l2"
    batch_reduction = ROW_MEAN  # a mean over rows plus λ‖W‖² (no batch in it)
    description = "Sigmoid autoencoder with L2 weight decay on both weight matrices."
    citation = "Ng, CS294A lecture notes 'Sparse autoencoder' (2011)"
    params = (Param("weight_decay", float, 3e-3, "λ, the L2 weight-decay strength", non_negative),)
    training_defaults = {"optimizer": "adam", "lr": 1e-3, "hidden": 196, "batch_size": 128}

    def weight_penalty(self, xp, weights):
        return l2_penalty(xp, weights, self.weight_decay)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(L2)
