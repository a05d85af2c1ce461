"""BatchTopK sparse autoencoder (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse
Autoencoders", arXiv:2412.06410).

Training forward: the B·k largest entries of the whole batch's ReLU'd
pre-activations are kept, so samples share a budget of k latents on average::

    X̃ = X − b_dec ;  Z = X̃ W_encᵀ + b_enc ;  P = ReLU(Z)
    M = 1[P among the B·k largest entries of P] ;  A = P ⊙ M ;  X̂ = A W_dec + b_dec

Inference drops the batch dependence with one global threshold θ: A = Z ⊙ 1[Z > θ]
(a JumpReLU with a scalar θ). Estimator used here (documented in ``docs/methods.md``): after
each training step θ ← (1 − r)θ + r·min{A > 0} with r = ``threshold_rate`` (0.01), the
minimum positive activation kept in that batch (the authors' released code does this EMA
from θ₀ = 0; we start θ at the first batch's minimum instead of 0, so no warm-up bias).
Before any training step, encoding falls back to the batch top-k.

Loss and gradient as TopK (:mod:`sparsekit.methods.topk`) with this mask, including the AuxK
term on dead latents (the authors use it with α = 1/32, k_aux = 512); G = (X̂ − X)/B::

    ∇W_dec = Aᵀ G (+ AuxK) ;  dZ = (G W_decᵀ) ⊙ M ⊙ 1[Z > 0] (+ AuxK)
    ∇W_enc = dZᵀ X̃ ;  ∇b_enc = Σ_rows dZ ;  ∇b_dec = Σ_rows G − (Σ_rows dZ) W_enc

The batch selection is piecewise constant: exact derivatives almost everywhere. θ is not a
trained parameter: it is method state, saved in checkpoints.

On the CPU the training code stays sparse (:func:`batch_top_k`): each row's kept units, in
increasing order, padded to the longest row with zeros at units the row does not keep, so
every product runs on the kept entries (:mod:`sparsekit.backend.sparse_code`) and no B×H
array but Z exists. On a GPU the code is dense (the padded width would be read back from
the device every step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend.selection import batch_code_is_sparse, batch_top_k, batch_top_k_dense
from sparsekit.backend.sparse_code import code_times, code_transpose_times, kept_gathered_dot
from sparsekit.backend.threads import matmul
from sparsekit.errors import ParameterError
from sparsekit.methods import (
    Forward,
    Param,
    SAELensArch,
    TopK,
    _sae,
    between_one_and_hidden,
    hookimpl,
    open_unit_interval,
)


def _threshold_tensor(method: Any, params: Any) -> dict[str, Any]:
    method._sync_threshold()  # a device-trained θ, read back
    if method.threshold is None:
        raise ParameterError(
            f"{method.name} has no inference threshold before its first training step"
        )
    hidden = params["W_enc"].shape[0]
    return {"threshold": np.full(hidden, max(method.threshold, 0.0), dtype=np.float64)}


def _threshold_state(cfg: Any, tensors: Any) -> dict[str, Any]:
    return {"threshold": float(np.asarray(tensors["threshold"]).max())}


class BatchTopKSAE(_sae.SAEMethod):
    name = "batchtopk"
    description = "BatchTopK sparse autoencoder: the B*k largest activations of the batch."
    citation = "Bussmann, Leask & Nanda, 'BatchTopK Sparse Autoencoders', 2024, arXiv:2412.06410"
    params = (
        Param("k", int, 32, "mean latents kept per sample (B*k per batch)", between_one_and_hidden),
        *_sae.AUXK_PARAMS,
        Param(
            "threshold_rate",
            float,
            0.01,
            "rate of the moving average of the batch's smallest kept activation (inference θ)",
            open_unit_interval,
        ),
        _sae.B_DEC_INIT_PARAM,
        _sae.RESAMPLE_PARAM,
    )
    # At inference Z ⊙ 1[Z > θ] with one θ for every latent, on x − b_dec: SAELens saves a
    # trained BatchTopK SAE the same way, as a "jumprelu" with θ repeated per latent.
    saelens = SAELensArch(
        "jumprelu",
        export_tensors=_threshold_tensor,
        import_state=_threshold_state,
        subtracts_b_dec=True,
        reads=False,
        note="a BatchTopK model exported for inference: its learned global threshold "
        "repeated per latent, as SAELens saves BatchTopK SAEs",
    )
    terms = ("reconstruction", "auxk")
    stop_gradients = {
        "AuxK residual": "R = X − X̂ and its variance N_R are constants of the aux term",
    }

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        #: The inference threshold θ (None until the first training step).
        self.threshold: float | None = None
        self.threshold_updates = 0
        # θ and its update count while a device trains (see _device_after_step).
        self._device_theta: Any = None
        self._device_updates: Any = None
        # Under data parallelism, the global batch's smallest kept value, from the step's
        # selection to its after_step (a float, set and cleared within one step).
        self._global_smallest: float | None = None

    # -- forward ----------------------------------------------------------------------------

    def selected(self, backend: Any, z: Any, share: Any = None) -> int:
        """How many entries of ``z`` the batch top-k keeps: B·k in one process; under
        data-parallel training (``share``) the number of this rank's entries among the global
        batch's B·k largest ReLU'd pre-activations. Each rank's candidates (its own B·k
        largest) are gathered; the union, in rank order, sorted by value (a stable sort: a
        tie goes to the lower rank), gives the global selection, the same on every rank;
        the smallest positive value it keeps is θ's update (see :meth:`after_step`)."""
        if share is None:
            return min(self.k * z.shape[0], z.size)
        xp = backend.xp
        wanted = min(self.k * share.total, share.total * z.shape[1])
        flat = xp.maximum(z, 0).ravel()
        m = min(wanted, flat.size)
        local = flat if m == flat.size else xp.partition(flat, flat.size - m)[flat.size - m :]
        everyone = share.gather(backend.to_numpy(local))
        values = np.concatenate(everyone)
        owner = np.repeat(np.arange(len(everyone)), [len(v) for v in everyone])
        order = np.argsort(-values, kind="stable")[:wanted]
        kept = values[order]
        positive = kept[kept > 0]
        self._global_smallest = float(positive.min()) if positive.size else None
        return int(np.count_nonzero(owner[order] == share.comm.rank))

    def encode_batch(self, backend: Any, z: Any, training: bool, share: Any = None) -> Any:
        """The dense code from pre-activations: batch top-k (training) or Z ⊙ 1[Z > θ]."""
        xp = backend.xp
        if not training:
            self._sync_threshold()
        if not training and self.threshold is not None:
            return z * (z > max(self.threshold, 0.0))
        n = self.selected(backend, z, share) if training else min(self.k * z.shape[0], z.size)
        if not batch_code_is_sparse(xp):
            return batch_top_k_dense(xp, z, n)
        code = xp.zeros_like(z)
        indices, values = batch_top_k(xp, z, n)
        xp.put_along_axis(code, indices, values, axis=1)
        return code

    def forward(self, backend, params, x, training, share=None):
        """The forward pass; ``share`` (data parallel) makes the training selection global."""
        xp = backend.xp
        x_tilde = x - params["b_dec"]
        z = matmul(x_tilde, params["W_enc"].T, plus=params["b_enc"])  # split over threads
        if not batch_code_is_sparse(xp) or (not training and self.threshold is not None):
            # inference (a dense JumpReLU code, the output) or a GPU: the dense code
            code = self.encode_batch(backend, z, training, share)
            xhat = matmul(code, params["W_dec"], plus=params["b_dec"])
            return Forward(z, z, None, code, None, xhat, xhat)
        indices, values = batch_top_k(xp, z, self.selected(backend, z, share))
        xhat = code_times(backend, indices, values, params["W_dec"])
        xhat += params["b_dec"]
        # rows are padded with zeros to the longest row's length: the padding is not kept
        return Forward(z, z, TopK(indices, kept=values > 0), None, values, xhat, xhat)

    # -- loss and gradients -------------------------------------------------------------------

    def main_term(
        self, backend: Any, params: dict[str, Any], x: Any, fwd: Forward, want_grads: bool
    ) -> tuple[Any, Any, Any, Any]:
        """The reconstruction term: ``(loss, ∇W_dec, ∇b_dec (output part), ∂L/∂A)``, the
        last at the code's kept entries (B×m, like ``fwd.code_values``), or B×H when the
        forward pass kept a dense code."""
        xp = backend.xp
        batch, hidden = x.shape[0], params["W_dec"].shape[0]
        g = fwd.xhat - x
        loss = (0.5 / batch) * xp.vdot(g, g)
        if not want_grads:
            return loss, None, None, None
        g *= 1.0 / batch
        if fwd.code is not None:  # the dense code (a GPU): dense products
            return loss, matmul(fwd.code.T, g), g.sum(axis=0), matmul(g, params["W_dec"].T)
        indices, values = fwd.support.indices, fwd.code_values
        grad_w_dec = code_transpose_times(backend, indices, values, g, hidden)
        # dots at the kept entries (a row's positive values, then its padding) alone
        d_values = kept_gathered_dot(backend, g, params["W_dec"], indices, values)
        return loss, grad_w_dec, g.sum(axis=0), d_values

    def _objective(self, backend, params, x, state, term, anchor, want_grads):
        self._check_term(term)
        xp = backend.xp
        batch, hidden = x.shape[0], params["W_enc"].shape[0]
        fwd = self.forward(backend, params, x, True, state.share)
        diff = fwd.xhat - x
        reconstruction = (0.5 / batch) * xp.vdot(diff, diff)
        main = term in (None, self.terms[0])
        if main:
            loss, grad_w_dec, grad_b_dec, d_values = self.main_term(
                backend, params, x, fwd, want_grads
            )
        else:
            loss = 0 * reconstruction
        x_tilde = x - params["b_dec"]
        aux = None
        if term in (None, "auxk") and self.aux_coef > 0:
            aux = _sae.dead_units(backend, state.dead)
        if aux is not None:
            ref = fwd if anchor is None else self.forward(backend, anchor, x, True)
            residual = x - ref.xhat
            scale = _sae.auxk_scale(backend, x, residual, self.aux_coef, state.share)
            aux_loss, aux_grads = _sae.auxk_term(
                backend, fwd.z, aux, self.k_aux, params["W_dec"], residual, scale, x_tilde,
                want_grads,
            )  # fmt: skip
            loss = loss + aux_loss
        if not want_grads:
            return loss, {}, fwd, reconstruction
        if main and fwd.code is not None:
            d_values *= fwd.code > 0  # dZ, dense
            grad_w_enc = matmul(d_values.T, x_tilde)
            grad_b_enc = d_values.sum(axis=0)
        elif main:
            d_values *= fwd.code_values > 0  # dZ at the kept entries
            grad_w_enc, grad_b_enc, _ = _sae.encoder_grads_sparse(
                backend, [(fwd.support.indices, d_values)], x_tilde, params["W_enc"], hidden,
                False,
            )  # fmt: skip
        else:
            grad_w_dec = xp.zeros_like(params["W_dec"])
            grad_b_dec = xp.zeros_like(params["b_dec"])
            grad_w_enc = xp.zeros_like(params["W_enc"])
            grad_b_enc = xp.zeros_like(params["b_enc"])
        grads = {"W_enc": grad_w_enc, "b_enc": grad_b_enc, "b_dec": grad_b_dec, "W_dec": grad_w_dec}
        if aux is not None:
            aux_grads.add_to(grads)
        grad_b_dec -= grad_b_enc @ params["W_enc"]
        return loss, grads, fwd, reconstruction

    # -- the inference threshold ----------------------------------------------------------------

    def after_step(self, backend, params, fwd):
        if self._global_smallest is not None:  # data parallel: the global batch's minimum
            self._update_threshold(self._global_smallest)
            self._global_smallest = None
            return
        code = fwd.code_values if fwd.code is None else fwd.code
        if backend.is_gpu:
            self._device_after_step(backend.xp, code)
            return
        positive = code[code > 0]
        if positive.size == 0:
            return
        self._update_threshold(float(positive.min()))

    def _update_threshold(self, smallest: float) -> None:
        """θ ← (1 − r)θ + r·``smallest`` (θ ← ``smallest`` at the first update)."""
        self._sync_threshold()
        if self.threshold is None:
            self.threshold = smallest
        else:
            rate = self.threshold_rate
            self.threshold = (1 - rate) * self.threshold + rate * smallest
        self.threshold_updates += 1

    def _device_after_step(self, xp: Any, code: Any) -> None:
        """The same update kept on the device (reading the minimum back would wait for the
        step): θ and the update count are 0-d float64 device arrays, θ NaN until the first
        step with a positive entry; :attr:`threshold` reads them when asked."""
        smallest = xp.where(code > 0, code, xp.inf).min().astype(xp.float64)
        seen = smallest < xp.inf
        if self._device_theta is None:
            theta = xp.asarray(np.nan if self.threshold is None else self.threshold, xp.float64)
            self._device_theta = theta
            self._device_updates = xp.asarray(float(self.threshold_updates), xp.float64)
        theta = self._device_theta
        rate = self.threshold_rate
        moved = xp.where(xp.isnan(theta), smallest, (1 - rate) * theta + rate * smallest)
        self._device_theta = xp.where(seen, moved, theta)
        self._device_updates = self._device_updates + seen

    def _sync_threshold(self) -> None:
        """Bring a device-held θ back to :attr:`threshold` (outside a step)."""
        if self._device_theta is not None:
            value = float(self._device_theta)
            self.threshold = None if value != value else value
            self.threshold_updates = int(float(self._device_updates))
            self._device_theta = self._device_updates = None

    def state_dict(self) -> dict[str, Any]:
        self._sync_threshold()
        return {"threshold": self.threshold, "threshold_updates": self.threshold_updates}

    def load_state_dict(self, state) -> None:
        threshold = state.get("threshold")
        self.threshold = None if threshold is None else float(threshold)
        self.threshold_updates = int(state.get("threshold_updates", 0))
        self._device_theta = self._device_updates = None


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(BatchTopKSAE)
