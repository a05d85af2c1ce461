"""Pieces the sparse-autoencoder methods share: initialisation, the AuxK loss, checks.

Notation as in ``docs/methods.md`` ("Sparse autoencoders"): X̃ = X − b_dec (pre-encoder bias),
Z = X̃ W_encᵀ + b_enc (B×H pre-activations), X̂ = A W_dec + b_dec, E = X̂ − X. Every method's
reconstruction term is (1/2B)‖E‖², so G = ∂/∂X̂ = E/B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit.activations import IDENTITY
from sparsekit.autoencoder import Forward
from sparsekit.backend import sparse_code
from sparsekit.errors import ParameterError
from sparsekit.methods.base import Method, Param, StepState, Upkeep, non_negative
from sparsekit.methods.ksparse import top_k_indices


def unit_rows_init(rng: np.random.Generator, dim: int, hidden: int) -> dict[str, np.ndarray]:
    """Gao et al.'s initialisation: random unit decoder rows, encoder = decoder's transpose.

    (Our W_enc is H×D like W_dec, so "the transpose" is the same array.) Biases zero.
    """
    w_dec = rng.standard_normal((hidden, dim))
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    return {
        "W_enc": w_dec.copy(),
        "b_enc": np.zeros(hidden),
        "b_dec": np.zeros(dim),
        "W_dec": w_dec,
    }


def at_least_one(value: int, _size: Any) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def non_negative_int(value: int, _size: Any) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value}"


#: Parameters every method with the AuxK loss declares (Gao et al. 2024, §A.2).
AUXK_PARAMS = (
    Param(
        "k_aux",
        int,
        512,
        "dead latents each sample's AuxK loss uses (paper: 512; capped at the dead count)",
        at_least_one,
    ),
    Param("aux_coef", float, 1 / 32, "AuxK coefficient alpha (paper: 1/32)", non_negative),
    Param(
        "dead_after",
        int,
        10_000_000,
        "a latent is dead after this many training samples without firing (paper: 10M tokens)",
        non_negative_int,
    ),
)

#: Resampling dead units (the trainer's, see Upkeep), off by default.
#: Dead-unit tracking for a method that needs it only to resample (off by default).
DEAD_AFTER_PARAM = Param(
    "dead_after",
    int,
    0,
    "track units without firing for this many samples (0: off; needed to resample)",
    non_negative_int,
)

RESAMPLE_PARAM = Param(
    "resample_every",
    int,
    0,
    "every this many steps re-initialise dead units from poorly reconstructed inputs (0: off)",
    non_negative_int,
)


@dataclass
class AuxSelection:
    """The k_aux most active dead latents of each row: indices (B×k_aux), ReLU'd values."""

    indices: Any
    values: Any


def select_dead(backend: Any, z: Any, dead: Any, k_aux: int) -> AuxSelection | None:
    """The ``k_aux`` largest pre-activations among dead latents, per row, then ReLU.

    ``None`` when no latent is dead (or ``dead`` is ``None``: nothing tracked).
    """
    if dead is None:
        return None
    xp = backend.xp
    dead_units = xp.flatnonzero(xp.asarray(dead))
    n_dead = int(dead_units.shape[0])
    if n_dead == 0:
        return None
    k = min(k_aux, n_dead)
    z_dead = z[:, dead_units]
    local = top_k_indices(xp, z_dead, k)
    values = xp.take_along_axis(z_dead, local, axis=1)
    xp.maximum(values, 0, out=values)
    return AuxSelection(dead_units[local], values)


def auxk_scale(backend: Any, x: Any, residual: Any, coef: float) -> Any:
    """α·N_X/N_R, the AuxK weight on (1/2B)‖Ê − R‖² (a constant of the step: stop-gradient).

    Gao et al. normalise each loss by its target's variance, ‖E‖²/N_X + α‖Ê − R‖²/N_R with
    N_X = ‖X − x̄‖², N_R = ‖R − r̄‖² over the batch; multiplied by N_X/(2B) that is our
    (1/2B)‖E‖² plus this weight times (1/2B)‖Ê − R‖². Zero when N_R is (openai's NaN → 0).
    """
    xp = backend.xp
    xc = x - x.mean(axis=0)
    rc = residual - residual.mean(axis=0)
    n_x = xp.vdot(xc, xc)
    n_r = xp.vdot(rc, rc)
    if not float(n_r) > 0:
        return x.dtype.type(0)
    return x.dtype.type(coef) * n_x / n_r


def auxk_loss_and_grads(
    backend: Any,
    w_dec: Any,
    x: Any,
    residual: Any,
    aux: AuxSelection,
    scale: Any,
    hidden: int,
    with_grads: bool = True,
) -> tuple[Any, Any, Any]:
    """The AuxK term scale·(1/2B)‖Ê − R‖², Ê = A_aux W_dec (no b_dec), R held constant.

    Returns ``(loss, ∇W_dec part (H×D), dA_aux (B×k_aux, through the ReLU))``; the caller
    sends dA_aux to the encoder like the main code's gradient. Nothing reaches b_dec or the
    live latents: R is a constant and Ê has no bias (sparsify #132, SAELens PR #432).
    """
    xp = backend.xp
    batch = x.shape[0]
    e_aux = sparse_code.code_times(backend, aux.indices, aux.values, w_dec)
    e_aux -= residual
    loss = scale * (0.5 / batch) * xp.vdot(e_aux, e_aux)
    if not with_grads:
        return loss, None, None
    e_aux *= scale / batch  # G_aux
    grad_w_dec = sparse_code.code_transpose_times(backend, aux.indices, aux.values, e_aux, hidden)
    d_aux = sparse_code.gathered_dot(backend, e_aux, w_dec, aux.indices)
    d_aux *= aux.values > 0
    return loss, grad_w_dec, d_aux


def encoder_grads_sparse(
    backend: Any,
    parts: list[tuple[Any, Any]],
    x_tilde: Any,
    w_enc: Any,
    hidden: int,
    pre_bias: bool,
) -> tuple[Any, Any, Any]:
    """∇W_enc, ∇b_enc and b_dec's encoder part from row-sparse dZ's ``[(indices, values)]``.

    ∇W_enc = dZᵀ X̃, ∇b_enc = Σ_rows dZ, and with X̃ = X − b_dec the b_dec gradient gets
    −(Σ_rows dZ) W_enc (summed before the product: openai's pre-bias trick).
    """
    grad_w = None
    grad_b = None
    for indices, values in parts:
        g_w = sparse_code.code_transpose_times(backend, indices, values, x_tilde, hidden)
        g_b = sparse_code.column_sums(backend, indices, values, hidden)
        grad_w = g_w if grad_w is None else grad_w + g_w
        grad_b = g_b if grad_b is None else grad_b + g_b
    b_dec_part = -(grad_b @ w_enc) if pre_bias else None
    return grad_w, grad_b, b_dec_part


def _b_dec_init(value: str, _size: Any) -> str | None:
    choices = ("geometric_median", "mean", "none")
    return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"


B_DEC_INIT_PARAM = Param(
    "b_dec_init",
    str,
    "geometric_median",
    "b_dec at the start: geometric_median or mean of a data sample, or none (zeros)",
    _b_dec_init,
)


class SAEMethod(Method):
    """What the sparse autoencoders here share: an own objective, untied, linear output."""

    own_objective = True
    tied = False
    allows_tied = False
    training_defaults = {
        "optimizer": "adam",
        "lr": 3e-4,
        "batch_size": 1024,
        "hidden": 1024,
        "epochs": 10,
    }
    #: Whether the encoder reads X̃ = X − b_dec.
    pre_bias = True

    def init_params(self, rng, dim, hidden, tied, sample):
        return unit_rows_init(rng, dim, hidden)

    output_activation = IDENTITY

    def validate(self, hidden: int, dim: int | None = None) -> None:
        super().validate(hidden, dim)
        if getattr(self, "resample_every", 0) and not getattr(self, "dead_after", 0):
            raise ParameterError(f"{self.name}: resample_every needs dead_after > 0")

    def upkeep(self) -> Upkeep:
        init = getattr(self, "b_dec_init", "none")
        return Upkeep(
            unit_norm_decoder=True,
            b_dec_init=None if init == "none" else init,
            dead_after=getattr(self, "dead_after", 0),
            resample_every=getattr(self, "resample_every", 0),
        )

    def loss_and_grads(self, backend, params, x, state, term=None):
        return self._objective(backend, params, x, state, term, None, True)

    def anchored_loss(self, backend, params, x, state, anchor, term=None):
        return self._objective(backend, params, x, state, term, anchor, False)[0]

    def _objective(
        self,
        backend: Any,
        params: dict[str, Any],
        x: Any,
        state: StepState,
        term: str | None,
        anchor: dict[str, Any] | None,
        want_grads: bool,
    ) -> tuple[Any, dict[str, Any], Forward, Any]:
        raise NotImplementedError

    def _check_term(self, term: str | None) -> None:
        if term is not None and term not in self.terms:
            raise ParameterError(f"{self.name} has no loss term {term!r} (terms: {self.terms})")
