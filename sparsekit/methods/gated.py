"""Gated sparse autoencoder (Rajamanoharan, Conmy, Smith, Lieberum, Varma, Kramár, Shah &
Nanda 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders", arXiv:2404.16014).

Forward, gate and magnitude paths sharing the encoder through r_mag::

    X̃ = X − b_dec ;  U = X̃ W_encᵀ
    π_gate = U + b_enc                  (b_enc is the paper's b_gate)
    π_mag  = U ⊙ exp(r_mag) + b_mag     (W_mag = W_gate with row j scaled by exp(r_mag[j]))
    A = H(π_gate) ⊙ ReLU(π_mag) ;  X̂ = A W_dec + b_dec

Loss, the decoder rows kept at unit norm by the trainer::

    L = (1/2B)‖X̂ − X‖² + (λ/B) Σ ReLU(π_gate) + (1/2B)‖ReLU(π_gate) sg(W_dec) + sg(b_dec) − X‖²

the last term (L_aux) through a frozen copy of the decoder: W_dec and b_dec are constants
there (they still reach the gate through X̃, as in the reference implementations).

Gradient (G = (X̂ − X)/B, G_x = (ReLU(π_gate) W_dec + b_dec − X)/B)::

    ∇W_dec = Aᵀ G ;  ∇b_dec = Σ_rows G − (Σ_rows dU) W_enc
    dπ_mag  = (G W_decᵀ) ⊙ H(π_gate) ⊙ 1[π_mag > 0]            (H(π_gate) passes nothing)
    dπ_gate = ((λ/B) + G_x W_decᵀ) ⊙ 1[π_gate > 0]
    ∇b_mag = Σ_rows dπ_mag ;  ∇r_mag = exp(r_mag) ⊙ Σ_rows(dπ_mag ⊙ U) ;  ∇b_enc = Σ_rows dπ_gate
    dU = dπ_gate + dπ_mag ⊙ exp(r_mag) ;  ∇W_enc = dUᵀ X̃

Exact derivatives almost everywhere (the gate's step has derivative 0 where it exists: no
straight-through estimator); the frozen decoder copy is a declared stop-gradient.
"""

from __future__ import annotations

import numpy as np

from sparsekit.backend.threads import matmul
from sparsekit.methods import Forward, Param, _sae, hookimpl, non_negative


class GatedSAE(_sae.SAEMethod):
    name = "gated"
    description = "Gated autoencoder: a gate path picks units, a magnitude path sizes them."
    citation = (
        "Rajamanoharan, Conmy, Smith, Lieberum, Varma, Kramár, Shah & Nanda, 'Improving "
        "Dictionary Learning with Gated Sparse Autoencoders', 2024, arXiv:2404.16014"
    )
    params = (
        Param("l1_coef", float, 0.05, "L1 coefficient lambda on ReLU(pi_gate)", non_negative),
        _sae.B_DEC_INIT_PARAM,
        _sae.DEAD_AFTER_PARAM,
        _sae.RESAMPLE_PARAM,
    )
    extra_params = {"r_mag": ("hidden",), "b_mag": ("hidden",)}
    unit_params = ("r_mag", "b_mag")
    terms = ("reconstruction", "sparsity", "aux")
    stop_gradients = {"frozen decoder": "W_dec and b_dec are constants in the aux term"}

    def init_params(self, rng, dim, hidden, tied, sample):
        params = _sae.unit_rows_init(rng, dim, hidden)
        params["r_mag"] = np.zeros(hidden)
        params["b_mag"] = np.zeros(hidden)
        return params

    def check_problem(self, rng, params, x):
        params["r_mag"] = 0.3 * rng.standard_normal(params["r_mag"].shape)
        params["b_mag"] = 0.1 * rng.standard_normal(params["b_mag"].shape)
        return params

    def _paths(self, backend, params, x):
        xp = backend.xp
        x_tilde = x - params["b_dec"]
        u = matmul(x_tilde, params["W_enc"].T)
        scale = xp.exp(params["r_mag"])
        gate = u + params["b_enc"]
        mag = u * scale
        mag += params["b_mag"]
        return x_tilde, u, scale, gate, mag

    def forward(self, backend, params, x, training):
        xp = backend.xp
        _, _, _, gate, mag = self._paths(backend, params, x)
        code = xp.maximum(mag, 0) * (gate > 0)
        xhat = matmul(code, params["W_dec"], plus=params["b_dec"])
        return Forward(gate, code, None, code, None, xhat, xhat)

    def loss_and_grads(self, backend, params, x, state, term=None):
        self._check_term(term)
        xp = backend.xp
        batch = x.shape[0]
        w_dec = params["W_dec"]
        x_tilde, u, scale, gate, mag = self._paths(backend, params, x)
        gate_on = gate > 0
        code = xp.maximum(mag, 0) * gate_on
        xhat = matmul(code, w_dec, plus=params["b_dec"])
        fwd = Forward(gate, code, None, code, None, xhat, xhat)
        g = xhat - x
        reconstruction = (0.5 / batch) * xp.vdot(g, g)
        loss = 0 * reconstruction
        d_gate = xp.zeros_like(gate)
        if term in (None, "reconstruction"):
            loss = loss + reconstruction
            g *= 1.0 / batch
            grad_w_dec = matmul(code.T, g)
            grad_b_dec = g.sum(axis=0)
            d_mag = (matmul(g, w_dec.T)) * (gate_on & (mag > 0))
        else:
            grad_w_dec = xp.zeros_like(w_dec)
            grad_b_dec = xp.zeros_like(params["b_dec"])
            d_mag = xp.zeros_like(mag)
        relu_gate = xp.maximum(gate, 0)
        if term in (None, "sparsity"):
            loss = loss + (self.l1_coef / batch) * relu_gate.sum()
            d_gate += (self.l1_coef / batch) * gate_on
        if term in (None, "aux"):
            g_x = matmul(relu_gate, w_dec)
            g_x += params["b_dec"]
            g_x -= x
            loss = loss + (0.5 / batch) * xp.vdot(g_x, g_x)
            g_x *= 1.0 / batch
            d_gate += (matmul(g_x, w_dec.T)) * gate_on
        d_u = d_mag * scale
        d_u += d_gate
        grad_b_enc = d_gate.sum(axis=0)
        grads = {
            "W_enc": matmul(d_u.T, x_tilde),
            "b_enc": grad_b_enc,
            "r_mag": scale * (d_mag * u).sum(axis=0),
            "b_mag": d_mag.sum(axis=0),
            "b_dec": grad_b_dec - d_u.sum(axis=0) @ params["W_enc"],
            "W_dec": grad_w_dec,
        }
        return loss, grads, fwd, reconstruction

    def anchored_loss(self, backend, params, x, state, anchor, term=None):
        self._check_term(term)
        xp = backend.xp
        batch = x.shape[0]
        _, _, _, gate, mag = self._paths(backend, params, x)
        loss = 0.0
        if term in (None, "reconstruction"):
            code = xp.maximum(mag, 0) * (gate > 0)
            e = code @ params["W_dec"] + params["b_dec"] - x
            loss += 0.5 / batch * float(xp.vdot(e, e))
        relu_gate = xp.maximum(gate, 0)
        if term in (None, "sparsity"):
            loss += self.l1_coef / batch * float(relu_gate.sum())
        if term in (None, "aux"):  # the frozen copy: the decoder as it was at the anchor
            e = relu_gate @ anchor["W_dec"] + anchor["b_dec"] - x
            loss += 0.5 / batch * float(xp.vdot(e, e))
        return loss


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(GatedSAE)
