"""The selection kernels of :mod:`sparsekit.backend.selection` against the plain formulas.

Row-wise top-k is checked in ``test_kernels.py`` (with and without threads, in blocks of rows);
here: the batch-wide top-k of BatchTopK and Matryoshka, sparse (the CPU's padded code, a block
of rows at a time) and dense (a device's), and the AuxK term's blocks of rows.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from sparsekit.backend import selection


def _dense_batch_top_k(z, n):
    """The paper's selection on a dense copy: ReLU, then zero all but the n largest entries."""
    code = np.maximum(z, 0)
    flat = code.reshape(-1)
    flat[np.argpartition(flat, flat.size - n)[: flat.size - n]] = 0
    return code


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scan_bytes", [64, 1 << 22])  # blocks of 1-2 rows, one block
def test_batch_top_k_is_the_dense_selection_kept_sparse(monkeypatch, dtype, scan_bytes):
    monkeypatch.setattr(selection, "SCAN_BLOCK_BYTES", scan_bytes)
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((50, 40)) * rng.uniform(0.2, 3, size=(50, 1))).astype(dtype)
    n = 50 * 3
    indices, values = selection.batch_top_k(np, z, n)
    code = np.zeros_like(z)
    np.put_along_axis(code, indices, values, axis=1)
    assert values.dtype == dtype
    assert np.array_equal(code, _dense_batch_top_k(z, n))  # the same entries, bit for bit
    # rows of different lengths: padding sits at units the row does not keep, all distinct
    assert len({int((row > 0).sum()) for row in values}) > 1
    assert all(len(set(row.tolist())) == len(row) for row in indices)
    assert indices.shape[1] == max(int((row > 0).sum()) for row in values)


def test_batch_top_k_lowers_a_misleading_sample_threshold(monkeypatch):
    """Every sampled entry huge: the first thresholds pass too few entries, the last (0)
    keeps every positive one, and the selection is still exact."""
    monkeypatch.setattr(selection, "SAMPLE_SIZE", 64)
    z = np.random.default_rng(8).standard_normal((40, 32))
    z.reshape(-1)[:: z.size // 64] = 100.0
    indices, values = selection.batch_top_k(np, z, 120)
    code = np.zeros_like(z)
    np.put_along_axis(code, indices, values, axis=1)
    assert np.array_equal(code, _dense_batch_top_k(z, 120))


def _numpy_clone():
    """NumPy under another module object: the kernels take their generic (device) path."""
    clone = types.ModuleType("numpy_clone")
    clone.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    return clone


@pytest.mark.parametrize("n", [1, 90, 5000])  # fewer, some, more than the positive entries
def test_batch_top_k_generic_and_dense_paths_keep_the_same_entries(n):
    z = np.random.default_rng(9).standard_normal((60, 50))
    clone = _numpy_clone()
    assert selection.batch_code_is_sparse(np) and not selection.batch_code_is_sparse(clone)
    n = min(n, z.size)
    expected = _dense_batch_top_k(z, n)
    assert np.array_equal(selection.batch_top_k_dense(clone, z, n), expected)
    indices, values = selection.batch_top_k(clone, z, n)
    code = np.zeros_like(z)
    np.put_along_axis(code, indices, values, axis=1)
    assert np.array_equal(code, expected)


@pytest.mark.parametrize("rows,row_bytes", [(0, 8), (1, 8), (37, 8), (300, 4 * 7), (5, 1 << 30)])
def test_row_blocks_cover_every_row_once_in_fixed_blocks(monkeypatch, rows, row_bytes):
    monkeypatch.setattr(selection, "ROW_BLOCK_BYTES", 4 * 7 * 10)
    blocks = list(selection.row_blocks(rows, row_bytes))
    assert [i for lo, hi in blocks for i in range(lo, hi)] == list(range(rows))
    size = max(1, selection.ROW_BLOCK_BYTES // row_bytes)
    assert all(hi - lo == size for lo, hi in blocks[:-1])
    for threads in ("1", "3"):  # the blocks do not depend on the thread count
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", threads)
        assert list(selection.row_blocks(rows, row_bytes)) == blocks


def test_the_aux_code_is_the_same_on_any_number_of_threads(monkeypatch):
    """Blocks of rows on four threads (cut at uneven rows) give the same bits as one thread,
    a tie at a row's threshold and rows with few positives included."""
    from sparsekit.backend import threads
    from sparsekit.backend.selection import relu_top_k_of_columns

    rng = np.random.default_rng(21)
    z = rng.standard_normal((203, 300)).astype(np.float32)
    z[5, :40] = 2.0  # a tie across the threshold
    z[6] -= 3.0  # few positives: no selection
    columns = np.sort(rng.choice(300, 170, replace=False))
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "1")
    one = relu_top_k_of_columns(np, z, columns, 20)
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)
    four = relu_top_k_of_columns(np, z, columns, 20)
    assert np.array_equal(one, four)
    assert (np.count_nonzero(one, axis=1) <= 20).all() and np.count_nonzero(one[5]) == 20


def test_batch_top_k_is_the_same_on_any_number_of_threads(monkeypatch):
    """The candidates' scan runs blocks of rows on four threads (cut at uneven rows): the
    same indices and values as one thread, ties at the n-th value included."""
    from sparsekit.backend import threads

    rng = np.random.default_rng(22)
    z = rng.standard_normal((301, 64)).astype(np.float32)
    z[10:20, :8] = 3.0  # ties
    monkeypatch.setattr(selection, "SCAN_BLOCK_BYTES", 64 * 4 * 7)  # 7 rows a block
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "1")
    one = selection.batch_top_k(np, z, 301 * 5)
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)
    four = selection.batch_top_k(np, z, 301 * 5)
    assert np.array_equal(one[0], four[0]) and np.array_equal(one[1], four[1])
    assert int((one[1] > 0).sum()) == 301 * 5


def test_run_pass_blocks_visits_every_row_once_over_threads(monkeypatch):
    """The blocks of a row-wise formula shared among three threads: each row once, by more
    than one thread; a small matrix stays on the calling thread."""
    import threading

    from sparsekit.backend import threads

    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")
    monkeypatch.setattr(selection, "ROW_BLOCK_BYTES", 800)  # 10 rows of 80 bytes a block
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)
    seen = np.zeros(95, dtype=int)
    who = set()
    lock = threading.Lock()

    def block(lo, hi):
        with lock:
            seen[lo:hi] += 1
            who.add(threading.get_ident())

    selection.run_pass_blocks(np, 95, 80, block)
    assert (seen == 1).all() and len(who) > 1
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 1 << 18)
    who.clear()
    selection.run_pass_blocks(np, 95, 80, block)
    assert who == {threading.get_ident()}


def test_decoder_projection_has_the_same_bits_on_any_number_of_threads(monkeypatch):
    """The decoder rows' projection and renormalisation, split over threads by blocks of
    rows: the same bits as on one thread."""
    from sparsekit.backend import get_backend, threads
    from sparsekit.core.declarations import Upkeep
    from sparsekit.methods.plain import Plain
    from sparsekit.training.upkeep import Upkeeper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((3000, 96)).astype(np.float32)
    grad = rng.standard_normal(w.shape).astype(np.float32)
    monkeypatch.setattr(selection, "ROW_BLOCK_BYTES", 96 * 4 * 50)  # 60 blocks
    monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)  # split, small as the matrix is
    results = []
    for count in ("1", "3"):
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", count)
        keeper = Upkeeper(
            Upkeep(unit_norm_decoder=True), Plain(), get_backend(), hidden=3000, seed=0
        )
        p = {"W_enc": w.copy(), "W_dec": w.copy()}
        g = grad.copy()
        keeper.project("W_dec", g, p)
        keeper.renormalise("W_dec", p)
        results.append((g, p["W_dec"]))
    assert threads.cpu_threads() == 3
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])
