"""Products with a row-sparse code, on any backend.

A :class:`~sparsekit.methods.base.TopK` support keeps k of H units in every row, so the code
is a B×H matrix with k nonzeros per row, given by ``indices`` (B×k) and ``values`` (B×k).
These kernels compute the decoder product and the gradient terms from the k columns alone
(B·k·D multiply-adds instead of B·H·D), as ``docs/methods.md`` ("Why sparsity should make
training cheaper") describes. When the backend has no sparse module they fall back to
gathering the k rows of W, which costs the same arithmetic.

Every kernel keeps the dtype of its inputs (float32 stays float32) and allocates nothing
larger than its result plus a cache-sized scratch block. :func:`split_run` spreads
elementwise work over a few threads on the CPU (never while BLAS runs).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from sparsekit.backend import Backend

#: Bytes of gathered weight rows per block in :func:`gathered_dot` (about an L2 cache).
GATHER_BLOCK_BYTES = 1 << 21
#: Arrays smaller than this many elements are updated on the calling thread alone.
PARALLEL_MIN_SIZE = 1 << 18

_workers: _Workers | None = None
_workers_lock = threading.Lock()
#: Held while a split_run call uses the workers; a concurrent (or nested) call runs whole.
_split_lock = threading.Lock()
_local = threading.local()


def cpu_threads() -> int:
    """Threads for elementwise work: ``SPARSEKIT_NUM_THREADS``, else the usable CPUs (≤ 4).

    The same number BLAS uses by default, and the two never run at the same time (the
    threads of :func:`split_run` work between matrix products), so they do not
    oversubscribe the cores.
    """
    env = os.environ.get("SPARSEKIT_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, min(_usable_cpus(), 4))


_affinity: tuple[int, int] | None = None  # (pid, usable CPUs): one system call per process


def _usable_cpus() -> int:
    global _affinity
    pid = os.getpid()
    if _affinity is None or _affinity[0] != pid:
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            usable = os.cpu_count() or 1
        _affinity = (pid, usable)
    return _affinity[1]


class _Workers:
    """Threads that each run one part of a :func:`split_run` call, woken by raw locks.

    Worker ``i`` always takes part ``i + 1`` (the calling thread takes part 0). A hand-off
    through two locks costs about half as much as a ``ThreadPoolExecutor`` round trip
    (futures, conditions): 11 against 24 µs on the machine of ``docs/performance.md``.
    """

    def __init__(self, count: int) -> None:
        self.key = (os.getpid(), count)  # a forked child must not use its parent's threads
        self._go = [threading.Lock() for _ in range(count)]
        self._done = [threading.Lock() for _ in range(count)]
        self._tasks: list[tuple[Any, int, int] | None] = [None] * count
        self._errors: list[BaseException | None] = [None] * count
        for lock in (*self._go, *self._done):
            lock.acquire()
        for i in range(count):
            threading.Thread(
                target=self._loop, args=(i,), name=f"sparsekit-{i}", daemon=True
            ).start()

    def _loop(self, i: int) -> None:
        _local.worker = True
        while True:
            self._go[i].acquire()
            task = self._tasks[i]
            if task is None:  # stopped
                return
            fn, lo, hi = task
            try:
                fn(lo, hi)
            except BaseException as exc:  # handed to the caller by wait()
                self._errors[i] = exc
            finally:
                self._tasks[i] = None
                self._done[i].release()

    def start(self, i: int, fn: Any, lo: int, hi: int) -> None:
        self._tasks[i] = (fn, lo, hi)
        self._go[i].release()

    def wait(self, i: int) -> BaseException | None:
        """Block until worker ``i`` has finished its part; its exception, if it raised."""
        self._done[i].acquire()
        error, self._errors[i] = self._errors[i], None
        return error

    def stop(self) -> None:
        for i, go in enumerate(self._go):
            self._tasks[i] = None
            go.release()


def _worker_threads(count: int) -> _Workers:
    global _workers
    with _workers_lock:
        if _workers is None or _workers.key != (os.getpid(), count):
            if _workers is not None and _workers.key[0] == os.getpid():
                _workers.stop()
            _workers = _Workers(count)
        return _workers


def split_run(fn: Any, size: int, min_size: int | None = None) -> None:
    """Call ``fn(start, stop)`` on contiguous parts of ``range(size)``, in parallel if large.

    The calling thread does the first part itself. NumPy releases the GIL inside ufunc
    loops, so in-place elementwise work on disjoint slices runs on several cores; the
    result is the same, element for element, as one call over the whole range.
    """
    if min_size is None:
        min_size = PARALLEL_MIN_SIZE
    parts = min(cpu_threads(), size) if size >= min_size else 1
    # One call at a time uses the workers: a call from another thread meanwhile, or from
    # inside a part, does its whole range on its own thread (the same result).
    if parts <= 1 or getattr(_local, "worker", False) or not _split_lock.acquire(blocking=False):
        fn(0, size)
        return
    try:
        workers = _worker_threads(parts - 1)
        cuts = [size * i // parts for i in range(parts + 1)]
        for i in range(1, parts):
            workers.start(i - 1, fn, cuts[i], cuts[i + 1])
        try:
            fn(cuts[0], cuts[1])
        finally:  # every part finished before returning or raising
            errors = [workers.wait(i - 1) for i in range(1, parts)]
        for error in errors:
            if error is not None:
                raise error
    finally:
        _split_lock.release()


#: glibc's malloc thresholds set by :func:`keep_freed_memory` (bytes).
MALLOC_TRIM_THRESHOLD = 64 << 20
MALLOC_MMAP_THRESHOLD = 16 << 20
_malloc_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next training step instead of unmapping it.

    A step allocates and frees temporaries of a few MiB (the H×D gradients, λW of weight
    decay). With glibc's default, self-adjusting thresholds these often go back to the
    operating system at once (``munmap``, or a heap trim) and come back as fresh pages on the
    next step: thousands of page faults a step, a sizeable share of its time. Raising the
    trim threshold to 64 MiB and fixing the mmap threshold at 16 MiB keeps them for reuse;
    memory still in use is unaffected, and blocks above 16 MiB (data sets) are still mapped
    and unmapped as before. Called once per process by the trainer; does nothing outside
    glibc or with ``SPARSEKIT_MALLOC_TUNING=0``. Returns whether the thresholds were set.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if os.environ.get("SPARSEKIT_MALLOC_TUNING", "1").strip() == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        ok = libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1
        ok = libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):  # pragma: no cover - no C library to talk to
        return False
    _malloc_tuned = ok
    return ok


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

        split_run(part, rows, min_size=_min_rows(k * dim))
        return out
    if backend.sparse is not None:
        return xp.asarray(_csr(backend, indices, values, weights.shape[0]) @ weights)
    return xp.einsum("bk,bkd->bd", values, weights[indices])


def _min_rows(work_per_row: int) -> int:
    """Rows below which a kernel stays on one thread (about PARALLEL_MIN_SIZE multiply-adds)."""
    return max(2, -(-PARALLEL_MIN_SIZE * 4 // max(1, work_per_row)))


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

    split_run(part, n_units, min_size=_min_rows(rows * k * dim // max(1, n_units)))
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

    split_run(part, rows, min_size=_min_rows(k * dim))
    return out


def column_sums(backend: Backend, indices: Any, values: Any, n_units: int) -> Any:
    """Σ_rows of a row-sparse matrix: length-H vector."""
    xp = backend.xp
    out = xp.zeros(n_units, dtype=values.dtype)
    xp.add.at(out, indices.ravel(), values.ravel())  # bincount would upcast to float64
    return out


def top_k_indices(xp: Any, z: Any, k: int) -> Any:
    """Indices of the k largest entries (by signed value) of each row; O(H) a row.

    On the CPU: the k-th largest value of each row by ``partition`` (introselect, O(H)),
    then the entries at or above it, which come out in increasing column order. When a row
    has ties at its threshold (or NaN) that does not give exactly k entries, and
    ``argpartition`` decides instead (unordered within a row).
    """
    rows, h = z.shape
    if k >= h:
        return xp.broadcast_to(xp.arange(h), z.shape).copy()
    if _is_numpy(xp) and k > 0 and rows > 0:
        blocks: dict[int, Any] = {}

        def part(lo: int, hi: int) -> None:  # threads take blocks of rows
            block = z[lo:hi]
            kth = np.partition(block, h - k, axis=1)[:, h - k : h - k + 1]
            blocks[lo] = np.flatnonzero(block >= kth)  # row-major: sorted columns per row

        split_run(part, rows, min_size=max(2, PARALLEL_MIN_SIZE // (4 * h)))  # 65 rows of 1000
        flat = (
            blocks[0] if len(blocks) == 1 else np.concatenate([blocks[i] for i in sorted(blocks)])
        )
        if flat.size == rows * k:  # every row has >= k entries >= its threshold
            flat %= h  # blocks start at row boundaries, so this is the column
            return flat.reshape(rows, k)
    return xp.argpartition(z, h - k, axis=1)[:, h - k :]
