"""Matryoshka BatchTopK sparse autoencoder (Bussmann, Nabeshima, Karvonen & Nanda 2025,
"Learning Multi-Level Features with Matryoshka Sparse Autoencoders", arXiv:2503.17547).

The latents are ordered and split at nested prefix ends m_1 < … < m_Q = H; each prefix must
reconstruct the input alone::

    X̂^(g) = A[:, :m_g] W_dec[:m_g] + b_dec ;  L = Σ_g (1/2B)‖X̂^(g) − X‖² + AuxK

with A the BatchTopK code of :mod:`sparsekit.methods.batchtopk`, selected once over all
latents (every prefix reuses it), and the AuxK residual that of the full dictionary. The
prefixes are ``prefixes`` as fractions of H (default the authors' group sizes H/16, H/16,
H/8, H/4, H/2, i.e. ends at 1/16, 1/8, 1/4, 1/2, 1); the terms are summed unweighted.

Gradient, with G^(g) = (X̂^(g) − X)/B and suffix sums S^(g) = Σ_{g' ≥ g} G^(g')::

    ∂L/∂A[:, group g] = S^(g) W_dec[group g]ᵀ ;  ∇W_dec[group g] = A[:, group g]ᵀ S^(g)
    ∇b_dec = Σ_rows S^(1) − (Σ_rows dZ) W_enc ;  dZ = ∂L/∂A ⊙ M ⊙ 1[Z > 0]

(group g = latents m_{g−1} … m_g − 1); the encoder gradients as BatchTopK's. The X̂^(g) are
running sums of the groups' contributions; every product runs on the sparse code's kept
entries (each entry belongs to one group), so no B×H array but Z exists.
"""

from __future__ import annotations

from typing import Any

from sparsekit.backend.sparse_code import (
    code_times,
    code_transpose_times,
    kept_gathered_dot,
    split_code,
)
from sparsekit.backend.threads import split_elementwise
from sparsekit.errors import ParameterError
from sparsekit.methods import Param, hookimpl
from sparsekit.methods.batchtopk import BatchTopKSAE


def _fractions(value: str) -> list[float]:
    try:
        parts = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(
            f"--prefixes: expected comma-separated fractions, got {value!r}"
        ) from None
    return parts


def _prefixes_check(value: str, size: Any) -> str | None:
    try:
        parts = _fractions(value)
    except ParameterError:
        return f"must be comma-separated fractions, got {value!r}"
    if not parts or parts[-1] != 1.0:
        return f"must be increasing fractions of the hidden size ending at 1, got {value!r}"
    if any(not 0 <= a < b <= 1 for a, b in zip([0.0, *parts[:-1]], parts, strict=True)):
        return f"must be strictly increasing fractions in (0, 1], got {value!r}"
    hidden = size.get("hidden")
    if hidden is not None:
        ends = prefix_ends(value, hidden)
        if len(set(ends)) != len(ends) or ends[0] < 1:
            return f"gives empty groups at hidden size {hidden}: {ends}"
    return None


def prefix_ends(value: str, hidden: int) -> list[int]:
    """The prefix ends m_1 < … < m_Q = H of ``prefixes`` at hidden size ``hidden``."""
    return [int(round(f * hidden)) for f in _fractions(value)]


class MatryoshkaSAE(BatchTopKSAE):
    name = "matryoshka"
    description = "Matryoshka BatchTopK autoencoder: every nested prefix reconstructs the input."
    citation = (
        "Bussmann, Nabeshima, Karvonen & Nanda, 'Learning Multi-Level Features with Matryoshka "
        "Sparse Autoencoders', 2025, arXiv:2503.17547"
    )
    params = (
        *BatchTopKSAE.params,
        Param(
            "prefixes",
            str,
            "0.0625,0.125,0.25,0.5,1",
            "nested prefix ends as fractions of the hidden size, comma-separated, ending at 1",
            _prefixes_check,
        ),
    )
    terms = ("prefixes", "auxk")

    def main_term(self, backend, params, x, fwd, want_grads):
        if fwd.code is not None:  # the dense code (a GPU)
            return self._dense_main_term(backend, params, x, fwd, want_grads)
        xp = backend.xp
        batch, hidden = x.shape[0], params["W_enc"].shape[0]
        w_dec = params["W_dec"]
        indices, values = fwd.support.indices, fwd.code_values
        ends = prefix_ends(self.prefixes, hidden)
        group, in_group = split_code(xp, indices, values, ends)
        partial = xp.zeros_like(x) + params["b_dec"]
        loss = 0 * partial[0, 0]
        g_list = []
        for q in range(len(ends)):
            term = code_times(backend, indices, in_group[q], w_dec)
            g = xp.empty_like(x)
            # X̂^(g) − X from the running sum, parts of the arrays on threads (the same bits)
            split_elementwise(lambda *part: _add_then_residual(xp, *part), partial, term, x, g)
            loss = loss + (0.5 / batch) * xp.vdot(g, g)
            if want_grads:
                split_elementwise(lambda part: xp.multiply(part, 1.0 / batch, out=part), g)
                g_list.append(g)
        if not want_grads:
            return loss, None, None, None
        suffix = [g_list[-1]]  # S^(g) = G^(g) + S^(g+1), from the last group back
        for g in reversed(g_list[:-1]):
            total = xp.empty_like(g)
            split_elementwise(lambda a, b, out: xp.add(a, b, out=out), suffix[-1], g, total)
            suffix.append(total)
        suffix.reverse()
        # Σ_g A[:, group g]ᵀ S^(g) in one pass over the kept entries
        grad_w_dec = code_transpose_times(backend, indices, in_group, suffix, hidden)
        # W_dec's kept rows gathered once for every suffix; each entry takes its group's
        d_values = kept_gathered_dot(backend, suffix, w_dec, indices, values, group)
        return loss, grad_w_dec, suffix[0].sum(axis=0), d_values

    def _dense_main_term(self, backend, params, x, fwd, want_grads):
        """The same terms on a dense B×H code, a group's columns at a time."""
        xp = backend.xp
        batch, hidden = x.shape[0], params["W_enc"].shape[0]
        w_dec, code = params["W_dec"], fwd.code
        ends = prefix_ends(self.prefixes, hidden)
        starts = [0, *ends[:-1]]
        partial = xp.zeros_like(x) + params["b_dec"]
        loss = 0 * partial[0, 0]
        g_list = []
        for lo, hi in zip(starts, ends, strict=True):
            partial += code[:, lo:hi] @ w_dec[lo:hi]
            g = partial - x
            loss = loss + (0.5 / batch) * xp.vdot(g, g)
            if want_grads:
                g *= 1.0 / batch
                g_list.append(g)
        if not want_grads:
            return loss, None, None, None
        grad_w_dec = xp.empty_like(w_dec)
        d_code = xp.empty_like(code)
        suffix = None
        for (lo, hi), g in zip(
            reversed(list(zip(starts, ends, strict=True))), reversed(g_list), strict=True
        ):
            suffix = g if suffix is None else suffix + g
            grad_w_dec[lo:hi] = code[:, lo:hi].T @ suffix
            d_code[:, lo:hi] = suffix @ w_dec[lo:hi].T
        return loss, grad_w_dec, suffix.sum(axis=0), d_code


def _add_then_residual(xp: Any, partial: Any, term: Any, x: Any, residual: Any) -> None:
    """partial += term, then residual = partial − x (in place, on one part of the arrays)."""
    partial += term
    xp.subtract(partial, x, out=residual)


@hookimpl
def sparsekit_register_methods(register) -> None:
    register.add(MatryoshkaSAE)
