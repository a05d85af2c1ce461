"""TopK sparse autoencoder with the AuxK loss (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders", arXiv:2406.04093).

Forward (the paper's TopK activation, with its pre-encoder bias b_pre = b_dec)::

    X̃ = X − b_dec ;  Z = X̃ W_encᵀ + b_enc ;  A = ReLU(TopK_k(Z)) ;  X̂ = A W_dec + b_dec

Loss: L = (1/2B)‖X̂ − X‖² + w·(1/2B)‖Ê − R‖² (AuxK, §A.2), with R = sg(X − X̂) the detached
residual, Ê = A_aux W_dec (no b_dec) from the k_aux largest pre-activations (ReLU'd) among
*dead* latents, and w = α·N_X/N_R a constant: α = 1/32, N_X = ‖X − x̄‖², N_R = ‖R − r̄‖² (the
paper's variance-normalised MSEs, rescaled so the first term is the trainer's usual MSE).

Gradient (G = (X̂ − X)/B, M the top-k mask, G_a = w(Ê − R)/B, M_a the aux mask)::

    ∇W_dec = Aᵀ G + A_auxᵀ G_a                        (aux: dead latents' rows only)
    dZ     = (G W_decᵀ) ⊙ M ⊙ 1[Z > 0] + (G_a W_decᵀ) ⊙ M_a ⊙ 1[Z > 0]
    ∇W_enc = dZᵀ X̃ ;  ∇b_enc = Σ_rows dZ ;  ∇b_dec = Σ_rows G − (Σ_rows dZ) W_enc

The top-k selection is piecewise constant, so these are exact derivatives almost everywhere;
no straight-through estimator is involved. R and w are stop-gradient constants: nothing of
the aux term reaches b_dec through the output or the live latents (the bugs of sparsify #132
and SAELens PR #432 / sparsify #57).

Every main term but the encoder product is computed on the k kept units of each row; the AuxK
term on the dead latents' columns, a block of rows at a time (:func:`_sae.auxk_term`). With no
dead latent the AuxK term is w·(1/2B)‖R‖², a constant of the step (zero gradient), left out.
The selections are :mod:`sparsekit.backend.selection`'s.
The trainer keeps decoder rows at unit norm, starts b_dec at the data's geometric median and
tracks dead latents (:meth:`upkeep`).
"""

from __future__ import annotations

from sparsekit.backend.selection import top_k_indices
from sparsekit.backend.sparse_code import code_times, code_transpose_times, gathered_dot
from sparsekit.backend.threads import matmul
from sparsekit.methods import (
    Forward,
    Param,
    SAELensArch,
    TopK,
    _sae,
    between_one_and_hidden,
    hookimpl,
)


class TopKSAE(_sae.SAEMethod):
    name = "topk"
    description = "TopK sparse autoencoder with the AuxK loss on dead latents (Gao et al.)."
    citation = (
        "Gao, la Tour, Tillman, Goh, Troll, Radford, Sutskever, Leike & Wu, 'Scaling and "
        "evaluating sparse autoencoders', 2024, arXiv:2406.04093"
    )
    #: Adam at 4e-3, not the SAE methods' 3e-4: on a user's own file (50,000 × 256 rows,
    #: 1,024 latents, batch 1,024, 10 epochs: 440 steps) 3e-4 reached FVE 0.56 and 4e-3
    #: 0.81, the best of the values tried. Gao et al.'s 2e-4/√(H/2¹⁴) (8e-4 here, 0.68) is
    #: for runs of many thousands of steps.
    training_defaults = {**_sae.SAEMethod.training_defaults, "lr": 4e-3}
    params = (
        Param("k", int, 32, "latents kept per sample", between_one_and_hidden),
        *_sae.AUXK_PARAMS,
        _sae.B_DEC_INIT_PARAM,
        _sae.RESAMPLE_PARAM,
    )
    # x − b_dec, the k largest pre-activations, ReLU: SAELens' "topk" SAE, exactly.
    saelens = SAELensArch(
        "topk",
        cfg=lambda m: {"k": m.k, "rescale_acts_by_decoder_norm": False},
        params=lambda cfg: {"k": int(cfg["k"])},
        subtracts_b_dec=True,
    )
    terms = ("reconstruction", "auxk")
    stop_gradients = {
        "AuxK residual": "R = X − X̂ and its variance N_R are constants of the aux term",
    }

    def forward(self, backend, params, x, training):
        xp = backend.xp
        x_tilde = x - params["b_dec"]
        z = matmul(x_tilde, params["W_enc"].T, plus=params["b_enc"])  # split over threads
        idx = top_k_indices(xp, z, min(self.k, z.shape[1]))
        values = xp.take_along_axis(z, idx, axis=1)
        xp.maximum(values, 0, out=values)
        xhat = code_times(backend, idx, values, params["W_dec"])
        xhat += params["b_dec"]
        return Forward(z, z, TopK(idx), None, values, xhat, xhat)

    def _objective(self, backend, params, x, state, term, anchor, want_grads):
        self._check_term(term)
        xp = backend.xp
        batch, hidden = x.shape[0], params["W_enc"].shape[0]
        w_dec = params["W_dec"]
        fwd = self.forward(backend, params, x, True)
        idx, values = fwd.support.indices, fwd.code_values
        e = fwd.xhat - x
        reconstruction = (0.5 / batch) * xp.vdot(e, e)
        loss = reconstruction if term in (None, "reconstruction") else 0 * reconstruction
        x_tilde = x - params["b_dec"]
        aux = None
        if term in (None, "auxk") and self.aux_coef > 0:
            aux = _sae.dead_units(backend, state.dead)
        if aux is not None:
            ref = fwd if anchor is None else self.forward(backend, anchor, x, True)
            residual = x - ref.xhat  # R = sg(X − X̂)
            scale = _sae.auxk_scale(backend, x, residual, self.aux_coef, state.share)
            aux_loss, aux_grads = _sae.auxk_term(
                backend, fwd.z, aux, self.k_aux, w_dec, residual, scale, x_tilde, want_grads
            )
            loss = loss + aux_loss
        if not want_grads:
            return loss, {}, fwd, reconstruction
        if term in (None, "reconstruction"):
            g = e
            g *= 1.0 / batch  # G (e is not used again)
            grad_w_dec = code_transpose_times(backend, idx, values, g, hidden)
            grad_b_dec = g.sum(axis=0)
            d_values = gathered_dot(backend, g, w_dec, idx)
            d_values *= values > 0
            grad_w_enc, grad_b_enc, _ = _sae.encoder_grads_sparse(
                backend, [(idx, d_values)], x_tilde, params["W_enc"], hidden, False
            )
        else:
            grad_w_dec = xp.zeros_like(w_dec)
            grad_b_dec = xp.zeros_like(params["b_dec"])
            grad_w_enc = xp.zeros_like(params["W_enc"])
            grad_b_enc = xp.zeros_like(params["b_enc"])
        grads = {"W_enc": grad_w_enc, "b_enc": grad_b_enc, "b_dec": grad_b_dec, "W_dec": grad_w_dec}
        if aux is not None:
            aux_grads.add_to(grads)
        grad_b_dec -= grad_b_enc @ params["W_enc"]  # X̃ = X − b_dec: the encoder's part
        return loss, grads, fwd, reconstruction


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(TopKSAE)
