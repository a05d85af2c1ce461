"""The standard sparse autoencoder: ReLU, an L1 penalty weighted by decoder norms (Conerly,
Templeton, Batson et al., "Circuits Updates – April 2024", transformer-circuits.pub; the
"Standard L1" baseline of SAEBench and SynthSAEBench; SAELens ``standard``,
dictionary_learning's ``StandardTrainerAprilUpdate``).

Forward, with the pre-encoder bias (SAELens' ``apply_b_dec_to_input``)::

    X̃ = X − b_dec ;  Z = X̃ W_encᵀ + b_enc ;  F = ReLU(Z) ;  X̂ = F W_dec + b_dec

Loss, with n_j = ‖W_dec[j]‖₂ (decoder rows are *not* constrained to unit norm)::

    L = (1/2B)‖X̂ − X‖² + (λ_t/B) Σ_ij F_ij n_j

The n_j factor makes the penalty invariant to moving scale between a unit's code and its
decoder row (F_j·c, W_dec[j]/c), so it cannot be lowered without a sparser code.
λ_t = λ·min(1, (t + 1)/T) over the first T = ``l1_warm_up_steps`` optimizer steps (SAELens'
``l1_warm_up_steps``; 0: λ from the first step). SAELens' MSE has no ½, so its
``l1_coefficient`` is 2λ.

Gradient (G = (X̂ − X)/B; derived by hand, checked by ``sparsekit gradcheck standard``)::

    ∇W_dec[j] = (Fᵀ G)[j] + (λ_t/B) (Σ_i F_ij) W_dec[j]/n_j      (the penalty through n_j)
    dF        = G W_decᵀ + (λ_t/B) n                             (n broadcast over rows)
    dZ        = dF ⊙ 1[Z > 0]
    ∇W_enc    = dZᵀ X̃ ;  ∇b_enc = Σ_rows dZ ;  ∇b_dec = Σ_rows G − (Σ_rows dZ) W_enc

Every gradient is a true derivative (the ReLU's kink has measure zero). Initialisation
follows the April update (SAELens' ``decoder_init_norm=0.1``): random decoder rows of norm
0.1, W_enc the same rows (the decoder's transpose in SAELens' orientation), b_enc = 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend.threads import matmul
from sparsekit.methods import (
    RELU,
    Forward,
    Param,
    SAELensArch,
    Upkeep,
    _sae,
    hookimpl,
    non_negative,
)

#: Below this a decoder row counts as zero (its penalty gradient through n_j is then zero).
_TINY = 1e-30

#: The April update's initial decoder-row norm (SAELens' default ``decoder_init_norm``).
DECODER_INIT_NORM = 0.1


class StandardSAE(_sae.SAEMethod):
    name = "standard"
    description = (
        "Standard SAE: ReLU, pre-encoder bias, L1 weighted by decoder norms (April 2024)."
    )
    citation = (
        "Conerly, Templeton, Batson et al., 'Circuits Updates - April 2024: Update on how we "
        "train SAEs', transformer-circuits.pub"
    )
    params = (
        Param("l1", float, 0.05, "lambda, the L1 coefficient on F_j * ||W_dec[j]||", non_negative),
        Param(
            "l1_warm_up_steps",
            int,
            0,
            "ramp lambda linearly from lambda/T to lambda over the first T steps (0: off)",
            _sae.non_negative_int,
        ),
        _sae.B_DEC_INIT_PARAM,
    )
    training_defaults = {**_sae.SAEMethod.training_defaults, "lr": 1e-3}
    # ReLU((x − b_dec) W_encᵀ + b_enc), F W_dec + b_dec: SAELens' "standard" SAE, exactly.
    saelens = SAELensArch("standard", subtracts_b_dec=True)
    terms = ("reconstruction", "sparsity")

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._steps = 0

    def init_params(self, rng, dim, hidden, tied, sample):
        params = _sae.unit_rows_init(rng, dim, hidden)
        params["W_dec"] *= DECODER_INIT_NORM
        params["W_enc"] *= DECODER_INIT_NORM
        return params

    def upkeep(self) -> Upkeep:
        base = super().upkeep()
        return Upkeep(unit_norm_decoder=False, b_dec_init=base.b_dec_init)

    # -- the λ warm-up: a count of optimizer steps, saved with the checkpoint ---------------

    def l1_now(self) -> float:
        """λ_t, the coefficient of the next step."""
        if self.l1_warm_up_steps <= 0:
            return self.l1
        return self.l1 * min(1.0, (self._steps + 1) / self.l1_warm_up_steps)

    def after_step(self, backend, params, fwd) -> None:
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": np.int64(self._steps)}

    def load_state_dict(self, state) -> None:
        self._steps = int(state.get("steps", 0))

    def epoch_metrics(self) -> dict[str, Any]:
        return {"l1_now": self.l1_now()} if self.l1_warm_up_steps else {}

    # -- the objective --------------------------------------------------------------------

    def forward(self, backend, params, x, training):
        x_tilde = x - params["b_dec"]
        z = matmul(x_tilde, params["W_enc"].T, plus=params["b_enc"])
        code = RELU.value(backend.xp, z)
        xhat = matmul(code, params["W_dec"], plus=params["b_dec"])
        return Forward(z, code, None, code, None, xhat, xhat)

    def loss_and_grads(self, backend, params, x, state, term=None):
        self._check_term(term)
        xp = backend.xp
        batch = x.shape[0]
        w_dec = params["W_dec"]
        x_tilde = x - params["b_dec"]
        fwd = self.forward(backend, params, x, True)
        code = fwd.code
        g = fwd.xhat - x
        reconstruction = (0.5 / batch) * xp.vdot(g, g)
        use_rec = term in (None, "reconstruction")
        loss = reconstruction if use_rec else 0 * reconstruction
        g *= 1.0 / batch if use_rec else 0.0  # G
        grad_w_dec = matmul(code.T, g)
        grad_b_dec = g.sum(axis=0)
        d_code = matmul(g, w_dec.T)
        lam = self.l1_now()
        row = None  # the penalty's gradient, one row shared by every sample
        if term in (None, "sparsity") and lam > 0:
            norms = xp.sqrt(xp.einsum("hd,hd->h", w_dec, w_dec))
            scale = x.dtype.type(lam / batch)
            per_unit = code.sum(axis=0)  # Σ_i F_ij (F ≥ 0)
            loss = loss + scale * xp.vdot(per_unit, norms)
            row = scale * norms
            grad_w_dec += w_dec * (scale * per_unit / xp.maximum(norms, _TINY))[:, None]
        # dZ = (dF + row) ∘ 1[Z > 0] in place, and ∇b_enc = Σ_rows dZ: one pass
        grad_b_enc = RELU.hidden_delta(xp, d_code, fwd.z, code, row, 1.0)
        grad_w_enc = matmul(d_code.T, x_tilde)
        grad_b_dec -= grad_b_enc @ params["W_enc"]
        grads = {"W_enc": grad_w_enc, "b_enc": grad_b_enc, "b_dec": grad_b_dec, "W_dec": grad_w_dec}
        return loss, grads, fwd, reconstruction


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(StandardSAE)
