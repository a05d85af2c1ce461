"""Selection kernels: which entries of the pre-activations a top-k method keeps.

The sparse methods state their selection as math (each row's k largest entries; the B·k
largest entries of the whole batch; the k_aux largest dead ones) and call these kernels for
it. How the selection is computed fast lives here, behind the one door for speed: the row
blocks that fit a cache, the threads of :func:`~sparsekit.backend.threads.split_run`, the
sampled threshold of the batch-wide scan, and whether a device keeps the batch code dense.

* :func:`top_k_indices`: each row's k largest entries (k-sparse, TopK, AuxK).
* :func:`relu_top_k_of_columns`: the AuxK code on the dead latents' columns.
* :func:`batch_top_k` (the CPU's padded row-sparse code) and :func:`batch_top_k_dense` (a
  device's dense code): the B·k largest entries of ReLU(Z) over the batch (BatchTopK,
  Matryoshka); :func:`batch_code_is_sparse` says which one a backend gets.
* :func:`row_blocks`: the fixed blocks of rows in which the AuxK term takes a batch;
  :func:`run_pass_blocks`: a row-wise formula of several passes, in blocks of rows over
  threads.

Every kernel returns the same entries whatever the thread count or block size
(``tests/backend/test_selection.py``, ``tests/backend/test_kernels.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from sparsekit.backend import fused, threads
from sparsekit.backend.threads import split_run

# -- each row's k largest ------------------------------------------------------------------------

#: Bytes of the block of rows :func:`top_k_indices` partitions at a time (about an L2 cache).
TOPK_BLOCK_BYTES = 1 << 20


def top_k_indices(xp: Any, z: Any, k: int) -> Any:
    """Indices of the k largest entries (by signed value) of each row; O(H) a row.

    On the CPU: the k-th largest value of each row by ``partition`` (introselect, O(H)) of
    a copy of a cache-sized block of rows, then the entries at or above it, which come out
    in increasing column order; blocks of rows go to the threads of ``split_run``. When a
    row has ties at its threshold (or NaN) that does not give exactly k entries, and
    ``argpartition`` decides for that row alone (as it does for every row on other backends),
    its choice sorted.
    """
    rows, h = z.shape
    if k >= h:
        return xp.broadcast_to(xp.arange(h), z.shape).copy()
    if xp is np and k > 0 and rows > 0:
        found = _row_thresholds(z, k)
        # Each row has k entries at or above its threshold, more with ties there, fewer with
        # NaN: the total alone would pass a row with NaN and one with ties together
        row_of = found // h
        counts = np.bincount(row_of, minlength=rows)
        if found.size == rows * k and (counts == k).all():
            found -= row_of * h  # the column
            return found.reshape(rows, k)
        return _with_ties(z, k, found, row_of, counts)
    return xp.argpartition(z, h - k, axis=1)[:, h - k :]


def relu_top_k_of_columns(xp: Any, z: Any, columns: Any, k: int) -> Any:
    """ReLU of the k largest of each row's entries in ``columns`` of z, the row's other
    entries there 0 (all of them kept when k ≥ their number): a B×len(columns) array, the
    AuxK code on the dead latents.

    A row with at most k positive entries keeps all of them whichever k are chosen (the ReLU
    zeroes the rest), so only rows with more go to :func:`top_k_indices`. On the CPU,
    blocks of rows go to the threads of ``split_run`` (NumPy's passes release the GIL); each
    row's result depends on that row alone, so the bits are the same on any thread count.
    """
    if xp is not np:
        return relu_top_k_block(xp, z, columns, k)
    out = np.empty((z.shape[0], columns.shape[0]), dtype=z.dtype)

    def part(lo: int, hi: int) -> None:
        out[lo:hi] = relu_top_k_block(xp, z[lo:hi], columns, k)

    split_run(part, z.shape[0], min_size=max(2, threads.PARALLEL_MIN_SIZE // max(1, out.shape[1])))
    return out


@fused.op
def relu_top_k_block(xp: Any, z: Any, columns: Any, k: int) -> Any:
    """:func:`relu_top_k_of_columns` on a block of rows, on one thread.

    The fused twin takes each row in compiled passes: it gathers the row's entries in
    ``columns`` and copies the positive ones aside, counts those by their top bits, sorts
    only the bucket that holds the k-th largest to find its value, and keeps the entries at
    or above it. The k-th largest value does not depend on how it is found, so the kept
    entries are the reference's; a row where it is not unique (ties at the k-th value, or a
    NaN) goes to the reference, for that row alone.
    """
    z_cols = xp.take(z, columns, axis=1)
    if k < z_cols.shape[1]:
        crowded = xp.flatnonzero(xp.count_nonzero(z_cols > 0, axis=1) > k)
        if crowded.shape[0]:
            block = z_cols[crowded]
            local = top_k_indices(xp, block, k)
            rows = xp.arange(block.shape[0])[:, None]
            code = xp.zeros_like(block)
            code[rows, local] = block[rows, local]
            z_cols[crowded] = code
    xp.maximum(z_cols, 0, out=z_cols)
    return z_cols


@relu_top_k_block.twin
def _relu_top_k_block_fused(xp: Any, z: Any, columns: Any, k: int) -> Any:
    if (
        xp is not np
        or not fused.usable(z)
        or z.ndim != 2
        or not isinstance(columns, np.ndarray)
        or columns.ndim != 1
        or columns.dtype.kind != "i"
        or not 0 < k < columns.shape[0]
        or int(columns.min()) < 0
        or int(columns.max()) >= z.shape[1]  # (the loop reads without bounds checks)
    ):
        return fused.NOT_RUN
    columns = np.ascontiguousarray(columns, dtype=np.int64)
    out = np.empty((z.shape[0], columns.shape[0]), dtype=z.dtype)
    unsure = np.zeros(z.shape[0], dtype=np.uint8)
    scratch = np.empty(columns.shape[0], dtype=z.dtype)
    bits = scratch.view(np.int32 if z.dtype == np.float32 else np.int64)
    shift = np.int64(8 * z.dtype.itemsize - 1 - _RADIX_BITS)  # below the top bits, sign aside
    counts = np.zeros(1 << _RADIX_BITS, dtype=np.int64)
    fn = _relu_top_k_loop.ready(
        z.dtype.char, z[:0], columns, k, out[:0], unsure[:0], scratch, bits, shift, counts
    )
    if fn is None:
        return fused.NOT_RUN
    fn(z, columns, k, out, unsure, scratch, bits, shift, counts)
    redo = np.flatnonzero(unsure)
    if redo.shape[0]:
        out[redo] = relu_top_k_block.reference(xp, z[redo], columns, k)
    return out


#: Top bits of a positive float by which the twin of :func:`relu_top_k_block` counts a row's
#: entries (the sign bit aside: 8 of float32's exponent and 4 of its fraction).
_RADIX_BITS = 12


@fused.loop
def _relu_top_k_loop(z, columns, k, out, unsure, scratch, bits, shift, counts):  # pragma: no cover
    # A positive float's bits, read as an integer, increase with its value: the entries are
    # counted by their top bits, the bucket where the k-th largest falls is found from the
    # top, and only that bucket's entries are sorted to find the value itself.
    n = columns.shape[0]
    for i in range(z.shape[0]):
        zi = z[i]
        oi = out[i]
        m = 0  # the positive entries, copied to scratch[:m] (without a branch: half are)
        nan = 0
        for c in range(n):
            v = zi[columns[c]]
            oi[c] = v
            scratch[m] = v
            m += v > 0
            nan |= v != v
        if nan:
            unsure[i] = 1
            continue
        if m <= k:
            for c in range(n):
                if not oi[c] > 0:  # ReLU (NumPy's maximum(v, 0) gives +0.0 for -0.0 too)
                    oi[c] = 0
            continue
        counts[:] = 0
        for j in range(m):
            counts[bits[j] >> shift] += 1
        need = k  # the k-th largest is the need-th largest of `bucket`
        bucket = counts.shape[0] - 1
        while counts[bucket] < need:
            need -= counts[bucket]
            bucket -= 1
        inside = 0
        for j in range(m):  # the bucket's entries, moved to the front
            if (bits[j] >> shift) == bucket:
                bits[inside] = bits[j]
                inside += 1
        ordered = np.sort(scratch[:inside])
        threshold = ordered[inside - need]
        first = inside - need  # the bucket's entries at or above the threshold start here
        while first > 0 and ordered[first - 1] == threshold:
            first -= 1
        if inside - first != need:  # ties at the threshold: the reference decides
            unsure[i] = 1
            continue
        for c in range(n):
            if not oi[c] >= threshold:
                oi[c] = 0


def _with_ties(
    z: np.ndarray, k: int, found: np.ndarray, row_of: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """:func:`top_k_indices` when some rows do not have exactly k entries at or above their
    threshold (a tie there, or NaN): those rows alone go to ``argpartition`` (sorted, like
    the others). One tied row in a 4,096 × 16,384 batch happens; an argpartition of the
    whole batch then cost a 512 MiB index array and a second full selection."""
    rows, h = z.shape
    exact = counts == k  # (row_of: each hit's row; counts: each row's hits)
    out = np.empty((rows, k), dtype=found.dtype)
    out[exact] = (found[exact[row_of]] % h).reshape(-1, k)
    odd = np.flatnonzero(~exact)
    chosen = np.argpartition(z[odd], h - k, axis=1)[:, h - k :]
    chosen.sort(axis=1)
    out[odd] = chosen
    return out


def _row_thresholds(z: np.ndarray, k: int) -> np.ndarray:
    """Flat (row-major) positions in ``z`` of the entries at or above each row's k-th largest
    value, in increasing order: threads take contiguous rows, each a cache-sized block at a
    time (:func:`block_top_k`)."""
    rows, h = z.shape
    blocks: dict[int, Any] = {}
    step = max(1, TOPK_BLOCK_BYTES // (h * z.dtype.itemsize))

    def part(lo: int, hi: int) -> None:
        # a cache-sized block at a time, partitioned in a reused buffer: no copy of z
        buf = np.empty((min(step, hi - lo), h), dtype=z.dtype)
        found = []
        for start in range(lo, hi, step):
            block = z[start : min(hi, start + step)]
            hits = block_top_k(block, k, buf[: block.shape[0]])
            hits += start * h  # the whole array's positions
            found.append(hits)
        blocks[lo] = found[0] if len(found) == 1 else np.concatenate(found)

    # about PARALLEL_MIN_SIZE / 4 entries a thread at least: 65 rows of 1000
    split_run(part, rows, min_size=max(2, threads.PARALLEL_MIN_SIZE // (4 * h)))
    return blocks[0] if len(blocks) == 1 else np.concatenate([blocks[i] for i in sorted(blocks)])


@fused.op
def block_top_k(block: np.ndarray, k: int, scratch: np.ndarray) -> np.ndarray:
    """Flat (row-major) positions in a block of rows of the entries at or above each row's
    k-th largest value (0 < k < the row width), in increasing order; ``scratch`` is an array
    of the block's shape and dtype, overwritten. A row has k of them, more with ties at that
    value; a row with NaN has those ``partition`` places above every number.

    The reference partitions a copy of the block (introselect). The fused twin takes a row in
    compiled passes when it is at least :data:`TWIN_MIN_WIDTH` × k wide: the largest entry of
    each of :data:`GROUPS_PER_K` × k interleaved groups (elementwise over stretches of the
    row), a value that k groups reach by bisection of those maxima (so at least k entries
    do: a lower bound of the k-th largest), the few entries at or above it, and their k-th
    largest by quickselect.
    That value does not depend on how it is found, so the positions are the reference's; a
    row with a tie at that value, a NaN or an infinity goes to the reference, for that row
    alone.
    """
    h = block.shape[1]
    np.copyto(scratch, block)
    scratch.partition(h - k, axis=1)
    return np.flatnonzero(block >= scratch[:, h - k : h - k + 1])


#: Narrowest row, in multiples of k, that the twin of :func:`block_top_k` takes: below it
#: its groups hold too few entries to beat the partition (k = 128 of 4,096: 57 against
#: 46 ms; k = 64 of 8,192: 43 against 71 ms).
TWIN_MIN_WIDTH = 64
#: Groups a row's maxima are taken over, in multiples of k.
GROUPS_PER_K = 8
#: Largest k whose columns the twin keeps in order by insertion (k²/4 moves a row); above
#: it they are sorted once found.
INSERTED = 64


@block_top_k.twin
def _block_top_k_fused(block: Any, k: int, scratch: Any) -> Any:
    if (
        not isinstance(block, np.ndarray)
        or block.ndim != 2
        or block.dtype not in (np.float32, np.float64)
        or not block.flags.c_contiguous
        or k < 1
        or block.shape[1] < TWIN_MIN_WIDTH * k
    ):
        return fused.NOT_RUN
    rows, h = block.shape
    groups = GROUPS_PER_K * k
    cols = np.empty((rows, k), dtype=np.int64)
    counts = np.empty(rows, dtype=np.int64)
    maxima = np.empty(groups, dtype=block.dtype)
    values = np.empty(h, dtype=block.dtype)  # the candidates, and a copy quickselect reorders
    work = np.empty(h, dtype=block.dtype)
    where = np.empty(h, dtype=np.int64)
    sums = np.empty(groups, dtype=block.dtype)
    fn = _top_k_rows_loop.ready(
        block.dtype.char, block[:0], k, groups, INSERTED, cols[:0], counts[:0], maxima, sums,
        values, work, where,
    )  # fmt: skip
    if fn is None:
        return fused.NOT_RUN
    fn(block, k, groups, INSERTED, cols, counts, maxima, sums, values, work, where)
    cols += (np.arange(rows, dtype=np.int64) * h)[:, None]
    exact = counts == k
    if exact.all():
        return cols.reshape(-1)
    odd = np.flatnonzero(~exact)
    hits = block_top_k.reference(block[odd], k, np.empty((odd.shape[0], h), dtype=block.dtype))
    hits += (odd * h - np.arange(odd.shape[0]) * h)[hits // h]  # the block's rows
    return np.sort(np.concatenate([cols[exact].reshape(-1), hits]))


@fused.loop
def _top_k_rows_loop(z, k, groups, inserted, cols, counts, maxima, sums, values, work, where):  # noqa: E501  # pragma: no cover
    rows, h = z.shape
    full = h // groups * groups
    for i in range(rows):
        r = z[i]
        # the largest entry of each group {g, g + groups, g + 2·groups, ...}, and the
        # groups' sums, which a NaN (or an infinity) makes non-finite
        stretches = r[:full].reshape(-1, groups)
        for g in range(groups):
            maxima[g] = sums[g] = stretches[0, g]
        for s in range(1, stretches.shape[0]):
            stretch = stretches[s]
            for g in range(groups):
                a, b = maxima[g], stretch[g]
                maxima[g] = a if a > b else b
                sums[g] += b
        for q in range(full, h):
            a, b = maxima[q - full], r[q]
            maxima[q - full] = a if a > b else b
            sums[q - full] += b
        if not np.isfinite(sums.sum()):  # the reference decides (NaN first, as it has it)
            counts[i] = -1
            continue
        # lo: a value that k groups reach (so k entries do), raised by bisection
        lo, hi = maxima.min(), maxima.max()
        for _ in range(16):
            mid = lo + (hi - lo) * 0.5
            if not (lo < mid < hi):  # converged, or infinite maxima
                break
            reach = 0
            for g in range(groups):
                reach += maxima[g] >= mid
            if reach >= k:
                lo = mid
            else:
                hi = mid
        # the entries at or above it, from the groups that reach it (no branch: few pass)
        n = 0
        for g in range(groups):
            if maxima[g] >= lo:
                for q in range(g, h, groups):
                    v = r[q]
                    values[n], where[n] = v, q
                    n += v >= lo
        # their k-th largest (quickselect, descending, on a copy): the row's k-th largest
        for q in range(n):
            work[q] = values[q]
        want, first, last = k - 1, 0, n - 1
        while first < last:
            pivot = work[(first + last) >> 1]
            x, y = first, last
            while x <= y:
                while work[x] > pivot:
                    x += 1
                while work[y] < pivot:
                    y -= 1
                if x <= y:
                    work[x], work[y] = work[y], work[x]
                    x, y = x + 1, y - 1
            if want <= y:
                last = y
            elif want >= x:
                first = x
            else:
                break
        kth = work[want]
        # the entries at or above it in column order: by insertion, or sorted for a large k
        m = 0
        for q in range(n):
            if values[q] >= kth:
                if m < k:
                    j, p = where[q], m
                    while k <= inserted and p > 0 and cols[i, p - 1] > j:
                        cols[i, p] = cols[i, p - 1]
                        p -= 1
                    cols[i, p] = j
                m += 1
        if m == k and k > inserted:
            cols[i].sort()
        counts[i] = m  # more than k: a tie at the k-th value, for the reference


# -- the batch's B·k largest -----------------------------------------------------------------------

#: Entries of Z sampled (evenly spaced) to place the first candidate threshold of batch_top_k.
SAMPLE_SIZE = 1 << 16
#: Bytes of the block of rows batch_top_k scans at a time.
SCAN_BLOCK_BYTES = 1 << 22


def batch_code_is_sparse(xp: Any) -> bool:
    """Whether the batch-wide selection comes as :func:`batch_top_k`'s padded row-sparse code
    (the CPU) or as :func:`batch_top_k_dense`'s B×H code (a device, where the padded width
    would be read back from the device every step)."""
    return xp is np


def _candidates(z: Any, n: int) -> tuple[Any, Any]:
    """Flat positions (row-major) and values of entries of Z that include its n largest
    positive ones, without a B×H copy: every entry at or above a threshold placed by an even
    sample of Z (a block of rows at a time), lowered until at least n entries pass (at the
    end to 0: every positive entry)."""
    flat = z.reshape(-1)
    stride = max(1, flat.size // SAMPLE_SIZE)
    sample = np.sort(flat[::stride])
    step = max(1, SCAN_BLOCK_BYTES // max(1, z.shape[1] * z.dtype.itemsize))
    want = n / flat.size * sample.size  # sampled entries expected among the n largest
    for extra in (1.25, 2.0, 4.0, 0.0):
        rank = sample.size - int(extra * want + 4 * want**0.5 + 8)
        lower = max(float(sample[rank]), 0.0) if extra and rank > 0 else 0.0
        positions, values = _entries_above(z, lower, step)
        found = sum(v.size for v in values)
        if found >= n or lower == 0:
            return np.concatenate(positions), np.concatenate(values)
    raise AssertionError("unreachable")  # pragma: no cover - the last threshold is 0


def _entries_above(z: np.ndarray, lower: float, step: int) -> tuple[list[Any], list[Any]]:
    """Flat positions and values of Z's entries at or above ``lower`` (above 0 when it is 0),
    ``step`` rows at a time; blocks of rows go to the threads and come back in row order, so
    the entries are the same on any thread count."""
    parts: dict[int, tuple[list[Any], list[Any]]] = {}

    def scan(first: int, last: int) -> None:
        positions, values = [], []
        for lo in range(first, last, step):
            block = z[lo : min(last, lo + step)].reshape(-1)
            pos = np.flatnonzero(block >= lower if lower > 0 else block > 0)
            values.append(block[pos])
            positions.append(pos + lo * z.shape[1])
        parts[first] = (positions, values)

    split_run(scan, z.shape[0], min_size=max(step, threads.PARALLEL_MIN_SIZE // z.shape[1]))
    ordered = [parts[first] for first in sorted(parts)]
    return [p for pos, _ in ordered for p in pos], [v for _, vals in ordered for v in vals]


def batch_top_k(xp: Any, z: Any, n: int) -> tuple[Any, Any]:
    """The n largest entries of ReLU(Z) over the whole batch, as a padded row-sparse code.

    Returns ``(indices, values)``, both B×m with m the most entries any row keeps: row i's
    kept units in increasing order, then zeros (value 0) at units row i does not keep, so a
    dense code rebuilt from them (``put_along_axis``) and every sparse product are exact.
    Only positive entries are kept (a zero of ReLU(Z) is the same kept or not); ties at the
    n-th value are broken by position.
    """
    if xp is np:
        flat, vals = _candidates(z, n)
    else:
        relu = xp.maximum(z, 0).reshape(-1)
        flat = xp.flatnonzero(relu)
        vals = relu[flat]
    if vals.shape[0] > n:
        kth = xp.partition(vals, vals.shape[0] - n)[vals.shape[0] - n]
        keep = vals > kth
        ties = xp.flatnonzero(vals == kth)[: n - int(keep.sum())]
        keep[ties] = True
        flat, vals = flat[keep], vals[keep]
    return padded_code(xp, z, flat, vals)


@fused.op
def padded_code(xp: Any, z: Any, flat: Any, vals: Any) -> tuple[Any, Any]:
    """The kept entries (flat row-major positions ``flat``, values ``vals``, increasing
    positions) as :func:`batch_top_k`'s padded ``(indices, values)``: row i's kept units,
    then the units it does not keep, smallest first (value 0). The fused twin fills each row
    in one compiled pass (the same indices and values)."""
    rows, hidden = z.shape
    row = flat // hidden
    col = flat % hidden
    counts = xp.bincount(row, minlength=rows)
    width = max(1, int(counts.max()) if rows else 1)
    starts = xp.cumsum(counts) - counts
    slot = xp.arange(flat.shape[0]) - starts[row]
    indices = xp.empty((rows, width), dtype=xp.int64)
    values = xp.zeros((rows, width), dtype=z.dtype)
    indices[row, slot] = col
    values[row, slot] = vals
    # Padding: slot c_i + t of row i gets the t-th unit row i does not keep, u = t + #{kept
    # units with fewer than t + 1 unkept units below them} (g = col − slot of each kept one).
    pad_row, pad_slot = xp.nonzero(xp.arange(width)[None, :] >= counts[:, None])
    if pad_row.shape[0]:
        gaps = row * (hidden + 1) + (col - slot)  # nondecreasing: rows, then gaps in a row
        t = pad_slot - counts[pad_row]
        below = xp.searchsorted(gaps, pad_row * (hidden + 1) + t, side="right")
        indices[pad_row, pad_slot] = t + below - starts[pad_row]
    return indices, values


@padded_code.twin
def _padded_code_fused(xp: Any, z: Any, flat: Any, vals: Any) -> Any:
    if xp is not np or not fused.usable(vals) or flat.dtype != np.int64 or flat.ndim != 1:
        return fused.NOT_RUN
    rows, hidden = z.shape
    counts = np.bincount(flat // hidden, minlength=rows)
    width = max(1, int(counts.max()) if rows else 1)
    indices = np.empty((rows, width), dtype=np.int64)
    values = np.empty((rows, width), dtype=vals.dtype)
    fn = _padded_code_loop.ready(
        vals.dtype.char, flat[:0], vals[:0], counts[:0], hidden, indices[:0], values[:0]
    )
    if fn is None:
        return fused.NOT_RUN
    fn(flat, vals, counts, hidden, indices, values)
    return indices, values


@fused.loop
def _padded_code_loop(flat, vals, counts, hidden, indices, values):  # pragma: no cover
    width = indices.shape[1]
    start = 0
    for i in range(counts.shape[0]):
        c = counts[i]
        for t in range(c):
            indices[i, t] = flat[start + t] - i * hidden
            values[i, t] = vals[start + t]
        unit = 0
        kept = 0  # the row's kept units below ``unit`` (they increase)
        for slot in range(c, width):
            while kept < c and indices[i, kept] == unit:
                unit += 1
                kept += 1
            indices[i, slot] = unit
            values[i, slot] = 0
            unit += 1
        start += c


def batch_top_k_dense(xp: Any, z: Any, n: int) -> Any:
    """ReLU(Z) with all but its n largest entries over the whole batch set to 0, as a dense
    B×H array (a device's batch top-k: nothing is read back to size a padded code)."""
    code = xp.maximum(z, 0)
    flat = code.reshape(-1)
    if n < flat.size:
        flat[xp.argpartition(flat, flat.size - n)[: flat.size - n]] = 0
    return code


# -- blocks of rows ------------------------------------------------------------------------------

#: Bytes of one block of rows of a B×width temporary taken a block at a time (the AuxK code,
#: B_block × n_dead, in ``methods/_sae.auxk_term``).
ROW_BLOCK_BYTES = 1 << 22


def row_blocks(rows: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` for the consecutive blocks of ``rows`` rows of ``row_bytes`` bytes each,
    about :data:`ROW_BLOCK_BYTES` a block.

    The size depends on the row width alone, never on the thread count, so sums over the
    blocks run in the same order on any machine and a run repeats bit for bit.
    """
    block = max(1, ROW_BLOCK_BYTES // max(1, row_bytes))
    for lo in range(0, rows, block):
        yield lo, min(rows, lo + block)


def run_pass_blocks(xp: Any, rows: int, row_bytes: int, fn: Any) -> None:
    """Call ``fn(lo, hi)`` on blocks of rows covering ``rows`` once, for a row-wise formula of
    several NumPy passes (the decoder rows' projection and renormalisation).

    On the CPU the threads of ``split_run`` take contiguous rows (NumPy's passes release the
    GIL), each in :func:`row_blocks`: each pass's temporary is a cache-sized block instead of
    a matrix-sized array (16,384 × 768 float32: 48 MiB, above glibc's mmap threshold, so
    every temporary would be fresh pages), about 2.5× faster. Every row's result depends on
    that row alone, so the bits are the same for any blocks and threads. On a device, one
    block: the whole matrix, one kernel a pass.
    """
    if xp is not np:
        if rows:
            fn(0, rows)
        return

    def part(lo: int, hi: int) -> None:
        for first, last in row_blocks(hi - lo, row_bytes):
            fn(lo + first, lo + last)

    split_run(part, rows, min_size=threads.min_rows(row_bytes))
