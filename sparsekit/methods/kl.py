"""(c) Sparse autoencoder with a KL penalty on mean activations (Ng, CS294A, 2011).

With ρ̂_j = (1/B) Σ_i A_ij the mean activation of unit j over the batch::

    Ω_H = β Σ_j [ ρ log(ρ/ρ̂_j) + (1 − ρ) log((1 − ρ)/(1 − ρ̂_j)) ]
    ∂Ω_H/∂A_ij = (β/B) ( −ρ/ρ̂_j + (1 − ρ)/(1 − ρ̂_j) )     (the same for every row i)

plus the weight decay of :mod:`~sparsekit.methods.l2`. f = g = sigmoid. (The 2011 wiki code
has the typo ``(1-rho)/rho_hat``; the formula above is the correct one.) The MNIST exercise
used H = 196, ρ = 0.1, λ = 3e-3, β = 3.
"""

from __future__ import annotations

from sparsekit import _jit
from sparsekit.hookspecs import hookimpl
from sparsekit.methods.base import Method, Param, non_negative, open_unit_interval
from sparsekit.methods.l2 import l2_penalty

# Keeps log() finite when a unit saturates; far below any ρ a user would pick.
_RHO_HAT_FLOOR = 1e-6


class KLSparse(Method):
    name = "kl"
    description = "Sigmoid autoencoder with a KL sparsity penalty on mean activations (Ng)."
    citation = "Ng, CS294A lecture notes 'Sparse autoencoder' (2011)"
    params = (
        Param(
            "rho", float, 0.1, "ρ, target mean activation of each hidden unit", open_unit_interval
        ),
        Param("beta", float, 3.0, "β, weight of the KL sparsity penalty", non_negative),
        Param("weight_decay", float, 3e-3, "λ, the L2 weight-decay strength", non_negative),
    )
    training_defaults = {"optimizer": "adam", "lr": 1e-3, "hidden": 196, "batch_size": 128}

    def code_penalty(self, xp, code):
        batch = code.shape[0]
        rho, beta = self.rho, self.beta
        # On the CPU, the same numbers in one compiled pass over the code (sparsekit._jit).
        fused = _jit.kl_penalty(code, rho, beta, _RHO_HAT_FLOOR)
        if fused is not None:
            divergence, d_row = fused
            return code.dtype.type(beta * divergence), xp.broadcast_to(d_row, code.shape)
        rho_hat = code.mean(axis=0)
        rho_hat = xp.clip(rho_hat, _RHO_HAT_FLOOR, 1 - _RHO_HAT_FLOOR)
        value = beta * xp.sum(
            rho * xp.log(rho / rho_hat) + (1 - rho) * xp.log((1 - rho) / (1 - rho_hat))
        )
        d_row = (beta / batch) * (-rho / rho_hat + (1 - rho) / (1 - rho_hat))
        return value, xp.broadcast_to(d_row, code.shape)

    def weight_penalty(self, xp, weights):
        return l2_penalty(xp, weights, self.weight_decay)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(KLSparse)
