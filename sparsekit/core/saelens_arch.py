"""How a method declares its SAELens counterpart: the :class:`SAELensArch` declaration.

A method class sets ``saelens = SAELensArch("topk", ...)``; :mod:`sparsekit.interop.saelens`
reads the declaration to write and read SAELens files. The declaration lives in the core so
that a method's file never imports the file format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _no_fields(method: Any) -> dict[str, Any]:
    return {}


def _no_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class SAELensArch:
    """How a method maps onto one SAELens architecture (set as ``Method.saelens``).

    * ``architecture`` – SAELens' name: ``"standard"``, ``"topk"``, ``"batchtopk"``,
      ``"jumprelu"``, ...
    * ``cfg`` – the architecture's own ``cfg.json`` fields from a method instance (``k`` for
      TopK).
    * ``params`` – the method's parameters from a ``cfg.json`` of a file from elsewhere.
    * ``tensors`` – extra learned arrays, sparsekit parameter name → SAELens tensor name
      (a JumpReLU's ``{"threshold": "threshold"}``), written and read as they are (H,).
    * ``export_tensors`` / ``import_tensors`` – for extra arrays that need converting: a
      function of (method, sparsekit parameters) returning SAELens tensors, and one of
      (cfg, SAELens tensors) returning sparsekit parameters. A JumpReLU that learns log θ:
      ``export_tensors=lambda m, p: {"threshold": np.exp(p["log_threshold"])}``,
      ``import_tensors=lambda cfg, t: {"log_threshold": np.log(t["threshold"])}``. (SAELens
      saves a trained BatchTopK SAE as ``"jumprelu"`` with its one threshold repeated in
      ``threshold``: ``sae_lens/saes/batchtopk_sae.py``.)
    * ``import_state`` – for a method whose inference depends on its state rather than its
      parameters: a function of (cfg, SAELens tensors) returning what the method's
      ``load_state_dict`` takes (BatchTopK's one threshold).
    * ``subtracts_b_dec`` – whether the method itself encodes ``x − b_dec`` (SAELens'
      ``apply_b_dec_to_input``; the SAE methods' pre-encoder bias), as a bool or a function
      of the method instance (JumpReLU's ``pre_bias``).
    * ``reads`` – whether a SAELens file of this architecture that names no sparsekit method
      may be read as this method: only when the method computes exactly SAELens' code.
    * ``decoder_only`` – the architecture has no encoder weights of its own: its files hold
      ``W_dec`` and ``b_dec`` only (SAELens' ``matching_pursuit``, whose W_enc is W_decᵀ).
      The method is tied (its ``W_enc`` is the dictionary); an export writes that as
      ``W_dec`` and leaves ``W_enc`` and ``b_enc`` out, an import reads ``W_dec`` into
      ``W_enc`` with ``b_enc`` = 0.
    * ``note`` – where the method's code differs from SAELens' (written to the exported
      ``metadata`` as ``sparsekit_note`` and printed by the command line); empty when they
      agree exactly.
    """

    architecture: str
    cfg: Callable[[Any], dict[str, Any]] = _no_fields
    params: Callable[[Mapping[str, Any]], dict[str, Any]] = _no_params
    tensors: Mapping[str, str] = field(default_factory=dict)
    export_tensors: Callable[[Any, Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    import_tensors: (
        Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None
    ) = None
    import_state: Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], dict[str, Any]] | None = (
        None
    )
    subtracts_b_dec: bool | Callable[[Any], bool] = False
    reads: bool = True
    decoder_only: bool = False
    note: str = ""

    def pre_bias(self, method: Any) -> bool:
        """Whether ``method`` subtracts b_dec from its input before encoding."""
        flag = self.subtracts_b_dec
        return bool(flag(method) if callable(flag) else flag)
