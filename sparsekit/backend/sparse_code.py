"""Products with a sparse code, on any backend.

A top-k support keeps k of H units in every row, so the code is a B×H matrix with k nonzeros
per row, given by ``indices`` (B×k) and ``values`` (B×k). These kernels compute the decoder
product and the gradient terms from the k columns alone (B·k·D multiply-adds instead of
B·H·D), as ``docs/methods.md`` ("Why sparsity should make training cheaper") describes. When
the backend has no sparse module they fall back to gathering the k rows of W, which costs the
same arithmetic.

Every kernel keeps the dtype of its inputs (float32 stays float32) and allocates nothing
larger than its result plus a cache-sized scratch block. On the CPU, threads of
:func:`~sparsekit.backend.threads.split_run` split the rows or units.

A code with no fixed count per row (Arora et al.'s thresholded code, about 2% nonzero) is
kept as an ordinary B×H array; :func:`nonzero_times` and :func:`nonzero_transpose_times`
multiply it by its nonzeros alone when they are few enough to pay for finding them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sparsekit.backend import Backend, fused
from sparsekit.backend.threads import matmul, min_rows, split_run, work_shares

#: Bytes of gathered weight rows per block in :func:`gathered_dot` when its rows are split
#: over threads: each block makes two NumPy calls, and with smaller blocks two threads wait
#: for each other's GIL (256 KiB: 17.6 against 9.4 ms at 2 MiB; batch 4,096, k 32, 256 wide).
GATHER_BLOCK_BYTES = 1 << 21
#: The same on one thread, where no other thread waits for the GIL: a block that stays in
#: a core's L2 cache while it is multiplied. Intel Xeon (2 MiB L2 a core), batch 4,096, k 32:
#: 20.2 → 12.6 ms at 256 wide, 58.0 → 41.9 ms at 768 wide (2 MiB → 512 KiB).
GATHER_BLOCK_BYTES_ALONE = 1 << 19
#: The same for :func:`kept_gathered_dot`, whose blocks make a dozen small NumPy calls each
#: (per Matryoshka group: a row gather, a gemv a row, a mask): with 2 MiB blocks two threads
#: spent their time waiting for the GIL. Matryoshka 256 → 4,096, interleaved in one process
#: (AMD EPYC, AVX2): two threads 36.5 → 28.2 ms, one thread 40.4 → 35.9 ms; 4 MiB 32.4 ms,
#: 16 MiB 31.2 ms (two threads). The bits do not depend on the block (tested).
KEPT_BLOCK_BYTES = 1 << 23


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


@fused.op
def code_times(backend: Backend, indices: Any, values: Any, weights: Any) -> Any:
    """Hc @ W for a row-sparse code Hc (B×H) and dense W (H×D): B×D.

    On the CPU each thread of :func:`split_run` takes a block of rows: Y[i] = Σ_j v_ij W[idx_ij],
    added in the order of ``indices`` (SciPy's CSR kernel). The fused twin adds in the same
    order, four rows of W at a time, so the bits are the same; where each row has several
    entries in a cache-sized tile of W and its indices increase, it takes W a tile at a time.
    It skips entries whose value is zero, which add nothing (a padded code's padding, a
    Matryoshka prefix's other groups), so a NaN or infinity in W at such an entry does not
    reach the result either.
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


@code_times.twin
def _code_times_fused(backend: Backend, indices: Any, values: Any, weights: Any) -> Any:
    if not _row_sparse_usable(backend, indices, values, weights) or values.shape[0] == 0:
        return fused.NOT_RUN
    rows, k = indices.shape
    indices = np.ascontiguousarray(indices)
    increasing = k < 2 or bool((indices[:, 1:] > indices[:, :-1]).all())
    lengths = _row_lengths([values])
    if lengths is None:
        return fused.NOT_RUN
    per_row = -(-int(lengths.sum()) // rows)
    out = _rows_times(indices, lengths, values, False, weights, per_row, increasing)
    return fused.NOT_RUN if out is None else out


@fused.op
def code_transpose_times(
    backend: Backend, indices: Any, values: Any, dense: Any, n_units: int
) -> Any:
    """Hcᵀ @ X for a row-sparse Hc (B×H) and dense X (B×D): H×D.

    ``values`` and ``dense`` may also be equal-length sequences of codes sharing ``indices``
    and of dense matrices: the result is then Σ_t Hc_tᵀ X_t (the tied-weight gradient
    dZᵀX + Hcᵀ G in one pass). On the CPU the kept entries are sorted by unit once (a
    counting sort), so each unit's output row is accumulated in cache from the rows of X
    that use it, and threads split the units. The fused twin does the same in one compiled
    pass, four rows of X at a time in the same order (the same bits), skipping entries whose
    value is zero as :func:`code_times` does.
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


@code_transpose_times.twin
def _code_transpose_times_fused(
    backend: Backend, indices: Any, values: Any, dense: Any, n_units: int
) -> Any:
    many = isinstance(values, (list, tuple))
    vals, denses = (list(values), list(dense)) if many else ([values], [dense])
    if len(vals) != len(denses) or not all(
        _row_sparse_usable(backend, indices, v, d) and d.shape[0] == v.shape[0]
        for v, d in zip(vals, denses, strict=True)
    ):
        return fused.NOT_RUN
    indices = np.ascontiguousarray(indices)
    pairs = list(zip(vals, denses, strict=True))
    out = np.zeros((n_units, denses[0].shape[1]), dtype=denses[0].dtype)
    lengths = _row_lengths(vals)
    if lengths is None or not _units_times(indices, lengths, n_units, False, pairs, out):
        return fused.NOT_RUN
    return out


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
    never held in memory at once; threads split the samples. A padded code (BatchTopK's)
    goes to :func:`kept_gathered_dot` instead.
    """
    xp = backend.xp
    rows, k = indices.shape
    if not _is_numpy(xp):
        return xp.matmul(weights[indices], dense[:, :, None])[:, :, 0]
    dtype = np.result_type(dense, weights)
    out = np.empty((rows, k), dtype=dtype)
    if rows == 0 or k == 0:
        return out
    row_bytes = max(1, k * weights.shape[1] * dtype.itemsize)

    def part(lo: int, hi: int) -> None:
        alone = hi - lo == rows  # one part: no other thread waits for the GIL between blocks
        block_bytes = GATHER_BLOCK_BYTES_ALONE if alone else GATHER_BLOCK_BYTES
        block = max(1, min(hi - lo, block_bytes // row_bytes))
        gathered = np.empty((block, k, weights.shape[1]), dtype=weights.dtype)
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            buf = gathered[: stop - start]
            np.take(weights, indices[start:stop], axis=0, out=buf, mode="clip")  # unbuffered
            np.matmul(buf, dense[start:stop, :, None], out=out[start:stop, :, None])

    split_run(part, rows, min_size=min_rows(k * weights.shape[1]))
    return out


#: Columns a BLAS matrix-vector kernel takes together. A product's column j has the same bits
#: whatever the product's width n as long as j falls in a full group of them (j < n − n mod 4
#: for OpenBLAS's sgemv/dgemv), which :func:`_compact_widths_exact` checks on the BLAS at hand.
BLAS_COLUMN_GROUP = 4

_compact_exact: dict[tuple[str, int], bool] = {}


def _compact_widths_exact(dtype: np.dtype, dim: int) -> bool:
    """Whether this BLAS's batched matrix-vector products give a column the same bits at any
    width that leaves it in a full :data:`BLAS_COLUMN_GROUP`, for vectors of length ``dim``:
    measured once per (dtype, dim) on random products of the shapes
    :func:`kept_gathered_dot` makes, narrow and wide, with every remainder."""
    key = (np.dtype(dtype).char, dim)
    if key not in _compact_exact:
        rng = np.random.default_rng(0)
        exact = True
        for width in (5, 14, 31, 67, 130):
            w = rng.standard_normal((3, width, dim)).astype(dtype)
            g = rng.standard_normal((3, dim)).astype(dtype)
            whole = np.matmul(w, g[:, :, None])
            full = width - width % BLAS_COLUMN_GROUP
            for n in range(BLAS_COLUMN_GROUP, full + 1, BLAS_COLUMN_GROUP):
                part = np.matmul(np.ascontiguousarray(w[:, :n]), g[:, :, None])
                exact = exact and np.array_equal(part, whole[:, :n])
        _compact_exact[key] = exact
    return _compact_exact[key]


def kept_gathered_dot(
    backend: Backend,
    dense: Any,
    weights: Any,
    indices: Any,
    values: Any,
    groups: Any = None,
) -> Any:
    """(G @ Wᵀ) at the kept entries of a padded code (BatchTopK's ``indices`` and
    ``values``, each row's kept entries first, then padding of value 0): B×m, G[i] ·
    W[indices[i, j]] at the kept entries with :func:`gathered_dot`'s bits, 0 at the padding.

    :func:`gathered_dot` multiplies every row over the code's whole width, the longest
    row's: in a BatchTopK batch whose longest row keeps 13 times the mean, 13 times the
    work. Here a row is multiplied over its count rounded up to :data:`BLAS_COLUMN_GROUP`
    (rows of one width gathered and multiplied together), which gives every kept entry the
    bits of the whole-width product on a BLAS where :func:`_compact_widths_exact` holds;
    where it does not, every row takes the whole width, as before.

    With ``groups`` (Matryoshka: B×m, entry j of row i belongs to group groups[i, j])
    ``dense`` is a sequence of matrices, one per group, sharing each gather, and an entry
    gets its own group's product: Σ_q (G_q W_rowsᵀ) ⊙ 1[groups = q], summed in q's order.
    """
    xp = backend.xp
    denses = list(dense) if isinstance(dense, (list, tuple)) else [dense]
    if (groups is None) != (len(denses) == 1):
        raise ValueError("kept_gathered_dot: one matrix, or one per group with groups")
    rows, width = indices.shape
    counts = xp.count_nonzero(values, axis=1)  # a row's kept entries come first
    live = xp.arange(width)[None, :] < counts[:, None]
    if not _is_numpy(xp):  # a device: the whole width in one product per matrix
        gathered = weights[indices]
        out = xp.zeros((rows, width), dtype=denses[0].dtype)
        for q, g in enumerate(denses):
            dots = xp.matmul(gathered, g[:, :, None])[:, :, 0]
            out += dots if groups is None else dots * (groups == q)
        return xp.where(live, out, 0)
    dtype = np.result_type(denses[0], weights)
    out = np.zeros((rows, width), dtype=dtype)
    if rows == 0 or width == 0:
        return out
    dim = weights.shape[1]
    spans = np.full(rows, width, dtype=np.int64)
    full = width - width % BLAS_COLUMN_GROUP
    if _compact_widths_exact(dtype, dim):
        group = BLAS_COLUMN_GROUP
        rounded = (np.asarray(counts, dtype=np.int64) + group - 1) // group * group
        spans = np.where(rounded <= full, rounded, width)
    # Rows of one span are gathered and multiplied together. One split over all the rows,
    # each thread an equal share of the work (rows × span) taking its spans in turn: a split
    # per span handed work over dozens of times a call (and slowed it on two threads).
    order = np.argsort(spans, kind="stable")
    sorted_spans = spans[order]
    work = np.cumsum(sorted_spans * (dim * len(denses)))
    shares = work_shares(int(work[-1]))
    cuts = np.searchsorted(work, work[-1] * np.arange(shares + 1) / shares, side="left")
    cuts[0], cuts[-1] = 0, rows

    def share(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            start, stop = int(cuts[i]), int(cuts[i + 1])
            bounds = np.flatnonzero(np.diff(sorted_spans[start:stop])) + 1
            for chunk in np.split(order[start:stop], bounds):
                span = int(spans[chunk[0]]) if chunk.size else 0
                if span:
                    _kept_dots_rows(denses, weights, indices, groups, chunk, span, out)

    split_run(share, shares, min_size=2)
    out *= live  # the padding's dots (computed where a row took the whole width) dropped
    return out


def _kept_dots_rows(
    denses: list[Any], weights: Any, indices: Any, groups: Any, rows: Any, span: int, out: Any
) -> None:
    """:func:`kept_gathered_dot` for ``rows``, all over their first ``span`` entries: the
    weight rows of a cache-sized block gathered once and multiplied by every matrix (each
    row's products are its own gemv calls, so blocks and threads leave the bits alone)."""
    dim = weights.shape[1]
    row_bytes = span * dim * weights.dtype.itemsize
    block = max(1, min(rows.shape[0], KEPT_BLOCK_BYTES // max(1, row_bytes)))
    buf = np.empty((block, span, dim), dtype=weights.dtype)
    dots = np.empty((block, span, 1), dtype=out.dtype)
    for start in range(0, rows.shape[0], block):
        r = rows[start : start + block]
        n = r.shape[0]
        np.take(weights, indices[r, :span], axis=0, out=buf[:n], mode="clip")
        if groups is None:
            np.matmul(buf[:n], denses[0][r][:, :, None], out=dots[:n])
            out[r, :span] = dots[:n, :, 0]
            continue
        acc = np.zeros((n, span), dtype=out.dtype)
        member = groups[r, :span]
        for q, g in enumerate(denses):
            np.matmul(buf[:n], g[r][:, :, None], out=dots[:n])
            acc += dots[:n, :, 0] * (member == q)
        out[r, :span] = acc


@fused.op
def column_sums(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    """Σ_rows of a row-sparse matrix: length-H vector, each unit's entries added in
    row-major order in the values' dtype.

    The fused twin adds in the same order, skipping entries whose value is zero: they add
    nothing to a sum that starts at +0, so the bits are the same, and a BatchTopK code's
    padding (hundreds of entries a row where the longest row is long) costs nothing.
    """
    xp = backend.xp
    out = xp.zeros(n_units, dtype=values.dtype)
    xp.add.at(out, indices.ravel(), values.ravel())  # bincount would upcast to float64
    return out


@column_sums.twin
def _column_sums_fused(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    out = _scatter(_column_sums_loop, indices, values, n_units)
    return fused.NOT_RUN if out is None else out


@fused.loop
def _column_sums_loop(indices, values, out):  # pragma: no cover - runs compiled
    rows, k = values.shape
    for i in range(rows):
        for j in range(k):
            v = values[i, j]
            if v != 0:
                out[indices[i, j]] += v


def _scatter(scatter_loop: Any, indices: Any, values: Any, n_units: int) -> Any:
    """A length-n_units array of the values' dtype, zeros that ``scatter_loop`` filled from a
    row-sparse code; None when the loops cannot take it: NumPy arrays of one 2-D shape,
    float values, and every index inside the n_units outputs (the loops do not check
    bounds; the reference raises on a bad index)."""
    if (
        not fused.usable(values)
        or values.ndim != 2
        or not isinstance(indices, np.ndarray)
        or indices.shape != values.shape
        or indices.dtype.kind not in "iu"
    ):
        return None
    if indices.size and not (0 <= int(indices.min()) and int(indices.max()) < n_units):
        return None
    idx = np.ascontiguousarray(indices)
    out = np.zeros(n_units, dtype=values.dtype)
    fn = scatter_loop.ready(values.dtype.char + idx.dtype.char, idx[:0], values[:0], out)
    if fn is None:
        return None
    fn(idx, values, out)
    return out


@fused.op
def fired_units(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    """Boolean length-H vector: the units with a positive value at some entry of a row-sparse
    code (a TopK or BatchTopK batch's firing latents). The fused twin marks them in one pass;
    no boolean-mask indexing on a device (its size would be read back)."""
    xp = backend.xp
    fired = xp.zeros(n_units, dtype=xp.int32)
    xp.add.at(fired, indices.ravel(), (values > 0).ravel())
    return fired > 0


@fired_units.twin
def _fired_units_fused(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    marks = _scatter(_fired_units_loop, indices, values, n_units)
    return fused.NOT_RUN if marks is None else marks > 0


@fused.loop
def _fired_units_loop(indices, values, out):  # pragma: no cover - runs compiled
    rows, k = values.shape
    for i in range(rows):
        for j in range(k):
            if values[i, j] > 0:
                out[indices[i, j]] = 1


# -- products with a mostly-zero B×H matrix (Arora's code, the AuxK code) -----------------------

#: Largest share of nonzeros at which the nonzero ops multiply by the nonzeros alone; denser
#: matrices go to BLAS. At 15% each op measured at most 0.76× BLAS at Arora's and at AuxK's
#: block shapes (docs/performance.md, "Arora's products, and AuxK's").
NONZERO_DENSITY = 0.15

#: Bytes of the tile of W's rows that :func:`nonzero_times` and :func:`nonzero_masked_times`
#: keep in cache while every row of A takes its nonzeros there (half a 1 MiB L2 cache,
#: leaving room for the rows of A and of the result).
NONZERO_TILE_BYTES = 1 << 19


def _tile_rows(w: np.ndarray, per_row: int, increasing: bool) -> int:
    """Rows of W in a tile: about NONZERO_TILE_BYTES, when each row of the code has at least
    four entries a tile on average and its columns increase (a row's entries are then taken
    tile by tile in their own order); otherwise all of W (a row's out[i] would be read
    and written once for every tile, for fewer than four rows of W each time)."""
    units = w.shape[0]
    tile = max(16, NONZERO_TILE_BYTES // max(1, w.shape[1] * w.dtype.itemsize))
    if not increasing or per_row * tile < 4 * units:
        return max(1, units)
    return tile


def _row_lengths(values: list[Any]) -> np.ndarray | None:
    """Each row's entries up to its last one whose value is nonzero in any of ``values``
    (codes of one shape): the twins skip zero entries, so those after it add nothing, and
    a padded code's padding (BatchTopK's, ten times its kept entries in a long batch) is
    neither scanned nor sorted. None when the loop cannot run."""
    rows, width = values[0].shape
    lengths = np.zeros(rows, dtype=np.int64)
    fns = [_row_lengths_loop.ready(vals.dtype.char, vals[:0], lengths[:0]) for vals in values]
    if any(fn is None for fn in fns):
        return None

    def part(lo: int, hi: int) -> None:
        for fn, vals in zip(fns, values, strict=True):
            fn(vals[lo:hi], lengths[lo:hi])

    # a row's scan ends at its last nonzero: a padded batch's rows are long (Matryoshka's
    # groups: a few entries each at the front of 272), worth the threads
    split_run(part, rows, min_size=min_rows(width * len(values)))
    return lengths


@fused.loop
def _row_lengths_loop(vals, lengths):  # pragma: no cover - runs compiled
    for i in range(vals.shape[0]):
        t = vals.shape[1]
        while t > lengths[i] and vals[i, t - 1] == 0:
            t -= 1
        if t > lengths[i]:
            lengths[i] = t


def _row_sparse_usable(backend: Backend, indices: Any, values: Any, dense: Any) -> bool:
    """Whether the twins take a row-sparse code with a dense matrix: contiguous NumPy arrays,
    values and dense of one float dtype, integer indices of the values' shape."""
    return (
        _is_numpy(backend.xp)
        and isinstance(indices, np.ndarray)
        and indices.ndim == 2
        and indices.dtype.kind == "i"
        and isinstance(values, np.ndarray)
        and values.shape == indices.shape
        and isinstance(dense, np.ndarray)
        and dense.ndim == 2
        and fused.usable(values)
        and dense.dtype == values.dtype
        and dense.flags.c_contiguous
    )


def _rows_times(
    cols: Any, counts: Any, vals: Any, by_column: bool, w: Any, per_row: int, increasing: bool
) -> Any:
    """Σ_t v(i, t) W[cols[i, t]] for t < counts[i], row by row on threads: None when the loop
    cannot run. v(i, t) is vals[i, cols[i, t]] (``by_column``, a B×H matrix) or vals[i, t]."""
    tile = _tile_rows(w, per_row, increasing)
    key = vals.dtype.char + cols.dtype.char
    fn = _rows_times_loop.ready(key, cols[:0], counts[:0], vals[:0], by_column, w, w[:0], tile)
    if fn is None:
        return None
    out = np.empty((cols.shape[0], w.shape[1]), dtype=w.dtype)
    split_run(
        lambda lo, hi: fn(cols[lo:hi], counts[lo:hi], vals[lo:hi], by_column, w, out[lo:hi], tile),
        cols.shape[0],
        min_size=min_rows(max(1, per_row) * w.shape[1]),
    )
    return out


def _units_times(
    cols: Any, counts: Any, n_units: int, by_column: bool, pairs: list[Any], out: Any
) -> bool:
    """out += Σ_pairs Σ_{i,t} v(i, t) R[i] into row cols[i, t], unit by unit (each unit's
    entries in increasing i, then t), units split over threads; False when the loops cannot
    run. v as in :func:`_rows_times`, from each pair's (vals, R)."""
    stride = pairs[0][0].shape[1]
    ptr = np.zeros(n_units + 1, dtype=np.int64)
    nnz = int(counts.sum())
    entry = np.empty(nnz, dtype=np.int64)
    sort = _by_unit_loop.ready(
        cols.dtype.char, cols[:0], counts[:0], stride, by_column, ptr[:1].copy(), entry[:0]
    )
    fns = [
        _units_times_loop.ready(v.dtype.char, ptr[:1], entry[:0], stride, v[:0], r[:0], out, 0, 0)
        for v, r in pairs
    ]
    if sort is None or any(fn is None for fn in fns):
        return False
    sort(cols, counts, stride, by_column, ptr, entry)
    dim = out.shape[1]

    def part(lo: int, hi: int) -> None:
        for fn, (v, r) in zip(fns, pairs, strict=True):
            fn(ptr, entry, stride, v, r, out, lo, hi)

    split_run(part, n_units, min_size=min_rows(max(1, nnz * dim * len(pairs) // max(1, n_units))))
    return True


@fused.op
def nonzero_times(xp: Any, a: Any, w: Any, nonzeros: Nonzeros | None = None) -> Any:
    """A W for a B×H matrix A that is mostly zeros and a dense H×D matrix W: B×D.

    The fused twin finds A's nonzeros row by row and adds up only their rows of W
    (Y[i] = Σ_{j: A_ij ≠ 0} A_ij W[j], in increasing j), when at most :data:`NONZERO_DENSITY`
    of A is nonzero; the sums then differ from BLAS's by rounding only. The zeros are skipped,
    so a NaN or infinity in W where A is zero does not reach the result. ``nonzeros`` (from
    :func:`find_nonzeros`, of A or of a matrix that is zero wherever A is; :data:`DENSE`
    where it found none worth using) spares the twin finding them again.
    """
    return matmul(a, w)


@nonzero_times.twin
def _nonzero_times_fused(xp: Any, a: Any, w: Any, nonzeros: Nonzeros | None = None) -> Any:
    chains = a.shape[-1:] == w.shape[:1]
    found = _nonzeros(a, w, nonzeros) if chains else None  # else the reference's error
    if found is None:
        return fused.NOT_RUN
    per_row = found.nnz // max(1, a.shape[0])
    result = _rows_times(found.cols, found.counts, a, True, w, per_row, True)
    return fused.NOT_RUN if result is None else result


@fused.op
def nonzero_transpose_times(
    xp: Any, a: Any, r: Any, add_to: Any = None, nonzeros: Nonzeros | None = None
) -> Any:
    """Aᵀ R for a B×H matrix A that is mostly zeros and a dense B×D matrix R: H×D, or
    ``add_to`` + Aᵀ R written into ``add_to`` (a sum over blocks of rows, without an H×D
    temporary for each block).

    The fused twin, under the same conditions as :func:`nonzero_times`, adds up for every
    unit j the rows R[i] with A_ij ≠ 0 (in increasing i); threads split the units.
    """
    if add_to is None:
        return matmul(a.T, r)
    add_to += matmul(a.T, r)
    return add_to


@nonzero_transpose_times.twin
def _nonzero_transpose_times_fused(
    xp: Any, a: Any, r: Any, add_to: Any = None, nonzeros: Nonzeros | None = None
) -> Any:
    chains = a.shape[:1] == r.shape[:1] and (
        add_to is None or (add_to.shape == (a.shape[1], r.shape[1]) and fused.usable(add_to))
    )
    found = _nonzeros(a, r, nonzeros) if chains else None  # else the reference's error or copy
    if found is None or (add_to is not None and add_to.dtype != a.dtype):
        return fused.NOT_RUN
    out = np.zeros((a.shape[1], r.shape[1]), dtype=a.dtype) if add_to is None else add_to
    if not _units_times(found.cols, found.counts, a.shape[1], True, [(a, r)], out):
        return fused.NOT_RUN
    return out


@fused.op
def nonzero_masked_times(
    xp: Any, a: Any, g: Any, w: Any, nonzeros: Nonzeros | None = None
) -> Any:
    """(G Wᵀ) at the nonzeros of a B×H matrix A that is mostly zeros, 0 elsewhere: B×H, for a
    dense B×D matrix G and H×D matrix W (the gradient reaching a sparse code's kept entries).

    The fused twin computes only the dot products G[i]·W[j] with A_ij ≠ 0, under the same
    conditions as :func:`nonzero_times`; its sums differ from BLAS's by rounding only.
    ``nonzeros``, when given, must be A's own (:func:`find_nonzeros`): the dot products are
    taken at exactly those entries.
    """
    out = matmul(g, w.T)
    out *= a != 0
    return out


@nonzero_masked_times.twin
def _nonzero_masked_times_fused(
    xp: Any, a: Any, g: Any, w: Any, nonzeros: Nonzeros | None = None
) -> Any:
    found = (
        _nonzeros(a, g, nonzeros)
        if a.shape[:1] == g.shape[:1] and a.shape[1:] == w.shape[:1] and g.shape[1:] == w.shape[1:]
        else None  # the reference's error
    )
    if found is None or not fused.usable(g, g) or w.dtype != a.dtype or not w.flags.c_contiguous:
        return fused.NOT_RUN
    cols, counts, nnz = found
    zero = a.dtype.type(0)
    tile = _tile_rows(w, nnz // max(1, a.shape[0]), True)
    fn = _nonzero_masked_times_loop.ready(
        a.dtype.char, cols[:0], counts[:0], g[:0], w, a[:0], zero, tile
    )
    if fn is None:
        return fused.NOT_RUN
    out = np.zeros(a.shape, dtype=a.dtype)
    split_run(
        lambda lo, hi: fn(cols[lo:hi], counts[lo:hi], g[lo:hi], w, out[lo:hi], zero, tile),
        a.shape[0],
        min_size=min_rows(max(1, nnz // max(1, a.shape[0])) * w.shape[1]),
    )
    return out


@fused.op
def split_code(xp: Any, indices: Any, values: Any, ends: list[int]) -> tuple[Any, list[Any]]:
    """A row-sparse code split at increasing column ends (Matryoshka's prefix groups): each
    kept entry's part q (how many ends are ≤ its column) and, for every part, the code's
    values times 1[part = q] at the same entries.

    The fused twin does it in one pass over the rows (on threads) instead of a search and
    a product a part, with NumPy's bits (v·1 and v·0: -0.0, NaN and 0·inf alike).
    """
    group = xp.searchsorted(xp.asarray(ends), indices, side="right")
    return group, [values * (group == q) for q in range(len(ends))]


@split_code.twin
def _split_code_fused(xp: Any, indices: Any, values: Any, ends: list[int]) -> Any:
    if not (
        fused.usable(values)
        and values.ndim == 2
        and isinstance(indices, np.ndarray)
        and indices.shape == values.shape
        and indices.dtype.kind == "i"
        and indices.flags.c_contiguous
    ):
        return fused.NOT_RUN
    bounds = np.asarray(ends, dtype=np.int64)
    group = np.empty(values.shape, dtype=np.intp)  # searchsorted's dtype
    parts = np.empty((len(ends), *values.shape), dtype=values.dtype)
    one, zero = values.dtype.type(1), values.dtype.type(0)
    args = (indices, values, bounds, group, parts)
    fn = _split_code_loop.ready(values.dtype.char + indices.dtype.char, *args, 0, 0, one, zero)
    if fn is None:  # (rows 0 to 0 when compiling: nothing written)
        return fused.NOT_RUN
    rows, width = values.shape
    split_run(
        lambda lo, hi: fn(*args, lo, hi, one, zero),
        rows,
        min_size=min_rows(width * (len(ends) + 2)),
    )
    return group, list(parts)


@fused.loop
def _split_code_loop(indices, values, ends, group, parts, lo, hi, one, zero):  # pragma: no cover
    for i in range(lo, hi):
        for t in range(values.shape[1]):
            j = indices[i, t]
            q = 0
            for e in range(ends.shape[0]):
                q += ends[e] <= j
            group[i, t] = q
            v = values[i, t]
            for p in range(ends.shape[0]):
                parts[p, i, t] = v * (one if p == q else zero)  # NumPy's v·1[group = p]


class Nonzeros(NamedTuple):
    """Where a B×H matrix may be nonzero: row i's columns in ``cols[i, :counts[i]]``,
    increasing, ``nnz`` in all (from :func:`find_nonzeros`)."""

    cols: Any
    counts: Any
    nnz: int


#: What to pass as ``nonzeros=`` for a matrix :func:`find_nonzeros` found too dense (or could
#: not take): the nonzero ops then run BLAS's product without looking for the nonzeros again.
DENSE = Nonzeros(None, None, -1)


def find_nonzeros(a: Any) -> Nonzeros | None:
    """A's nonzeros, for several products with A, or with matrices that are zero wherever A
    is, to share (``nonzeros=``) instead of each finding them again. None where the twins
    cannot take A or it is too dense to gain (more than :data:`NONZERO_DENSITY` nonzero)."""
    if not _scannable(a):
        return None
    rows, units = a.shape
    cols = np.empty((rows, units), dtype=np.int32)
    counts = np.empty(rows, dtype=np.int64)
    limit = int(NONZERO_DENSITY * a.size)
    fn = _row_nonzeros_loop.ready(a.dtype.char, a[:0], cols[:0], counts[:0], limit)
    if fn is None:
        return None
    found: list[int] = []

    def part(lo: int, hi: int) -> None:
        found.append(fn(a[lo:hi], cols[lo:hi], counts[lo:hi], limit))

    # One thread up to min_rows: waking a second one costs more than its half of the scan
    # (256×1000: 109 µs on one thread, 146 µs on two, on the machine of performance.md).
    split_run(part, rows, min_size=min_rows(units))
    nnz = sum(found)
    if nnz > limit:  # a part that passed the limit stopped there: too dense to gain
        return None
    return Nonzeros(cols, counts, nnz)


def _scannable(a: Any) -> bool:
    """Whether the loops can scan A: a non-empty C-contiguous 2-D NumPy float array."""
    return (
        isinstance(a, np.ndarray)
        and a.ndim == 2
        and a.dtype in (np.float32, np.float64)
        and a.flags.c_contiguous
        and a.size > 0
    )


def _nonzeros(a: Any, other: Any, given: Nonzeros | None) -> Nonzeros | None:
    """``given`` or A's nonzeros, when the twins can take A with ``other`` (contiguous
    NumPy arrays of one float dtype); None when they cannot, or A is too dense to gain
    (``given`` is :data:`DENSE`)."""
    if given is DENSE or not (
        _scannable(a)
        and isinstance(other, np.ndarray)
        and other.ndim == 2
        and other.dtype == a.dtype
        and other.flags.c_contiguous
    ):
        return None
    if given is not None:
        if given.cols.shape[0] != a.shape[0] or given.cols.shape[1] > a.shape[1]:
            raise ValueError(
                f"nonzeros of a {given.cols.shape[0]}-row matrix given for {a.shape[0]}×"
                f"{a.shape[1]}"
            )
        return given
    return find_nonzeros(a)


@fused.loop
def _row_nonzeros_loop(a, cols, counts, limit):  # pragma: no cover - runs compiled
    total = 0
    for i in range(a.shape[0]):
        n = 0
        row = cols[i]
        for j in range(a.shape[1]):
            row[n] = j  # kept when n moves on (no branch: a few percent are nonzero)
            n += a[i, j] != 0  # NaN too: it is not zero
        counts[i] = n
        total += n
        if total > limit:  # too dense for the nonzero products: stop looking
            break
    return total


@fused.loop
def _rows_times_loop(cols, counts, vals, by_column, w, out, tile):  # pragma: no cover
    dim = w.shape[1]
    rows = cols.shape[0]
    done = np.zeros(rows, dtype=np.int64)  # each row's entries taken so far
    js = np.empty(4, dtype=np.int64)
    vs = np.empty(4, dtype=out.dtype)
    for i in range(rows):
        for d in range(dim):
            out[i, d] = 0
    # W a tile of `tile` rows at a time, every row taking its entries in the tile (their
    # columns increase, or the tile is all of W): the tile stays in cache for all of them.
    # Each out[i] still adds its terms in its entries' order, four rows of W at a time in
    # the order one at a time adds them: the same bits.
    for start in range(0, w.shape[0], tile):
        stop = start + tile
        for i in range(rows):
            o = out[i]
            t = done[i]
            end = t
            while end < counts[i] and cols[i, end] < stop:
                end += 1
            while t < end:
                # the next four entries whose value is not zero (a zero adds nothing to a
                # sum that is never -0: skipping it keeps the bits, and a padded row's
                # padding costs nothing)
                n = 0
                while t < end and n < 4:
                    j = cols[i, t]
                    v = vals[i, j] if by_column else vals[i, t]
                    t += 1
                    if v != 0:
                        js[n] = j
                        vs[n] = v
                        n += 1
                if n == 4:
                    v0, v1, v2, v3 = vs[0], vs[1], vs[2], vs[3]
                    w0, w1, w2, w3 = w[js[0]], w[js[1]], w[js[2]], w[js[3]]
                    for d in range(dim):
                        o[d] = (((o[d] + v0 * w0[d]) + v1 * w1[d]) + v2 * w2[d]) + v3 * w3[d]
                else:
                    for q in range(n):
                        v0 = vs[q]
                        w0 = w[js[q]]
                        for d in range(dim):
                            o[d] += v0 * w0[d]
            done[i] = end


@fused.loop
def _by_unit_loop(cols, counts, stride, by_column, ptr, entry):  # pragma: no cover
    """A counting sort of the entries by unit: unit j's entries, in increasing row then
    slot, in entry[ptr[j]:ptr[j + 1]], each as its flat position i·stride + (column or
    slot) in the values (ptr comes zeroed, one longer than the units)."""
    for i in range(cols.shape[0]):
        for t in range(counts[i]):
            ptr[cols[i, t] + 1] += 1
    for j in range(ptr.shape[0] - 1):
        ptr[j + 1] += ptr[j]
    for i in range(cols.shape[0]):
        for t in range(counts[i]):
            j = cols[i, t]
            entry[ptr[j]] = i * stride + (j if by_column else t)
            ptr[j] += 1
    for j in range(ptr.shape[0] - 1, 0, -1):  # each pointer moved to its unit's end: back
        ptr[j] = ptr[j - 1]
    ptr[0] = 0


@fused.loop
def _units_times_loop(ptr, entry, stride, vals, r, out, lo, hi):  # pragma: no cover
    dim = r.shape[1]
    flat = vals.reshape(-1)
    es = np.empty(4, dtype=np.int64)
    for j in range(lo, hi):
        o = out[j]
        t = ptr[j]
        end = ptr[j + 1]
        # Unit j's entries in order, four at a time (the same bits as one at a time), those
        # whose value is zero skipped (as in _rows_times_loop)
        while t < end:
            n = 0
            while t < end and n < 4:
                e = entry[t]
                t += 1
                if flat[e] != 0:
                    es[n] = e
                    n += 1
            if n == 4:
                e0, e1, e2, e3 = es[0], es[1], es[2], es[3]
                v0, v1, v2, v3 = flat[e0], flat[e1], flat[e2], flat[e3]
                r0, r1, r2, r3 = r[e0 // stride], r[e1 // stride], r[e2 // stride], r[e3 // stride]
                for d in range(dim):
                    o[d] = (((o[d] + v0 * r0[d]) + v1 * r1[d]) + v2 * r2[d]) + v3 * r3[d]
            else:
                for q in range(n):
                    v0 = flat[es[q]]
                    r0 = r[es[q] // stride]
                    for d in range(dim):
                        o[d] += v0 * r0[d]


@fused.loop(fastmath={"reassoc"})
def _nonzero_masked_times_loop(cols, counts, g, w, out, zero, tile):  # pragma: no cover
    dim = w.shape[1]
    rows = out.shape[0]
    done = np.zeros(rows, dtype=np.int64)
    for start in range(0, w.shape[0], tile):  # a cached tile of W at a time, as above
        stop = start + tile
        for i in range(rows):
            gi = g[i]
            t = done[i]
            end = t
            while end < counts[i] and cols[i, end] < stop:
                end += 1
            while t + 4 <= end:  # four dot products at a time share each load of g[i]
                j0, j1, j2, j3 = cols[i, t], cols[i, t + 1], cols[i, t + 2], cols[i, t + 3]
                w0, w1, w2, w3 = w[j0], w[j1], w[j2], w[j3]
                s0 = s1 = s2 = s3 = zero
                for d in range(dim):
                    gd = gi[d]
                    s0 += gd * w0[d]
                    s1 += gd * w1[d]
                    s2 += gd * w2[d]
                    s3 += gd * w3[d]
                out[i, j0], out[i, j1], out[i, j2], out[i, j3] = s0, s1, s2, s3
                t += 4
            while t < end:
                j0 = cols[i, t]
                w0 = w[j0]
                s0 = zero
                for d in range(dim):
                    s0 += gi[d] * w0[d]
                out[i, j0] = s0
                t += 1
            done[i] = end
