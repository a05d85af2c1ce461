"""Products with a row-sparse code, on any backend.

A top-k support keeps k of H units in every row, so the code is a B×H matrix with k nonzeros
per row, given by ``indices`` (B×k) and ``values`` (B×k). These kernels compute the decoder
product and the gradient terms from the k columns alone (B·k·D multiply-adds instead of
B·H·D), as ``docs/methods.md`` ("Why sparsity should make training cheaper") describes. When
the backend has no sparse module they fall back to gathering the k rows of W, which costs the
same arithmetic.

Every kernel keeps the dtype of its inputs (float32 stays float32) and allocates nothing
larger than its result plus a cache-sized scratch block. On the CPU, threads of
:func:`~sparsekit.backend.threads.split_run` split the rows or units.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsekit.backend import Backend
from sparsekit.backend.threads import min_rows, split_run

#: Bytes of gathered weight rows per block in :func:`gathered_dot` (about an L2 cache).
GATHER_BLOCK_BYTES = 1 << 21


def _is_numpy(xp: Any) -> bool:
    return xp is np


_indptr_cache: dict[tuple[int, int], Any] = {}


def _row_pointers(xp: Any, rows: int, k: int) -> Any:
    """CSR row pointers 0, k, 2k, ... (cached on the CPU: every minibatch reuses them)."""
    if not _is_numpy(xp):
        return xp.arange(0, rows * k + 1, k, dtype=xp.int32)
    ptr = _indptr_cache.get((rows, k))
    if ptr is None:
        if len(_indptr_cache) > 64:
            _indptr_cache.clear()
        ptr = np.arange(0, rows * k + 1, k, dtype=np.int32)
        ptr.flags.writeable = False
        _indptr_cache[(rows, k)] = ptr
    return ptr


def _csr(backend: Backend, indices: Any, values: Any, n_cols: int) -> Any:
    xp = backend.xp
    rows, k = indices.shape
    return backend.sparse.csr_matrix(
        (values.ravel(), indices.ravel().astype(xp.int32, copy=False), _row_pointers(xp, rows, k)),
        shape=(rows, n_cols),
        copy=False,
    )


def _sparsetools() -> Any:
    """SciPy's compiled CSR kernels (``csr_matvecs`` accumulates into a given output), or None."""
    try:
        from scipy.sparse import _sparsetools
    except ImportError:  # pragma: no cover - a SciPy without the module: use the public API
        return None
    return _sparsetools if hasattr(_sparsetools, "csr_matvecs") else None


def _cpu_sparse(backend: Backend, *arrays: Any) -> Any:
    """The compiled kernels when every array is a contiguous NumPy array of one float dtype."""
    if not _is_numpy(backend.xp) or backend.sparse is None:
        return None
    dtype = arrays[0].dtype
    if dtype not in (np.float32, np.float64):
        return None
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
            return None
    return _sparsetools()


def code_times(backend: Backend, indices: Any, values: Any, weights: Any) -> Any:
    """Hc @ W for a row-sparse code Hc (B×H) and dense W (H×D): B×D.

    On the CPU each thread of :func:`split_run` takes a block of rows: Y[i] = Σ_j v_ij W[idx_ij].
    """
    xp = backend.xp
    tools = _cpu_sparse(backend, values, weights)
    if tools is not None:
        rows, k = indices.shape
        n_units, dim = weights.shape
        out = np.zeros((rows, dim), dtype=weights.dtype)
        cols = np.ascontiguousarray(indices, dtype=np.int32).reshape(-1)
        data = values.reshape(-1)
        ptr = _row_pointers(np, rows, k)
        w = weights.reshape(-1)

        def part(lo: int, hi: int) -> None:
            tools.csr_matvecs(
                hi - lo, n_units, dim, ptr[: hi - lo + 1], cols[lo * k : hi * k],
                data[lo * k : hi * k], w, out[lo:hi].reshape(-1),
            )  # fmt: skip

        split_run(part, rows, min_size=min_rows(k * dim))
        return out
    if backend.sparse is not None:
        return xp.asarray(_csr(backend, indices, values, weights.shape[0]) @ weights)
    return xp.einsum("bk,bkd->bd", values, weights[indices])


def code_transpose_times(
    backend: Backend, indices: Any, values: Any, dense: Any, n_units: int
) -> Any:
    """Hcᵀ @ X for a row-sparse Hc (B×H) and dense X (B×D): H×D.

    ``values`` and ``dense`` may also be equal-length sequences of codes sharing ``indices``
    and of dense matrices: the result is then Σ_t Hc_tᵀ X_t (the tied-weight gradient
    dZᵀX + Hcᵀ G in one pass). On the CPU the kept entries are sorted by unit once (a
    counting sort), so each unit's output row is accumulated in cache from the rows of X
    that use it, and threads split the units.
    """
    xp = backend.xp
    pairs = (
        list(zip(values, dense, strict=True))
        if isinstance(values, (list, tuple))
        else [(values, dense)]
    )
    tools = _cpu_sparse(backend, *(a for pair in pairs for a in pair))
    if tools is not None:
        return _unit_major_products(tools, indices, pairs, n_units)
    total = None
    for vals, dense_t in pairs:
        if backend.sparse is not None:
            term = xp.asarray(_csr(backend, indices, vals, n_units).T @ dense_t)
        else:
            term = xp.zeros((n_units, dense_t.shape[1]), dtype=dense_t.dtype)
            xp.add.at(
                term,
                indices.ravel(),
                (vals[:, :, None] * dense_t[:, None, :]).reshape(-1, dense_t.shape[1]),
            )
        if total is None:
            total = term
        else:
            total += term
    return total


def _unit_major_products(tools: Any, indices: Any, pairs: list[Any], n_units: int) -> Any:
    rows, k = indices.shape
    dim = pairs[0][1].shape[1]
    flat = indices.reshape(-1)
    # Stable counting sort of the kept entries by unit: radix sort on 16-bit keys.
    keys = flat.astype(np.int16 if n_units <= np.iinfo(np.int16).max else np.int32)
    order = np.argsort(keys, kind="stable")
    ptr = np.zeros(n_units + 1, dtype=np.int32)
    np.cumsum(np.bincount(flat, minlength=n_units), out=ptr[1:])
    sample = (order // k).astype(np.int32)  # the row of X each sorted entry reads
    sorted_values = [vals.reshape(-1)[order] for vals, _ in pairs]
    out = np.zeros((n_units, dim), dtype=pairs[0][1].dtype)

    def part(lo: int, hi: int) -> None:
        a, b = int(ptr[lo]), int(ptr[hi])
        sub_ptr = ptr[lo : hi + 1] - ptr[lo]
        target = out[lo:hi].reshape(-1)
        for data, (_, dense_t) in zip(sorted_values, pairs, strict=True):
            tools.csr_matvecs(
                hi - lo, rows, dim, sub_ptr, sample[a:b], data[a:b], dense_t.reshape(-1), target
            )

    split_run(part, n_units, min_size=min_rows(rows * k * dim // max(1, n_units)))
    return out


def gathered_dot(backend: Backend, dense: Any, weights: Any, indices: Any) -> Any:
    """(G @ Wᵀ) at the kept entries only: out[i, j] = G[i] · W[indices[i, j]], B×k.

    On the CPU the k weight rows of a block of samples are gathered into a cache-sized
    buffer and multiplied there (a batched matrix-vector product), so the B×k×D gather is
    never held in memory at once; threads split the samples.
    """
    xp = backend.xp
    rows, k = indices.shape
    if not _is_numpy(xp):
        return xp.matmul(weights[indices], dense[:, :, None])[:, :, 0]
    dtype = np.result_type(dense, weights)
    out = np.empty((rows, k), dtype=dtype)
    if rows == 0 or k == 0:
        return out
    dim = weights.shape[1]
    block = max(1, min(rows, GATHER_BLOCK_BYTES // max(1, k * dim * dtype.itemsize)))

    def part(lo: int, hi: int) -> None:
        gathered = np.empty((min(block, hi - lo), k, dim), dtype=weights.dtype)
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            buf = gathered[: stop - start]
            np.take(weights, indices[start:stop], axis=0, out=buf, mode="clip")  # unbuffered
            np.matmul(buf, dense[start:stop, :, None], out=out[start:stop, :, None])

    split_run(part, rows, min_size=min_rows(k * dim))
    return out


def column_sums(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    """Σ_rows of a row-sparse matrix: length-H vector."""
    xp = backend.xp
    out = xp.zeros(n_units, dtype=values.dtype)
    xp.add.at(out, indices.ravel(), values.ravel())  # bincount would upcast to float64
    return out
