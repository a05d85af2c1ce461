"""(e) k-sparse autoencoder (Makhzani & Frey 2013, "k-Sparse Autoencoders", arXiv:1312.5663).

Linear, tied weights; each row keeps its k largest pre-activations by signed value::

    Z = X Wᵀ + b ;  M = top-k of each row of Z ;  Hc = Z ∘ M ;  X̂ = Hc W + c
    L = (1/2B)‖X̂ − X‖²
    G = (X̂ − X)/B ;  dZ = (G Wᵀ) ∘ M
    ∇W = dZᵀ X + Hcᵀ G ;  ∇b = Σ_rows dZ ;  ∇c = Σ_rows G

(W here is H×D, the transpose of the paper's.) Selection is ``argpartition``: O(H) a row.
Because the support is a :class:`~sparsekit.core.contract.TopK`, the trainer computes the
decoder and every gradient term on the k kept columns only.

Schedule (the authors' code): k starts at ``k_start`` (100) and falls linearly to ``k`` over
the first ``anneal`` fraction (half) of the epochs, then holds. Encoding for downstream use
keeps the ``alpha``·k largest units (α = 3 on MNIST).

The selection is :func:`sparsekit.backend.selection.top_k_indices` (TopK and AuxK use it
too); the sparse products of the backward pass are :mod:`sparsekit.backend.sparse_code`'s.
"""

from __future__ import annotations

import numpy as np

from sparsekit.backend.selection import top_k_indices
from sparsekit.methods import (
    IDENTITY,
    ROW_MEAN,
    Method,
    Param,
    SAELensArch,
    TopK,
    between_one_and_hidden,
    hookimpl,
)


def _at_least_one(value: float, _size) -> str | None:
    return None if value >= 1 else f"must be >= 1, got {value}"


def _fraction(value: float, _size) -> str | None:
    return None if 0 <= value <= 1 else f"must be between 0 and 1, got {value}"


class KSparse(Method):
    name = "ksparse"
    description = (
        "Linear tied autoencoder keeping the k largest units per sample (Makhzani & Frey)."
    )
    citation = "Makhzani & Frey, 'k-Sparse Autoencoders', ICLR 2014, arXiv:1312.5663"
    params = (
        Param("k", int, 25, "units kept per sample during training", between_one_and_hidden),
        Param("alpha", float, 3.0, "encode with the alpha*k largest units", _at_least_one),
        Param("k_start", int, 100, "k at the first epoch, annealed down to k", _at_least_one),
        Param("anneal", float, 0.5, "fraction of the epochs over which k is annealed", _fraction),
    )
    tied = True
    # Each row's k largest: the mask of a row is that row's alone.
    batch_reduction = ROW_MEAN
    # SAELens' TopK keeps the k largest pre-activations and applies a ReLU to them; k-sparse
    # keeps their sign. Exported with k = the encoding-time αk; not read from foreign files.
    saelens = SAELensArch(
        "topk",
        cfg=lambda m: {"k": int(round(m.alpha * m.k)), "rescale_acts_by_decoder_norm": False},
        params=lambda cfg: {"k": int(cfg["k"]), "alpha": 1.0},
        reads=False,
        note="SAELens applies a ReLU to the k kept values; k-sparse keeps negative ones",
    )
    training_defaults = {
        # The authors used momentum 0.9, lr 0.01 (``--optimizer momentum --lr 0.01``); Adam at
        # 1e-3 leaves far fewer dead units in a short run on MNIST.
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 128,
        "hidden": 1000,
        "epochs": 10,
        # The tied linear model can hold the mean image only in its decoder bias: on raw
        # MNIST 140-170 of 1000 units never win the top k (dead, noise in the filter grid);
        # on centred images none do (docs/results.md).
        "center": True,
    }

    def __init__(self, **values) -> None:
        super().__init__(**values)
        self.current_k = self.k
        self._hidden: int | None = None

    def validate(self, hidden: int, dim: int | None = None) -> None:
        super().validate(hidden, dim)
        self._hidden = hidden

    def k_at(self, epoch: int, epochs: int) -> int:
        """The annealed k of epoch ``epoch`` (0-based) out of ``epochs``."""
        start = max(self.k_start, self.k)
        if self._hidden is not None:
            start = min(start, self._hidden)
        anneal_epochs = int(self.anneal * epochs)
        if epoch >= anneal_epochs or start <= self.k:
            return self.k
        return int(round(start + (self.k - start) * epoch / anneal_epochs))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.current_k = self.k_at(epoch, epochs)

    def init_params(self, rng, dim, hidden, tied, sample):
        params = {
            "W_enc": 0.01 * rng.standard_normal((hidden, dim)),
            "b_enc": np.zeros(hidden),
            "b_dec": np.zeros(dim),
        }
        if not tied:
            params["W_dec"] = 0.01 * rng.standard_normal((hidden, dim))
        return params

    hidden_activation = IDENTITY
    output_activation = IDENTITY

    def mask(self, xp, z, a, training):
        k = self.current_k if training else int(round(self.alpha * self.k))
        return TopK(top_k_indices(xp, z, min(k, z.shape[1])))


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(KSparse)
