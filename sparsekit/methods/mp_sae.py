"""Matching-pursuit sparse autoencoder (Costa, Fel, Lubana, Tolooshams & Ba, "From Flat to
Hierarchical: Extracting Sparse Representations with Matching Pursuit", 2025,
arXiv:2506.03093; SAELens ``matching_pursuit``, overcomplete's ``MpSAE``).

No learned encoder: the code is k steps of matching pursuit
(:func:`sparsekit.coders.matching_pursuit`) against the current dictionary D = W_enc (H×D,
unit-norm rows, the decoder too: tied weights, as in SAELens and overcomplete)::

    r₀ = x − b_dec
    j_t = argmax_j ReLU(⟨r_{t−1}, d_j⟩) ;  c_t = ReLU(⟨r_{t−1}, d_{j_t}⟩) ;  r_t = r_{t−1} − c_t d_{j_t}
    z = Σ_t c_t e_{j_t} ;  x̂ = z D + b_dec = x − r_k

(SAELens' rule: the argmax is over ReLU(⟨r, d⟩), not |⟨r, d⟩|, and an atom may be chosen
again, its coefficients adding up.) Loss: L = (1/2B)‖X̂ − X‖² = (1/2B) Σ_rows ‖r_k‖².

What is differentiated, and what is constant: the selections j_t are piecewise constant
in the parameters, so they are constants (exact almost everywhere, as a top-k mask is);
the coefficients c_t and the residuals r_t are *differentiated through*, as SAELens trains
it (its pursuit runs under autograd, the argmax alone under ``no_grad``) and overcomplete
(no detach at all). b_enc exists only for the file layout every method shares; nothing reads
it and its gradient is 0. Reverse-mode through the k steps, per row, from ḡ_k = r_k/B
(a_t = 1[c_t > 0], d_t = d_{j_t}, s_t = ⟨ḡ_t, d_t⟩)::

    ∇d_{j_t} += −c_t ḡ_t − a_t s_t r_{t−1}        (summed over rows and steps)
    ḡ_{t−1}   = ḡ_t − a_t s_t d_t
    ∇b_dec    = −Σ_rows ḡ_0

r_{t−1} is recomputed backwards as r_t + c_t d_t (no k × B × D store). The trainer keeps the
atoms at unit norm (it removes each row's gradient component along the row, steps,
renormalises), which matching pursuit needs for each step to be a projection.
``sparsekit gradcheck mp-sae`` compares this gradient with central differences of the loss
with the selections taken at the unperturbed point (:meth:`anchored_loss`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend.sparse_code import code_transpose_times
from sparsekit.coders import matching_pursuit
from sparsekit.errors import DataError
from sparsekit.methods import (
    Forward,
    Param,
    SAELensArch,
    Upkeep,
    _sae,
    hookimpl,
)


def _params_from_cfg(cfg: Any) -> dict[str, Any]:
    """k from a SAELens ``matching_pursuit`` cfg, when it runs exactly k steps."""
    steps = cfg.get("max_iterations")
    threshold = cfg.get("residual_threshold", 1e-2)
    if (
        not isinstance(steps, int)
        or isinstance(steps, bool)
        or cfg.get("stop_on_duplicate_support", True)
        or threshold != 0
    ):
        raise DataError(
            "a SAELens matching_pursuit SAE runs exactly k steps only with max_iterations=k, "
            "residual_threshold=0 and stop_on_duplicate_support=false; mp-sae reads only those "
            f"(got max_iterations={steps!r}, residual_threshold={threshold!r}, "
            f"stop_on_duplicate_support={cfg.get('stop_on_duplicate_support', True)!r})"
        )
    return {"k": steps}


class MatchingPursuitSAE(_sae.SAEMethod):
    name = "mp-sae"
    description = "Matching-pursuit SAE: k greedy pursuit steps over the decoder, no encoder."
    citation = (
        "Costa, Fel, Lubana, Tolooshams & Ba, 'From Flat to Hierarchical: Extracting Sparse "
        "Representations with Matching Pursuit', 2025, arXiv:2506.03093"
    )
    params = (
        Param(
            "k",
            int,
            16,
            "matching-pursuit steps per sample (an atom may be chosen again, so k may exceed "
            "the hidden size)",
            _sae.at_least_one,
        ),
        _sae.B_DEC_INIT_PARAM,
    )
    training_defaults = {**_sae.SAEMethod.training_defaults, "lr": 1e-3}
    tied = True
    allows_tied = True
    allows_untied = False
    # SAELens' MatchingPursuitSAE with max_iterations=k, residual_threshold=0 and
    # stop_on_duplicate_support=false runs exactly these k steps; its files hold W_dec and
    # b_dec only (its W_enc is W_dec's transpose).
    saelens = SAELensArch(
        "matching_pursuit",
        cfg=lambda m: {
            "max_iterations": m.k,
            "residual_threshold": 0.0,
            "stop_on_duplicate_support": False,
        },
        params=_params_from_cfg,
        subtracts_b_dec=True,
        decoder_only=True,
    )
    terms = ("reconstruction",)
    stop_gradients = {
        "selections": "the atom j_t each pursuit step picks (piecewise constant: exact almost "
        "everywhere); the coefficients and residuals are differentiated through",
    }

    def init_params(self, rng, dim, hidden, tied, sample):
        params = _sae.unit_rows_init(rng, dim, hidden)
        del params["W_dec"]
        return params

    def upkeep(self) -> Upkeep:
        base = super().upkeep()
        return Upkeep(unit_norm_decoder=True, b_dec_init=base.b_dec_init)

    def _pursuit(self, backend: Any, params: dict[str, Any], x: Any, indices: Any = None) -> Any:
        return matching_pursuit(
            x - params["b_dec"], params["W_enc"], self.k, indices=indices, xp=backend.xp
        )

    def _forward_of(self, backend: Any, params: dict[str, Any], x: Any, pursuit: Any) -> Forward:
        code = pursuit.code(params["W_enc"].shape[0], backend.xp)
        xhat = x - pursuit.residual  # = z D + b_dec
        return Forward(code, code, None, code, None, xhat, xhat)

    def forward(self, backend, params, x, training):
        return self._forward_of(backend, params, x, self._pursuit(backend, params, x))

    def _objective(self, backend, params, x, state, term, anchor, want_grads):
        self._check_term(term)
        xp = backend.xp
        batch = x.shape[0]
        indices = None
        if anchor is not None:
            indices = self._pursuit(backend, anchor, x).indices
        pursuit = self._pursuit(backend, params, x, indices)
        fwd = self._forward_of(backend, params, x, pursuit)
        r = pursuit.residual
        reconstruction = (0.5 / batch) * xp.vdot(r, r)
        if not want_grads:
            return reconstruction, {}, fwd, reconstruction
        w = params["W_enc"]
        hidden = w.shape[0]
        grad_w = xp.zeros_like(w)
        g = r * x.dtype.type(1.0 / batch)  # ḡ_k
        r = r.copy()
        for t in range(self.k - 1, -1, -1):
            j = pursuit.indices[:, t]
            c = pursuit.coefficients[:, t]
            atoms = w[j]
            r += c[:, None] * atoms  # r_{t−1}
            s = xp.einsum("bd,bd->b", g, atoms)
            s *= c > 0  # a_t s_t
            grad_w += code_transpose_times(
                backend, j[:, None], [-c[:, None], -s[:, None]], [g, r], hidden
            )
            g -= s[:, None] * atoms  # ḡ_{t−1}
        grads = {
            "W_enc": grad_w,
            "b_enc": xp.zeros_like(params["b_enc"]),
            "b_dec": -g.sum(axis=0),
        }
        return reconstruction, grads, fwd, reconstruction

    def check_problem(self, rng, params, x):
        """Unit-norm atoms, as training keeps them (a pursuit step is then a projection)."""
        w = params["W_enc"]
        params["W_enc"] = w / np.linalg.norm(w, axis=1, keepdims=True)
        return params


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(MatchingPursuitSAE)
