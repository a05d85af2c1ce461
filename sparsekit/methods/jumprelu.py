"""JumpReLU sparse autoencoder (Rajamanoharan, Lieberum, Sonnerat, Conmy, Varma, Kramár &
Nanda 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse
Autoencoders", arXiv:2407.14435).

Forward, with learned per-unit thresholds θ = exp(t) (t = ``log_threshold``)::

    X̃ = X − b_dec if pre_bias else X ;  Z = X̃ W_encᵀ + b_enc
    F = JumpReLU_θ(Z) = Z ⊙ H(Z − θ) ;  X̂ = F W_dec + b_dec

Loss: L = (1/2B)‖X̂ − X‖² + (λ/B) Σ_ij H(Z_ij − θ_j) (the batch-mean L0).

Pseudo-derivatives (eq. 11-12), rectangle kernel K(u) = 1[|u| < ½], bandwidth ε::

    ð/ðθ JumpReLU_θ(z) = −(θ/ε) K((z − θ)/ε)      ∂/∂z JumpReLU_θ(z) = H(z − θ)  (true)
    ð/ðθ H(z − θ)      = −(1/ε) K((z − θ)/ε)      ∂/∂z H(z − θ)      = 0         (true a.e.)

Gradient (G = (X̂ − X)/B, Hm = H(Z − θ), Kw = K((Z − θ)/ε), dF = G W_decᵀ)::

    ∇W_dec = Fᵀ G ;  dZ = dF ⊙ Hm ;  ∇W_enc = dZᵀ X̃ ;  ∇b_enc = Σ_rows dZ
    ∇b_dec = Σ_rows G (− (Σ_rows dZ) W_enc with pre_bias)
    ∇θ = −(θ/ε) Σ_rows(dF ⊙ Kw) − (λ/(Bε)) Σ_rows Kw      (surrogate)
    ∇t = θ ⊙ ∇θ                                            (chain rule, exact)

What the surrogate differentiates (checked by ``sparsekit gradcheck``): −(1/ε)K is the exact
θ-derivative of the ramp H_ε(u) = clip(u/ε + ½, 0, 1) that replaces the step; −(θ/ε)K is the
exact θ-derivative, at fixed z, of J_ε(θ; z) = z for θ ≤ z − ε/2, z − (θ² − (z − ε/2)²)/(2ε)
inside the window, 0 above (continuous: it reaches 0 at θ = z + ε/2). The straight-through
estimator uses the true step in the forward pass and these smoothed functions in the backward
pass; :meth:`anchored_loss` is exactly that function of the parameters.

``sparsity="tanh"`` is the variant of Anthropic's Circuits Updates (January 2025): no L0 term;
instead L_s = (λ_S/B) Σ_ij tanh(c·F_ij·n_j) + (λ_P/B) Σ_ij ReLU(θ_j − Z_ij)·n_j with
n_j = ‖W_dec[j]‖ (decoder rows free, not normalised). Extra gradients::

    dF    += (λ_S c/B) n ⊙ (1 − tanh²(c F n))        (reaches θ through the same surrogate)
    dZ    −= (λ_P/B) n ⊙ 1[Z < θ] ;  ∇θ += (λ_P/B) n ⊙ Σ_rows 1[Z < θ]     (true)
    ∇W_dec[j] += [(λ_S c/B) Σ_i F_ij (1 − tanh²) + (λ_P/B) Σ_i ReLU(θ_j − Z_ij)] W_dec[j]/n_j

The jump keeps the GDM pseudo-derivative above in both variants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend.threads import matmul
from sparsekit.methods import (
    Forward,
    Param,
    SAELensArch,
    Upkeep,
    _sae,
    hookimpl,
    non_negative,
    positive,
)


def _log_thresholds(cfg: Any, tensors: Any) -> dict[str, Any]:
    # SAELens' ReLU(z)·1[z > θ] with θ <= 0 is ReLU(z): the smallest positive θ does that.
    threshold = np.asarray(tensors["threshold"], dtype=np.float64)
    return {"log_threshold": np.log(np.maximum(threshold, np.finfo(np.float64).tiny))}


def _sparsity(value: str, _size: Any) -> str | None:
    return None if value in ("l0", "tanh") else f"must be l0 or tanh, got {value!r}"


class JumpReLUSAE(_sae.SAEMethod):
    name = "jumprelu"
    description = "JumpReLU autoencoder: learned thresholds, straight-through L0 (Rajamanoharan)."
    citation = (
        "Rajamanoharan, Lieberum, Sonnerat, Conmy, Varma, Kramár & Nanda, 'Jumping Ahead: "
        "Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders', 2024, "
        "arXiv:2407.14435"
    )
    params = (
        Param("l0_coef", float, 1e-3, "L0 penalty coefficient lambda", non_negative),
        Param(
            "bandwidth", float, 1e-3, "kernel bandwidth epsilon of the pseudo-derivatives", positive
        ),
        Param("threshold_init", float, 1e-3, "initial threshold of every unit", positive),
        Param("sparsity", str, "l0", "l0 (the paper) or tanh (Anthropic's variant)", _sparsity),
        Param("tanh_coef", float, 1e-3, "tanh variant: lambda_S", non_negative),
        Param("tanh_scale", float, 4.0, "tanh variant: c in tanh(c*f*|d|)", positive),
        Param(
            "preact_coef", float, 3e-6, "tanh variant: pre-activation loss lambda_P", non_negative
        ),
        Param("pre_bias", bool, False, "subtract b_dec from the input before encoding"),
        _sae.B_DEC_INIT_PARAM,
        _sae.DEAD_AFTER_PARAM,
        _sae.RESAMPLE_PARAM,
    )
    extra_params = {"log_threshold": ("hidden",)}
    unit_params = ("log_threshold",)
    surrogates = {
        "log_threshold": "ε-rectangle-kernel pseudo-derivative of the jump (eq. 11-12): "
        "derivative of the step smoothed to a clipped ramp, of JumpReLU to J_ε",
    }

    #: "sparsity" is the L0 term, or the tanh and pre-activation terms with sparsity="tanh".
    # Z ⊙ 1[Z > θ] with θ = exp(t) > 0 is SAELens' ReLU(Z) ⊙ 1[Z > θ], exactly; b_dec is
    # subtracted from the input when pre_bias (SAELens' apply_b_dec_to_input).
    saelens = SAELensArch(
        "jumprelu",
        export_tensors=lambda m, p: {"threshold": np.exp(p["log_threshold"])},
        import_tensors=_log_thresholds,
        subtracts_b_dec=lambda m: m.pre_bias,
    )
    terms = ("reconstruction", "sparsity")

    def init_params(self, rng, dim, hidden, tied, sample):
        params = _sae.unit_rows_init(rng, dim, hidden)
        params["log_threshold"] = np.full(hidden, np.log(self.threshold_init))
        return params

    def upkeep(self) -> Upkeep:
        base = super().upkeep()
        return Upkeep(
            unit_norm_decoder=self.sparsity == "l0",
            b_dec_init=base.b_dec_init,
            dead_after=self.dead_after,
            resample_every=self.resample_every,
        )

    def _pre(self, backend: Any, params: dict[str, Any], x: Any) -> tuple[Any, Any]:
        x_tilde = x - params["b_dec"] if self.pre_bias else x
        z = matmul(x_tilde, params["W_enc"].T, plus=params["b_enc"])
        return x_tilde, z

    def forward(self, backend, params, x, training):
        xp = backend.xp
        _, z = self._pre(backend, params, x)
        theta = xp.exp(params["log_threshold"])
        code = z * (z > theta)
        xhat = matmul(code, params["W_dec"], plus=params["b_dec"])
        return Forward(z, z, None, code, None, xhat, xhat)

    def check_problem(self, rng, params, x):
        """Put pre-activations across the whole band (−ε, ε) on both sides of every threshold.

        Each unit gets one row in each quarter of the band, (−ε, −ε/2), (−ε/2, 0), (0, ε/2)
        and (ε/2, ε), at a seeded random place in the middle of that quarter (never within
        0.1·ε/2 of a kink, far more than a finite-difference step moves Z), and the other rows
        at seeded random offsets in (−1.5ε, 1.5ε). Rows between ε/2 and ε, and beyond ε, are
        where a window of the wrong width differs from the declared one; before, every unit
        sat 0.1ε–0.4ε from its threshold and such a window passed. W_enc is solved so that
        Z hits these targets exactly (min-norm, the batch's rows being independent).
        """
        x_tilde, _ = self._pre(None, params, x)
        rows, hidden = x.shape[0], params["b_enc"].shape[0]
        theta = rng.uniform(0.3, 0.6, size=hidden)
        quarters = np.array([-1.0, -0.5, 0.0, 0.5])  # left ends of the quarters, in ε
        offsets = rng.uniform(-1.5, 1.5, size=(rows, hidden))
        kink = np.abs(offsets - np.round(2 * offsets) / 2) < 0.05  # near −ε/2, 0 or ε/2
        offsets[kink] += 0.1
        placed = min(rows, quarters.size)
        inner = quarters[:placed, None] + rng.uniform(0.1, 0.9, size=(placed, hidden)) * 0.5
        offsets[:placed] = inner
        offsets = rng.permuted(offsets, axis=0)  # which row sits where: random per unit
        target = theta + self.bandwidth * offsets
        w_t, *_ = np.linalg.lstsq(x_tilde, target - params["b_enc"], rcond=None)
        params["W_enc"] = np.ascontiguousarray(w_t.T)
        params["log_threshold"] = np.log(theta)
        return params

    def loss_and_grads(self, backend, params, x, state, term=None):
        self._check_term(term)
        xp = backend.xp
        batch = x.shape[0]
        w_dec = params["W_dec"]
        x_tilde, z = self._pre(backend, params, x)
        theta = xp.exp(params["log_threshold"])
        on = z > theta
        code = z * on
        xhat = matmul(code, w_dec, plus=params["b_dec"])
        fwd = Forward(z, z, None, code, None, xhat, xhat)
        g = xhat - x
        reconstruction = (0.5 / batch) * xp.vdot(g, g)
        eps = self.bandwidth
        window = xp.abs(z - theta) < 0.5 * eps  # K((Z − θ)/ε)
        use_rec = term in (None, "reconstruction")
        loss = reconstruction if use_rec else 0 * reconstruction
        g *= 1.0 / batch if use_rec else 0.0
        grad_w_dec = matmul(code.T, g)
        grad_b_dec = g.sum(axis=0)
        d_code = matmul(g, w_dec.T)
        grad_theta = xp.zeros_like(theta)
        d_z_extra = None
        if self.sparsity == "l0" and term in (None, "sparsity"):
            loss = loss + (self.l0_coef / batch) * on.sum(dtype=z.dtype)
            grad_theta -= (self.l0_coef / (batch * eps)) * window.sum(axis=0, dtype=z.dtype)
        if self.sparsity == "tanh" and term in (None, "sparsity"):
            norms = xp.sqrt((w_dec * w_dec).sum(axis=1))
            c = self.tanh_scale
            t = xp.tanh(c * code * norms)
            below = xp.maximum(theta - z, 0)
            loss = loss + (self.tanh_coef / batch) * t.sum()
            loss = loss + (self.preact_coef / batch) * (below @ norms).sum()
            sech2 = 1 - t * t
            d_code += (self.tanh_coef * c / batch) * norms * sech2
            d_norm = (self.tanh_coef * c / batch) * (code * sech2).sum(axis=0)
            d_norm += (self.preact_coef / batch) * below.sum(axis=0)
            grad_w_dec += (d_norm / norms)[:, None] * w_dec
            under = z < theta
            d_z_extra = -(self.preact_coef / batch) * norms * under
            grad_theta += (self.preact_coef / batch) * norms * under.sum(axis=0, dtype=z.dtype)
        # The jump's pseudo-derivative, for whatever reaches F (reconstruction, tanh).
        grad_theta -= (theta / eps) * (d_code * window).sum(axis=0)
        d_z = d_code * on
        if d_z_extra is not None:
            d_z += d_z_extra
        grad_b_enc = d_z.sum(axis=0)
        grads = {
            "W_enc": matmul(d_z.T, x_tilde),
            "b_enc": grad_b_enc,
            "b_dec": grad_b_dec - grad_b_enc @ params["W_enc"] if self.pre_bias else grad_b_dec,
            "W_dec": grad_w_dec,
            "log_threshold": theta * grad_theta,
        }
        return loss, grads, fwd, reconstruction

    def anchored_loss(self, backend, params, x, state, anchor, term=None):
        self._check_term(term)
        xp = backend.xp
        batch, eps = x.shape[0], self.bandwidth
        w_dec = params["W_dec"]
        _, z = self._pre(backend, params, x)
        theta = xp.exp(params["log_threshold"])
        theta0 = xp.exp(anchor["log_threshold"])
        on0 = z > theta0
        code = z * on0 + _smooth_jump(xp, z, theta, eps) - _smooth_jump(xp, z, theta0, eps)
        xhat = code @ w_dec + params["b_dec"]
        loss = 0.0
        if term in (None, "reconstruction"):
            loss += 0.5 / batch * float(xp.vdot(xhat - x, xhat - x))
        if self.sparsity == "l0" and term in (None, "sparsity"):
            steps = on0 + _ramp(xp, z - theta, eps) - _ramp(xp, z - theta0, eps)
            loss += self.l0_coef / batch * float(steps.sum())
        if self.sparsity == "tanh" and term in (None, "sparsity"):
            norms = xp.sqrt((w_dec * w_dec).sum(axis=1))
            loss += self.tanh_coef / batch * float(xp.tanh(self.tanh_scale * code * norms).sum())
            below = xp.maximum(theta - z, 0)
            loss += self.preact_coef / batch * float((below @ norms).sum())
        return loss


def _ramp(xp: Any, u: Any, eps: float) -> Any:
    """H_ε(u) = clip(u/ε + ½, 0, 1): the step smoothed by the ε-rectangle kernel."""
    return xp.clip(u / eps + 0.5, 0.0, 1.0)


def _smooth_jump(xp: Any, z: Any, theta: Any, eps: float) -> Any:
    """J_ε(θ; z): z below the window, z − (θ² − (z − ε/2)²)/(2ε) inside, 0 above.

    Its θ-derivative at fixed z is −(θ/ε)K((z − θ)/ε), the JumpReLU pseudo-derivative.
    """
    lower = z - 0.5 * eps
    inside = z - (theta * theta - lower * lower) / (2 * eps)
    return xp.where(theta <= lower, z, xp.where(theta >= z + 0.5 * eps, 0.0, inside))


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(JumpReLUSAE)
