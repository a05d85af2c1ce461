"""Products with a row-sparse code, on any backend.

A :class:`~sparsekit.methods.base.TopK` support keeps k of H units in every row, so the code
is a B×H matrix with k nonzeros per row, given by ``indices`` (B×k) and ``values`` (B×k).
These kernels compute the decoder product and the gradient terms from the k columns alone
(B·k·D multiply-adds instead of B·H·D), as ``docs/methods.md`` ("Why sparsity should make
training cheaper") describes. When the backend has no sparse module they fall back to
gathering the k rows of W, which costs the same arithmetic.
"""

from __future__ import annotations

from typing import Any

from sparsekit.backend import Backend


def _csr(backend: Backend, indices: Any, values: Any, n_cols: int) -> Any:
    xp = backend.xp
    rows, k = indices.shape
    indptr = xp.arange(0, rows * k + 1, k, dtype=xp.int32)
    return backend.sparse.csr_matrix(
        (values.ravel(), indices.ravel().astype(xp.int32, copy=False), indptr),
        shape=(rows, n_cols),
    )


def code_times(backend: Backend, indices: Any, values: Any, weights: Any) -> Any:
    """Hc @ W for a row-sparse code Hc (B×H) and dense W (H×D): B×D."""
    if backend.sparse is not None:
        return backend.xp.asarray(_csr(backend, indices, values, weights.shape[0]) @ weights)
    return backend.xp.einsum("bk,bkd->bd", values, weights[indices])


def code_transpose_times(
    backend: Backend, indices: Any, values: Any, dense: Any, n_units: int
) -> Any:
    """Hcᵀ @ X for a row-sparse Hc (B×H) and dense X (B×D): H×D."""
    xp = backend.xp
    if backend.sparse is not None:
        return xp.asarray(_csr(backend, indices, values, n_units).T @ dense)
    out = xp.zeros((n_units, dense.shape[1]), dtype=dense.dtype)
    xp.add.at(
        out, indices.ravel(), (values[:, :, None] * dense[:, None, :]).reshape(-1, dense.shape[1])
    )
    return out


def gathered_dot(backend: Backend, dense: Any, weights: Any, indices: Any) -> Any:
    """(G @ Wᵀ) at the kept entries only: out[i, j] = G[i] · W[indices[i, j]], B×k."""
    return backend.xp.einsum("bd,bkd->bk", dense, weights[indices])


def column_sums(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    """Σ_rows of a row-sparse matrix: length-H vector."""
    xp = backend.xp
    out = xp.zeros(n_units, dtype=values.dtype)
    xp.add.at(out, indices.ravel(), values.ravel())  # bincount would upcast to float64
    return out


def top_k_indices(xp: Any, z: Any, k: int) -> Any:
    """Indices of the k largest entries (by signed value) of each row, unordered; O(H) a row."""
    h = z.shape[1]
    if k >= h:
        return xp.broadcast_to(xp.arange(h), z.shape).copy()
    return xp.argpartition(z, h - k, axis=1)[:, h - k :]
