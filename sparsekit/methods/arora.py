"""(d) Neural sparse coding of Arora, Ge, Ma & Moitra (COLT 2015).

"Simple, Efficient, and Neural Algorithms for Sparse Coding", arXiv:1503.00778. Not an
autoencoder gradient but an alternating update of a dictionary whose atoms are the rows of
W (H×D, unit norm; the paper's A is Wᵀ). For a minibatch Y (B×D)::

    S = Y Wᵀ                         correlations                 B×H
    X = S ∘ 1[|S| ≥ τ]               hard-threshold decoding, τ = C/2
    R = X W − Y                      residual                     B×D
    ĝ = (1/B) sgn(X)ᵀ R              H×D
    W ← W − η ĝ ;  renormalise every row to unit norm

As a model, this is the generic step with f = g = identity, mask 1[|Z| ≥ τ], tied weights
and zero biases, so its reconstruction loss (1/2B)‖X W − Y‖² is what the trainer reports and
what the gradient check differentiates; :meth:`Arora.update` replaces the optimizer. On data
from an incoherent dictionary with k-sparse ±1 codes (C = 1) it recovers the dictionary
(``tests/test_methods.py``). η = Θ(H/k) in the analysis.

Defaults are for MNIST-like data (pixels in [0, 1], ‖y‖ ≈ 9): random unit atoms, τ = 1 and
η = 0.1 (data-sampled atoms correlate with every digit and switch every unit on). For
synthetic data with ±1 codes use τ = 0.5 (C = 1) and η ≈ H/k.
"""

from __future__ import annotations

import numpy as np

from sparsekit import _jit
from sparsekit.autoencoder import Forward, forward, pre_activation
from sparsekit.hookspecs import hookimpl
from sparsekit.kernels import PARALLEL_MIN_SIZE, split_run
from sparsekit.methods.base import Method, Param, non_negative

INITS = ("data", "random")


def _init_choice(value: str, _size) -> str | None:
    return None if value in INITS else f"must be one of {', '.join(INITS)}, got {value!r}"


class Arora(Method):
    name = "arora"
    description = (
        "Neurally plausible sparse coding: threshold decoding, Hebbian-like update (Arora et al.)."
    )
    citation = "Arora, Ge, Ma & Moitra, 'Simple, Efficient, and Neural Algorithms for Sparse Coding', COLT 2015"
    params = (
        Param(
            "tau",
            float,
            1.0,
            "decoding threshold τ = C/2 on |correlation| (0.5 for ±1 codes)",
            non_negative,
        ),
        Param(
            "init",
            str,
            "random",
            "initial atoms: 'random' or 'data' (normalised samples)",
            _init_choice,
        ),
        Param("renormalize", bool, True, "renormalise atoms to unit norm after every step"),
    )
    tied = True
    allows_untied = False
    own_update = True
    training_defaults = {"lr": 0.1, "hidden": 196, "batch_size": 128, "epochs": 10}

    def init_params(self, rng, dim, hidden, tied, sample):
        if self.init == "data" and sample is not None and len(sample) > 0:
            rows = rng.choice(len(sample), size=hidden, replace=len(sample) < hidden)
            atoms = np.asarray(sample[rows], dtype=np.float64) + 1e-3 * rng.standard_normal(
                (hidden, dim)
            )
        else:
            atoms = rng.standard_normal((hidden, dim))
        atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
        return {"W_enc": atoms, "b_enc": np.zeros(hidden), "b_dec": np.zeros(dim)}

    def activation(self, xp, z):
        return z

    def activation_grad(self, xp, z, a):
        return None

    def mask(self, xp, z, a, training):
        support = xp.abs(z)
        xp.greater_equal(support, self.tau, out=support)  # 0/1 in z's dtype, one temporary
        return support

    def output(self, xp, y):
        return y

    def output_grad(self, xp, y, xhat):
        return None

    def direction(self, backend, params, y):
        """ĝ = (1/B) sgn(X)ᵀ R, the forward pass it came from and the residual R."""
        return self._scaled_direction(backend, params, y, 1.0)

    def _scaled_direction(self, backend, params, y, scale):
        """scale·ĝ, scaling the B×D residual rather than the H×D product (fewer passes)."""
        fwd, sgn = self._forward_and_signs(backend, params, y)
        residual = fwd.xhat - y
        return sgn.T @ (residual * (scale / y.shape[0])), fwd, residual

    def _forward_and_signs(self, backend, params, y):
        """The forward pass and sgn(X); the decoding in one fused loop when it can be."""
        xp = backend.xp
        if not all(
            getattr(type(self), name) is getattr(Arora, name)
            for name in ("activation", "mask", "output")
        ):  # a subclass decodes differently: the generic pass
            fwd = forward(self, backend, params, y)
            return fwd, xp.sign(fwd.code)
        z = pre_activation(xp, params, y)
        code, sgn, support = xp.empty_like(z), xp.empty_like(z), xp.empty_like(z)
        if not _jit.run("threshold_code", (z, code, sgn, support), (self.tau, 1.0, 0.0)):
            support = self.mask(xp, z, z, True)
            code = z * support
            sgn = xp.sign(code)
        out = code @ params["W_enc"]
        out += params["b_dec"]
        return Forward(z, z, support, code, None, out, out), sgn

    def update(self, backend, params, x, lr):
        xp = backend.xp
        if type(self).direction is Arora.direction:
            step, fwd, residual = self._scaled_direction(backend, params, x, lr)
        else:  # a subclass with its own direction
            step, fwd, residual = self.direction(backend, params, x)
            step *= lr
        loss = 0.5 * xp.vdot(residual, residual) / x.shape[0]
        w = params["W_enc"]
        renormalize = self.renormalize
        if _jit.run_rows("atom_update", (w, step), (renormalize, 1e-12)):
            return {"loss": loss, "reconstruction": loss, "forward": fwd}

        def apply(lo, hi):  # on blocks of atoms, in parallel on the CPU
            block = w[lo:hi]
            block -= step[lo:hi]
            if renormalize:
                norms = xp.sqrt(xp.einsum("hd,hd->h", block, block))
                inverse = 1.0 / xp.maximum(norms, 1e-12)
                block *= inverse[:, None]  # a multiply is cheaper than a divide over H×D

        if isinstance(w, np.ndarray):
            split_run(apply, w.shape[0], min_size=max(2, PARALLEL_MIN_SIZE // max(1, w.shape[1])))
        else:
            apply(0, w.shape[0])
        return {"loss": loss, "reconstruction": loss, "forward": fwd}


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(Arora)
