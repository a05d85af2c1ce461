"""Pieces the sparse-autoencoder methods share: initialisation, the AuxK loss, checks.

Notation as in ``docs/methods.md`` ("Sparse autoencoders"): X̃ = X − b_dec (pre-encoder bias),
Z = X̃ W_encᵀ + b_enc (B×H pre-activations), X̂ = A W_dec + b_dec, E = X̂ − X. Every method's
reconstruction term is (1/2B)‖E‖², so G = ∂/∂X̂ = E/B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsekit.backend import sparse_code
from sparsekit.backend.selection import relu_top_k_of_columns, row_blocks, top_k_indices
from sparsekit.backend.sparse_code import (
    code_times,
    code_transpose_times,
    column_sums,
    gathered_dot,
)
from sparsekit.errors import ParameterError
from sparsekit.methods import (
    ROW_MEAN,
    Forward,
    ObjectiveMethod,
    Param,
    StepState,
    Upkeep,
    non_negative,
)


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


#: The dead-unit window of Gao et al. (10M tokens) and the AuxK methods' default. Their runs
#: see billions of tokens; on a user's own file of 50,000 rows a run sees far fewer samples,
#: so the trainer takes this default as "at most a tenth of the run" (see
#: :func:`sparsekit.training.upkeep.dead_window`).
PAPER_DEAD_AFTER = 10_000_000

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
        PAPER_DEAD_AFTER,
        "a latent is dead after this many training samples without firing (paper: 10M "
        "tokens; this default becomes a tenth of the run's samples when that is fewer)",
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
class AuxGrads:
    """The AuxK term's gradient, nonzero only on the dead latents' rows ``units``:
    ∇W_dec[units], ∇W_enc[units] (n_dead×D) and ∇b_enc[units] (n_dead)."""

    units: Any
    w_dec: Any
    w_enc: Any
    b_enc: Any

    def add_to(self, grads: dict[str, Any]) -> None:
        """Add the parts into ``grads`` (H×D / H arrays) in place."""
        grads["W_dec"][self.units] += self.w_dec
        grads["W_enc"][self.units] += self.w_enc
        grads["b_enc"][self.units] += self.b_enc


def dead_units(backend: Any, dead: Any) -> Any:
    """The dead latents for :func:`auxk_term`, or ``None`` when nothing is tracked.

    On the CPU their indices (``None`` when none is dead); on a device the boolean mask itself,
    since counting them would read the device back every step.
    """
    if dead is None:
        return None
    xp = backend.xp
    if backend.is_gpu:
        return xp.asarray(dead)
    units = xp.flatnonzero(xp.asarray(dead))
    return units if int(units.shape[0]) else None


@dataclass
class DenseAuxGrads:
    """The AuxK term's gradient as whole H×D / H arrays (the device path)."""

    w_dec: Any
    w_enc: Any
    b_enc: Any

    def add_to(self, grads: dict[str, Any]) -> None:
        grads["W_dec"] += self.w_dec
        grads["W_enc"] += self.w_enc
        grads["b_enc"] += self.b_enc


def _auxk_term_masked(
    backend: Any,
    z: Any,
    dead: Any,
    k_aux: int,
    w_dec: Any,
    residual: Any,
    scale: Any,
    x_tilde: Any,
    want_grads: bool,
) -> tuple[Any, DenseAuxGrads | None]:
    """:func:`auxk_term` on a device, from the dead mask without reading it back.

    The k_aux largest of each row's pre-activations with the live latents set to −∞, then the
    ReLU: live latents that fill a row (fewer than k_aux dead) get the value 0 and so add
    nothing. The same loss and gradient as the CPU's; with no dead latent the loss is
    multiplied by 0 (and every gradient is 0, the code being 0).
    """
    xp = backend.xp
    batch, hidden = z.shape
    masked = xp.where(dead, z, -xp.inf)
    idx = top_k_indices(xp, masked, min(k_aux, hidden))
    values = xp.take_along_axis(masked, idx, axis=1)
    xp.maximum(values, 0, out=values)
    e_aux = code_times(backend, idx, values, w_dec)
    e_aux -= residual
    loss = scale * (0.5 / batch) * xp.vdot(e_aux, e_aux) * dead.any()
    if not want_grads:
        return loss, None
    e_aux *= scale / batch  # G_a
    d_aux = gathered_dot(backend, e_aux, w_dec, idx)
    d_aux *= values > 0
    return loss, DenseAuxGrads(
        code_transpose_times(backend, idx, values, e_aux, hidden),
        code_transpose_times(backend, idx, d_aux, x_tilde, hidden),
        column_sums(backend, idx, d_aux, hidden),
    )


def auxk_term(
    backend: Any,
    z: Any,
    units: Any,
    k_aux: int,
    w_dec: Any,
    residual: Any,
    scale: Any,
    x_tilde: Any,
    want_grads: bool,
) -> tuple[Any, AuxGrads | None]:
    """The AuxK term scale·(1/2B)‖Ê − R‖², Ê = A_aux W_dec (no b_dec), R held constant, and
    its gradient.

    A_aux is nonzero only on the dead columns ``units``, so every product is one with the
    n_dead rows W_dec[units]: by the aux code's nonzeros on the CPU when it keeps few of them
    (k_aux of thousands of dead latents), BLAS's dense product otherwise (the nonzero ops of
    :mod:`sparsekit.backend.sparse_code` decide); with G_a = scale·(Ê − R)/B and M_a the aux
    mask::

        ∇W_dec[units] = A_auxᵀ G_a ;  dZ_a = (G_a W_dec[units]ᵀ) ⊙ M_a ⊙ 1[Z > 0]
        ∇W_enc[units] = dZ_aᵀ X̃ ;  ∇b_enc[units] = Σ_rows dZ_a

    (b_dec's encoder part −(Σ_rows dZ) W_enc is the caller's, from the total ∇b_enc.) The
    batch is taken in the blocks of rows of :func:`sparsekit.backend.selection.row_blocks`
    (a size fixed by the row width alone), so no B×n_dead array exists and the sums run in
    the same order on any number of threads.
    Nothing reaches b_dec or the live latents: R is a constant and Ê has no bias
    (sparsify #132, SAELens PR #432).
    """
    if backend.is_gpu:  # units is the dead mask
        return _auxk_term_masked(
            backend, z, units, k_aux, w_dec, residual, scale, x_tilde, want_grads
        )
    xp = backend.xp
    batch = z.shape[0]
    n_dead = int(units.shape[0])
    w_dead = w_dec[units]
    total = None
    grads = None
    if want_grads:
        grads = AuxGrads(
            units,
            xp.zeros_like(w_dead),
            xp.zeros((n_dead, x_tilde.shape[1]), dtype=x_tilde.dtype),
            xp.zeros(n_dead, dtype=z.dtype),
        )
    for lo, hi in row_blocks(batch, n_dead * z.dtype.itemsize):
        code = relu_top_k_of_columns(xp, z[lo:hi], units, k_aux)  # the aux code's rows
        # k_aux of n_dead a row: products by the code's nonzeros where it is sparse enough
        found = sparse_code.find_nonzeros(code) or sparse_code.DENSE  # one scan, for all four
        e_aux = sparse_code.nonzero_times(xp, code, w_dead, nonzeros=found)
        e_aux -= residual[lo:hi]
        part = xp.vdot(e_aux, e_aux)
        total = part if total is None else total + part
        if grads is None:
            continue
        e_aux *= scale / batch  # G_a
        sparse_code.nonzero_transpose_times(xp, code, e_aux, add_to=grads.w_dec, nonzeros=found)
        # code ≥ 0, so its nonzeros are M_a ⊙ 1[Z > 0], and d_aux is zero wherever code is
        d_aux = sparse_code.nonzero_masked_times(xp, code, e_aux, w_dead, nonzeros=found)
        sparse_code.nonzero_transpose_times(
            xp, d_aux, x_tilde[lo:hi], add_to=grads.w_enc, nonzeros=found
        )
        grads.b_enc += d_aux.sum(axis=0)
    return scale * (0.5 / batch) * total, grads


def auxk_scale(backend: Any, x: Any, residual: Any, coef: float, share: Any = None) -> Any:
    """α·N_X/N_R, the AuxK weight on (1/2B)‖Ê − R‖² (a constant of the step: stop-gradient).

    Gao et al. normalise each loss by its target's variance, ‖E‖²/N_X + α‖Ê − R‖²/N_R with
    N_X = ‖X − x̄‖², N_R = ‖R − r̄‖² over the batch; multiplied by N_X/(2B) that is our
    (1/2B)‖E‖² plus this weight times (1/2B)‖Ê − R‖². Zero when N_R is (openai's NaN → 0).

    Under data-parallel training (``share``, a :class:`~sparsekit.core.declarations.
    BatchShare`) the means and the sums of squares are the global batch's: two sums over
    the ranks (the column sums, then the squares around the global means).
    """
    xp = backend.xp
    if share is None:
        x_mean, r_mean = x.mean(axis=0), residual.mean(axis=0)
    else:
        sums = share.sum(xp.stack([x.sum(axis=0), residual.sum(axis=0)]))
        x_mean, r_mean = sums[0] / share.total, sums[1] / share.total
    xc = x - x_mean
    rc = residual - r_mean
    n_x = xp.vdot(xc, xc)
    n_r = xp.vdot(rc, rc)
    if share is not None:
        both = share.sum(xp.stack([xp.asarray(n_x), xp.asarray(n_r)]))
        n_x, n_r = both[0], both[1]
    positive = n_r > 0  # (no host read: a device keeps it there)
    return xp.where(positive, x.dtype.type(coef) * n_x / xp.where(positive, n_r, 1), 0).astype(
        x.dtype
    )


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


class SAEMethod(ObjectiveMethod):
    """What the sparse autoencoders here share: an own objective, untied, linear output
    (:class:`~sparsekit.core.contract.ObjectiveMethod`'s ``output_activation``)."""

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
    # Means over rows; AuxK's weight (and BatchTopK's selection) read StepState.share.
    batch_reduction = ROW_MEAN

    def init_params(self, rng, dim, hidden, tied, sample):
        return unit_rows_init(rng, dim, hidden)

    def validate(self, hidden: int, dim: int | None = None) -> None:
        super().validate(hidden, dim)
        if getattr(self, "resample_every", 0) and not getattr(self, "dead_after", 0):
            raise ParameterError(f"{self.name}: --resample-every needs --dead-after > 0")

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
