"""(a) Plain autoencoder: sigmoid encoder and decoder, no penalty.

Forward and gradient are the generic ones of :mod:`sparsekit.autoencoder` with
f = g = sigmoid (f′ = A(1 − A), g′ = X̂(1 − X̂)) and Ω = 0. Every hidden unit may take part in
every reconstruction, so its filters are not specific to digits.
"""

from __future__ import annotations

from sparsekit.methods import ROW_MEAN, Method, hookimpl


class Plain(Method):
    name = "plain"
    batch_reduction = ROW_MEAN  # (1/2B)‖X̂ − X‖²: a mean over rows
    description = "Sigmoid autoencoder without any penalty (the baseline)."
    citation = "Rumelhart, Hinton & Williams 1986; as in Ng, CS294A notes 2011 without β, λ"
    training_defaults = {"optimizer": "adam", "lr": 1e-3, "hidden": 196, "batch_size": 128}


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(Plain)
