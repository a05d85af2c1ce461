"""ReLU autoencoder with an L1 code penalty scaled by decoder norms (a sparsekit plugin).

With ``d_j`` the decoder row of unit j (row j of ``W_dec``; of ``W_enc`` when tied) and
``n_j = ‖d_j‖₂``::

    Z  = X W_encᵀ + b_enc ;  Hc = max(Z, 0) ;  X̂ = Hc W_dec + b_dec     (linear output)
    L  = (1/2B)‖X̂ − X‖² + Ω
    Ω  = (λ/B) Σ_i Σ_j |Hc_ij| n_j

    ∂Ω/∂Hc_ij = (λ/B) sgn(Hc_ij) n_j                  (0 at Hc_ij = 0: a subgradient)
    ∂Ω/∂d_j   = (λ/B) (Σ_i |Hc_ij|) d_j / n_j          (0 when d_j = 0)

An unscaled L1 penalty λ Σ|Hc| can be lowered without making the code any sparser, by
shrinking Hc and growing W_dec; with the n_j factor, rescaling a unit's code by c and its
decoder row by 1/c leaves both terms unchanged. Because Ω depends on the code *and* on the
decoder weights, the method (a generic-step :class:`sparsekit.methods.Method`, f and g
declared) implements :meth:`~sparsekit.methods.Method.code_weight_penalty`
(value, ∂Ω/∂Hc, ∂Ω/∂W) instead of ``code_penalty``; the generic backward pass adds
∂Ω/∂Hc to the code's gradient and ∂Ω/∂W to the weight gradient, which for tied weights is
the single ``W_enc``.

The penalty follows the sparse-autoencoder training of Conerly et al., "Circuits Updates –
April 2024", transformer-circuits.pub (L1 of feature activations times decoder norms).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparsekit.methods import (
    IDENTITY,
    RELU,
    ROW_MEAN,
    Method,
    Param,
    SAELensArch,
    hookimpl,
    non_negative,
)

__all__ = ["ReluL1", "decoder_norm_l1", "sparsekit_register_methods"]

__version__ = "0.1.0"

#: Below this a decoder row counts as zero (its gradient through n_j is then zero).
_TINY = 1e-30


def decoder_norm_l1(xp: Any, code: Any, w_dec: Any, lam: float) -> tuple[Any, Any, Any]:
    """Ω = (λ/B) Σ_ij |Hc_ij| ‖d_j‖, ∂Ω/∂Hc (B×H) and ∂Ω/∂W_dec (H×D), in the code's dtype."""
    scale = lam / code.shape[0]
    norms = xp.sqrt(xp.einsum("hd,hd->h", w_dec, w_dec))  # n_j, H
    magnitude = xp.abs(code)
    value = scale * xp.vdot(magnitude.sum(axis=0), norms)
    d_code = xp.sign(code)
    d_code *= norms
    d_code *= scale
    per_unit = magnitude.sum(axis=0) / xp.maximum(norms, _TINY)  # Σ_i |Hc_ij| / n_j
    per_unit *= scale
    d_weights = w_dec * per_unit[:, None]
    return value, d_code, d_weights


class ReluL1(Method):
    name = "relu-l1"
    # Ω is a mean over rows (λ/B Σ_i …): data-parallel training is exact with this one line.
    batch_reduction = ROW_MEAN
    description = (
        "ReLU autoencoder, linear decoder, L1 code penalty scaled by decoder norms (plugin)."
    )
    citation = "Conerly et al., 'Circuits Updates - April 2024', transformer-circuits.pub"
    params = (
        Param(
            "l1",
            float,
            0.05,
            "λ, weight of the L1 code penalty (each unit scaled by its decoder norm)",
            non_negative,
        ),
    )
    tied = False
    # ReLU(x W_encᵀ + b_enc), linear decoder: SAELens' "standard" SAE with
    # apply_b_dec_to_input false, exactly. A "standard" file from elsewhere is read by the
    # built-in ``standard`` method (which subtracts b_dec as SAELens does by default), so this
    # example declares reads=False: one reader per architecture.
    saelens = SAELensArch("standard", reads=False)
    training_defaults = {
        "optimizer": "adam",
        "lr": 1e-3,
        "hidden": 196,
        "batch_size": 128,
        "epochs": 10,
    }

    hidden_activation = RELU
    output_activation = IDENTITY
    uses_code_penalty = True

    def code_weight_penalty(self, xp, code, weights: Mapping[str, Any]):
        if self.l1 == 0:
            return None
        name = "W_dec" if "W_dec" in weights else "W_enc"
        value, d_code, d_dec = decoder_norm_l1(xp, code, weights[name], self.l1)
        return value, d_code, {name: d_dec}


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(ReluL1)
