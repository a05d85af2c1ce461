"""The fast paths against the plain formulas.

* the row-sparse kernels of :mod:`sparsekit.backend.sparse_code` equal the dense products they replace
  (float64, tight tolerance), threaded or not, through SciPy's compiled kernels, its public
  API or the no-SciPy fallback;
* top-k keeps the k largest entries of each row by signed value, ties and NaN included;
* the TopK training step never builds the dense B×H code and equals the dense formulas;
* float32 stays float32 through the forward pass, the gradients and the optimizer step of
  every built-in;
* the allocation-free, threaded Adam equals the textbook update.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from sparsekit import get_backend, load_registry, make_plugin_manager  # noqa: E402
from sparsekit.backend import Backend, selection, sparse_code
from sparsekit.backend import threads as backend_threads
from sparsekit.backend.selection import top_k_indices
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import TopK
from sparsekit.training.optim import Adam

BUILTINS = ["plain", "l2", "kl", "arora", "ksparse"]
CPU64 = get_backend(dtype="float64")
CPU32 = get_backend(dtype="float32")
NO_SPARSE = Backend("numpy", np, None, np.dtype(np.float64))


@pytest.fixture(params=["serial", "threaded"])
def threads(request, monkeypatch):
    """Run a test once on the calling thread alone and once split over three threads."""
    if request.param == "threaded":
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")
        monkeypatch.setattr(backend_threads, "PARALLEL_MIN_SIZE", 1)
    else:
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "1")
    return request.param


@pytest.fixture(params=["compiled", "public-api"])
def sparse_path(request, monkeypatch):
    """SciPy's compiled CSR kernels, or the public scipy.sparse API when they are missing."""
    if request.param == "public-api":
        monkeypatch.setattr(sparse_code, "_sparsetools", lambda: None)
    return request.param


def random_code(rng, rows=37, hidden=53, k=6, dim=29, dtype=np.float64):
    """A B×H code with k kept units a row: indices (non-contiguous, unordered) and values."""
    z = rng.standard_normal((rows, hidden))
    indices = np.argpartition(z, hidden - k, axis=1)[:, hidden - k :]  # a strided view
    values = rng.standard_normal((rows, k)).astype(dtype)
    dense = np.zeros((rows, hidden), dtype=dtype)
    np.put_along_axis(dense, indices, values, axis=1)
    return indices, values, dense


# -- the kernels ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_code_times_equals_the_dense_product(seed, threads, sparse_path):
    rng = np.random.default_rng(seed)
    indices, values, dense = random_code(rng)
    w = rng.standard_normal((dense.shape[1], 29))
    out = sparse_code.code_times(CPU64, indices, values, w)
    assert out.dtype == np.float64 and out.shape == (dense.shape[0], 29)
    np.testing.assert_allclose(out, dense @ w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_code_transpose_times_equals_the_dense_product(seed, threads, sparse_path):
    rng = np.random.default_rng(seed)
    indices, values, dense = random_code(rng)
    x = rng.standard_normal((dense.shape[0], 29))
    out = sparse_code.code_transpose_times(CPU64, indices, values, x, dense.shape[1])
    np.testing.assert_allclose(out, dense.T @ x, rtol=1e-12, atol=1e-12)


def test_code_transpose_times_sums_a_pair_sharing_the_support(threads, sparse_path):
    rng = np.random.default_rng(3)
    indices, values, dense = random_code(rng)
    other = rng.standard_normal(values.shape)
    other_dense = np.zeros_like(dense)
    np.put_along_axis(other_dense, indices, other, axis=1)
    x, g = rng.standard_normal((2, dense.shape[0], 29))
    out = sparse_code.code_transpose_times(CPU64, indices, (values, other), (x, g), dense.shape[1])
    np.testing.assert_allclose(out, dense.T @ x + other_dense.T @ g, rtol=1e-12, atol=1e-12)


def test_units_nobody_uses_get_zero_rows(threads):
    rng = np.random.default_rng(4)
    indices = np.tile(np.array([1, 5]), (10, 1))  # only units 1 and 5, in every row
    values = rng.standard_normal((10, 2))
    x = rng.standard_normal((10, 7))
    out = sparse_code.code_transpose_times(CPU64, indices, values, x, 9)
    assert np.all(out[[0, 2, 3, 4, 6, 7, 8]] == 0)
    np.testing.assert_allclose(out[1], values[:, 0] @ x, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_gathered_dot_equals_the_dense_product_at_the_kept_entries(seed, threads, monkeypatch):
    rng = np.random.default_rng(seed)
    indices, _, dense = random_code(rng)
    g = rng.standard_normal((dense.shape[0], 29))
    w = rng.standard_normal((dense.shape[1], 29))
    whole = sparse_code.gathered_dot(CPU64, g, w, indices)  # one block a thread
    for name in ("GATHER_BLOCK_BYTES", "GATHER_BLOCK_BYTES_ALONE"):  # several blocks a thread
        monkeypatch.setattr(sparse_code, name, 3000)
    out = sparse_code.gathered_dot(CPU64, g, w, indices)
    expected = np.take_along_axis(g @ w.T, indices, axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert np.array_equal(out, whole)  # each row its own gemv: blocks leave the bits alone


def test_column_sums_equals_the_dense_sum():
    rng = np.random.default_rng(5)
    indices, values, dense = random_code(rng)
    out = sparse_code.column_sums(CPU64, indices, values, dense.shape[1])
    np.testing.assert_allclose(out, dense.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_kernels_without_a_sparse_module_give_the_same_results():
    rng = np.random.default_rng(6)
    indices, values, dense = random_code(rng)
    w = rng.standard_normal((dense.shape[1], 29))
    x = rng.standard_normal((dense.shape[0], 29))
    np.testing.assert_allclose(sparse_code.code_times(NO_SPARSE, indices, values, w), dense @ w)
    np.testing.assert_allclose(
        sparse_code.code_transpose_times(NO_SPARSE, indices, values, x, dense.shape[1]),
        dense.T @ x,
        rtol=1e-12,
        atol=1e-12,
    )


def test_kernels_keep_float32():
    rng = np.random.default_rng(7)
    indices, values, _ = random_code(rng, dtype=np.float32)
    w = rng.standard_normal((53, 29)).astype(np.float32)
    x = rng.standard_normal((37, 29)).astype(np.float32)
    assert sparse_code.code_times(CPU32, indices, values, w).dtype == np.float32
    assert sparse_code.code_transpose_times(CPU32, indices, values, x, 53).dtype == np.float32
    assert sparse_code.gathered_dot(CPU32, x, w, indices).dtype == np.float32
    assert sparse_code.column_sums(CPU32, indices, values, 53).dtype == np.float32


@pytest.mark.parametrize(
    ("sparsekit", "omp", "expected"),
    [("3", "1", 3), (None, "1", 1), (None, "2,1", 2), (None, "junk", None), (None, None, None)],
)
def test_thread_count_follows_sparsekit_then_openmp(sparsekit, omp, expected, monkeypatch):
    """A rank given OMP_NUM_THREADS=1 (docs/distributed.md) splits nothing itself either;
    SPARSEKIT_NUM_THREADS wins; neither (or junk): the usable CPUs, at most 4."""
    for name, value in (("SPARSEKIT_NUM_THREADS", sparsekit), ("OMP_NUM_THREADS", omp)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    default = max(1, min(backend_threads.usable_cpus(), 4))
    assert backend_threads.cpu_threads() == (default if expected is None else expected)


def test_split_run_covers_every_index_once(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    seen = np.zeros(1001, dtype=int)

    def mark(lo, hi):
        seen[lo:hi] += 1

    backend_threads.split_run(mark, 1001, min_size=1)
    assert np.all(seen == 1)


def test_split_run_reports_a_worker_error(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")

    def fail_late(lo, hi):
        if lo > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        backend_threads.split_run(fail_late, 10, min_size=1)


def test_split_run_uses_one_worker_per_part_and_survives_errors(monkeypatch):
    """Parts run on distinct threads; after a part raises (on the caller or a worker), the
    next call still gets every part done."""
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")
    threads: dict[int, str] = {}

    def where(lo, hi):
        threads[lo] = threading.current_thread().name

    backend_threads.split_run(where, 9, min_size=1)
    assert sorted(threads) == [0, 3, 6] and len(set(threads.values())) == 3
    assert threads[0] == threading.current_thread().name

    def fail_first(lo, hi):
        if lo == 0:
            raise KeyError("caller")

    with pytest.raises(KeyError, match="caller"):
        backend_threads.split_run(fail_first, 9, min_size=1)
    seen = np.zeros(9, dtype=int)
    backend_threads.split_run(
        lambda lo, hi: seen.__setitem__(slice(lo, hi), seen[lo:hi] + 1), 9, min_size=1
    )
    assert np.all(seen == 1)


@pytest.mark.parametrize("late", [False, True])
def test_ctrl_c_while_waiting_for_a_worker_waits_for_it_first(late, monkeypatch):
    """Ctrl-C reaching the caller while it waits for the workers' parts (inside the wait,
    or just after it, as a signal caught by another thread is) is raised only once every
    part has finished: an interrupted process must not be finalised under a running worker
    (a fatal "GIL is released" crash). The next call still waits for its parts."""
    import signal
    import time

    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    done = []

    def slow_workers(lo, hi):
        if lo > 0:
            time.sleep(0.3)
            done.append(lo)

    main = threading.main_thread().ident
    previous = signal.signal(signal.SIGINT, handler)
    try:
        workers = backend_threads._worker_threads(2)
        if late:  # the interrupt comes just after an acquire that took the lock

            class TakesThenRaises:
                def __init__(self, lock):
                    self.lock = lock

                def acquire(self, *args, **kwargs):
                    took = self.lock.acquire(*args, **kwargs)
                    if args or kwargs:
                        return took
                    raise Interrupted

                def release(self):
                    self.lock.release()

            workers._done[0] = TakesThenRaises(workers._done[0])
        else:  # Ctrl-C reaches the caller inside the wait
            timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
            timer.start()
        with pytest.raises(Interrupted):
            backend_threads.split_run(slow_workers, 9, min_size=1)
        if late:
            workers._done[0] = workers._done[0].lock
        else:
            timer.join()
        assert sorted(done) == [3, 6]  # both workers had finished when it was raised
        monkeypatch.undo()
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")
        done.clear()
        backend_threads.split_run(slow_workers, 9, min_size=1)
        assert sorted(done) == [3, 6]  # the locks are in order: this call waited too
    finally:
        signal.signal(signal.SIGINT, previous)


def test_split_run_nested_or_concurrent_calls_run_whole(monkeypatch):
    """A split_run inside a part, or from another thread while one runs, does its range on
    its own thread instead of waiting for the workers (no deadlock, the same result)."""
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    inner: list[tuple[int, int, str]] = []

    def outer(lo, hi):
        backend_threads.split_run(
            lambda a, b: inner.append((a, b, threading.current_thread().name)), 50, min_size=1
        )

    backend_threads.split_run(outer, 10, min_size=1)
    assert sorted((a, b) for a, b, _ in inner) == [(0, 50), (0, 50)]  # once per outer part

    release = threading.Event()
    started = threading.Event()

    def slow(lo, hi):
        started.set()
        release.wait(5)

    holder = threading.Thread(
        target=backend_threads.split_run, args=(slow, 10), kwargs={"min_size": 1}
    )
    holder.start()
    try:
        assert started.wait(5)
        seen = np.zeros(20, dtype=int)
        backend_threads.split_run(lambda lo, hi: seen.__setitem__(slice(lo, hi), 1), 20, min_size=1)
        assert np.all(seen == 1)
    finally:
        release.set()
        holder.join(5)
    assert not holder.is_alive()


def test_split_run_makes_new_workers_when_the_thread_count_changes(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    backend_threads.split_run(lambda lo, hi: None, 10, min_size=1)
    first = backend_threads._workers
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    names: set[str] = set()
    backend_threads.split_run(
        lambda lo, hi: names.add(threading.current_thread().name), 40, min_size=1
    )
    assert backend_threads._workers is not first and len(names) == 4


# -- top-k ---------------------------------------------------------------------------------


def _assert_top_k(z, indices, k):
    assert indices.shape == (z.shape[0], k)
    for row, kept in zip(z, indices, strict=True):
        assert len(set(kept.tolist())) == k
        kth_largest = np.sort(row)[-k]
        assert np.all(row[kept] >= kth_largest)  # nothing smaller than the k-th largest


@pytest.mark.parametrize("k", [1, 5, 49])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_picks_the_largest_by_signed_value(k, dtype, threads):
    rng = np.random.default_rng(k)
    z = (rng.standard_normal((64, 50)) - 0.5).astype(dtype)  # mostly negative entries
    indices = top_k_indices(np, z, k)
    _assert_top_k(z, indices, k)
    # the largest |z| (a large negative value) must not win over a larger signed value
    z[:, 0] = -100.0
    assert not np.any(top_k_indices(np, z, k) == 0)


def test_top_k_fast_path_returns_each_rows_units_in_order(threads):
    z = np.random.default_rng(8).standard_normal((16, 40))
    indices = top_k_indices(np, z, 7)
    assert np.all(np.diff(indices, axis=1) > 0)


def test_top_k_with_ties_and_nan_still_keeps_k_units(threads):
    z = np.zeros((4, 10))
    z[0, :3] = 1.0  # three tied maxima, k = 2: any two of them
    z[1, 5] = np.nan
    z[2] = np.arange(10)
    indices = top_k_indices(np, z, 2)
    assert indices.shape == (4, 2)
    assert set(indices[0].tolist()) <= {0, 1, 2}
    assert set(indices[2].tolist()) == {8, 9}
    assert all(len(set(row.tolist())) == 2 for row in indices)


def test_top_k_a_nan_row_and_a_tied_row_do_not_shift_the_others(threads):
    """A row with NaN finds one entry fewer at or above its threshold, a row with a tie one
    more: together the total is right, but each row must still get its own units (the
    selection once reshaped the flat hits, and the rows after the NaN got their
    neighbours' columns)."""
    z = np.random.default_rng(5).standard_normal((6, 9))
    expected = np.sort(np.argsort(-z, axis=1)[:, :8], axis=1)
    z[1, 0] = np.nan  # 7 entries at or above the 8th largest
    z[3] = 0.0  # 9 entries at or above 0
    got = top_k_indices(np, z, 8)
    for row in (0, 2, 4, 5):
        assert np.array_equal(got[row], expected[row])
    assert all(len(set(r.tolist())) == 8 for r in got)
    assert np.all(np.diff(got, axis=1) > 0)


@pytest.mark.parametrize("block_bytes", [8, 3 * 40 * 8, 1 << 30])  # 1 row, 3 rows, all
def test_top_k_in_blocks_of_rows_is_the_same_selection(monkeypatch, block_bytes, threads):
    """Partitioning a block of rows at a time gives the whole-array selection, exactly, and
    a tie in a later block falls back to argpartition for that row alone."""
    z = np.random.default_rng(21).standard_normal((17, 40))
    expected = np.argsort(-z, axis=1)[:, :6]
    monkeypatch.setattr(selection, "TOPK_BLOCK_BYTES", block_bytes)
    got = top_k_indices(np, z, 6)
    assert np.array_equal(got, np.sort(expected, axis=1))
    z[15, :8] = 10.0  # 8 tied maxima in a late row, k = 6
    got = top_k_indices(np, z, 6)
    _assert_top_k(z, got, 6)
    assert np.array_equal(got[:15], np.sort(expected[:15], axis=1))  # untouched, in order
    assert np.array_equal(got[16], np.sort(expected[16]))
    assert np.all(np.diff(got, axis=1) > 0)


def test_one_tied_row_does_not_cost_an_index_array_of_the_batch(threads):
    """A tie at one row's threshold once sent the whole batch to argpartition: an int64
    array of the batch's shape (512 MiB at 4,096 × 16,384) and a second full selection."""
    import tracemalloc

    z = np.random.default_rng(3).standard_normal((512, 4096)).astype(np.float32)
    z[100, :40] = 50.0  # 40 tied maxima, k = 32
    tracemalloc.start()
    try:
        indices = top_k_indices(np, z, 32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_top_k(z, indices, 32)
    assert set(indices[100].tolist()) <= set(range(40))
    assert peak < z.size * 8 / 4, f"selection allocated {peak} bytes"  # the old: z.size * 8


def test_top_k_of_every_unit():
    z = np.random.default_rng(9).standard_normal((3, 5))
    assert np.array_equal(top_k_indices(np, z, 5), np.tile(np.arange(5), (3, 1)))
    _assert_top_k(z, top_k_indices(np, z, 4), 4)


# -- the TopK training step ----------------------------------------------------------------


def _registry():
    return load_registry(make_plugin_manager(entry_points=False))


def _problem(method, tied, dtype, rows=32, dim=20, hidden=24, seed=0):
    rng = np.random.default_rng(seed)
    params = method.init_params(rng, dim, hidden, tied, rng.random((50, dim)))
    params = {name: np.ascontiguousarray(v, dtype=dtype) for name, v in params.items()}
    params["b_enc"] = (0.1 * rng.standard_normal(hidden)).astype(dtype)
    params["b_dec"] = (0.1 * rng.standard_normal(dim)).astype(dtype)
    x = rng.random((rows, dim)).astype(dtype)
    return params, x


def _dense_ksparse_reference(params, x, k):
    """docs/methods.md (e) written densely, in float64."""
    w_enc = params["W_enc"]
    w_dec = params.get("W_dec", w_enc)
    z = x @ w_enc.T + params["b_enc"]
    idx = np.argsort(z, axis=1)[:, -k:]
    mask = np.zeros_like(z)
    np.put_along_axis(mask, idx, 1.0, axis=1)
    code = z * mask
    xhat = code @ w_dec + params["b_dec"]
    g = (xhat - x) / x.shape[0]
    dz = (g @ w_dec.T) * mask
    grads = {"b_dec": g.sum(axis=0), "b_enc": dz.sum(axis=0)}
    if "W_dec" in params:
        grads["W_enc"], grads["W_dec"] = dz.T @ x, code.T @ g
    else:
        grads["W_enc"] = dz.T @ x + code.T @ g
    return 0.5 * np.sum((xhat - x) ** 2) / x.shape[0], grads


@pytest.mark.parametrize("tied", [True, False])
def test_ksparse_step_equals_the_dense_formulas(tied, threads):
    method = _registry().create("ksparse", k=5, k_start=5)
    method.validate(24, 20)
    params, x = _problem(method, tied, np.float64)
    loss, grads, _, _ = autoencoder.loss_and_grads(method, CPU64, params, x)
    ref_loss, ref = _dense_ksparse_reference(params, x, 5)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    assert set(grads) == set(ref)
    for name, expected in ref.items():
        np.testing.assert_allclose(grads[name], expected, rtol=1e-10, atol=1e-12, err_msg=name)


def test_topk_step_never_builds_the_dense_code(monkeypatch):
    """The decoder and every gradient term go through the row-sparse kernels only."""
    method = _registry().create("ksparse", k=4, k_start=4)
    params, x = _problem(method, True, np.float32)
    calls = []

    def forbid(*args, **kwargs):
        raise AssertionError("the TopK step materialised the dense B×H code")

    monkeypatch.setattr(autoencoder, "dense_code", forbid)
    for name in ("code_times", "code_transpose_times", "gathered_dot", "column_sums"):
        original = getattr(autoencoder, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(autoencoder, name, spy)
    loss, grads, fwd, _ = autoencoder.loss_and_grads(method, CPU32, params, x)
    assert isinstance(fwd.support, TopK) and fwd.code is None
    assert fwd.code_values.shape == (x.shape[0], 4)
    assert sorted(set(calls)) == [
        "code_times",
        "code_transpose_times",
        "column_sums",
        "gathered_dot",
    ]


def test_a_code_penalty_still_sees_the_dense_code():
    """Methods with a code penalty on a TopK support still get the B×H code."""
    from sparsekit.methods.ksparse import KSparse

    seen = []

    class Penalised(KSparse):
        name = "ksparse-penalised"
        uses_code_penalty = True  # declared: the TopK step then builds the dense code

        def code_penalty(self, xp, code):
            seen.append(code.shape)
            return 0.5 * xp.vdot(code, code), code

    method = Penalised(k=3, k_start=3)
    params, x = _problem(method, True, np.float64)
    loss, _, fwd, rec = autoencoder.loss_and_grads(method, CPU64, params, x)
    assert seen == [(x.shape[0], 24)]
    code = autoencoder.dense_code(CPU64, fwd)
    assert float(loss) == pytest.approx(float(rec) + 0.5 * float(np.vdot(code, code)))


# -- float32 end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("tied", [True, False])
def test_float32_stays_float32_through_the_step(name, tied):
    registry = _registry()
    cls = registry.get(name)
    if (tied and not cls.allows_tied) or (not tied and not cls.allows_untied):
        pytest.skip("layout not supported by this method")
    method = registry.create(name, **({"k": 5, "k_start": 5} if name == "ksparse" else {}))
    method.validate(24, 20)
    params, x = _problem(method, tied, np.float32)
    if method.own_update:
        out = method.update(CPU32, params, x, 0.1)
        loss, fwd = out.loss, out.forward
    else:
        loss, grads, fwd, rec = autoencoder.loss_and_grads(method, CPU32, params, x)
        assert rec.dtype == np.float32
        for key, g in grads.items():
            assert g.dtype == np.float32, f"gradient {key} is {g.dtype}"
        optimizer = Adam(1e-3)
        optimizer.step(np, params, grads)
        for key, state in optimizer.state_dict().items():
            if key != "steps":
                assert state.dtype == np.float32, f"optimizer state {key} is {state.dtype}"
    assert np.asarray(loss).dtype == np.float32
    for field in ("z", "a", "y", "xhat", "code", "code_values"):
        value = getattr(fwd, field)
        if value is not None:
            assert value.dtype == np.float32, f"forward {field} is {value.dtype}"
    for key, value in params.items():
        assert value.dtype == np.float32, f"parameter {key} is {value.dtype}"


# -- Adam ------------------------------------------------------------------------------------


def test_adam_matches_the_textbook_update(threads):
    rng = np.random.default_rng(10)
    p0 = rng.standard_normal((40, 30))
    params = {"W": p0.copy(), "b": rng.standard_normal(30)}
    p_ref = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    opt = Adam(1e-2)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, 6):
        grads = {k: rng.standard_normal(a.shape) for k, a in params.items()}
        for key, g in grads.items():
            m[key] = b1 * m[key] + (1 - b1) * g
            v[key] = b2 * v[key] + (1 - b2) * g * g
            m_hat, v_hat = m[key] / (1 - b1**t), v[key] / (1 - b2**t)
            p_ref[key] -= 1e-2 * m_hat / (np.sqrt(v_hat) + eps)
        opt.step(np, params, {k: g.copy() for k, g in grads.items()})
        for key in params:
            np.testing.assert_allclose(params[key], p_ref[key], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(opt.m[key], m[key], rtol=1e-10, atol=1e-14)
            np.testing.assert_allclose(opt.v[key], v[key], rtol=1e-10, atol=1e-14)


def test_threaded_adam_is_bitwise_equal_to_serial(monkeypatch):
    rng = np.random.default_rng(11)
    start = rng.standard_normal((300, 200)).astype(np.float32)
    grads = [rng.standard_normal((300, 200)).astype(np.float32) for _ in range(3)]
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("SPARSEKIT_NUM_THREADS", threads)
        monkeypatch.setattr(backend_threads, "PARALLEL_MIN_SIZE", 1)
        params, opt = {"W": start.copy()}, Adam(1e-3)
        for g in grads:
            opt.step(np, params, {"W": g.copy()})
        results.append(params["W"])
    assert np.array_equal(results[0], results[1])


def test_adam_updates_non_contiguous_parameters_in_place():
    rng = np.random.default_rng(12)
    base = rng.standard_normal((10, 8))
    view = base[:, ::2]  # not contiguous: must still be updated in place
    before = view.copy()
    Adam(0.1).step(np, {"W": view}, {"W": np.ones_like(view)})
    assert np.all(base[:, ::2] < before)


# -- the generic paths (the ones CuPy takes) -----------------------------------------------


def _generic_backend(dtype):
    """NumPy under another module object: every ``xp is numpy`` fast path is skipped."""
    import types

    import scipy.sparse

    clone = types.ModuleType("numpy_clone")
    clone.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    return Backend("numpy-clone", clone, scipy.sparse, np.dtype(dtype))


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("tied", [True, False])
def test_generic_array_paths_match_the_numpy_fast_paths(name, tied):
    registry = _registry()
    cls = registry.get(name)
    if (tied and not cls.allows_tied) or (not tied and not cls.allows_untied):
        pytest.skip("layout not supported by this method")
    method = registry.create(name, **({"k": 5, "k_start": 5} if name == "ksparse" else {}))
    method.validate(24, 20)
    params, x = _problem(method, tied, np.float64)
    results = []
    for backend in (CPU64, _generic_backend("float64")):
        p = {k: v.copy() for k, v in params.items()}
        if method.own_update:
            out = method.update(backend, p, x, 0.1)
            results.append({"loss": out.loss, **p})
        else:
            loss, grads, _, _ = autoencoder.loss_and_grads(method, backend, p, x)
            results.append({"loss": loss, **{f"grad.{k}": g for k, g in grads.items()}})
    assert set(results[0]) == set(results[1])
    for key, expected in results[0].items():
        np.testing.assert_allclose(results[1][key], expected, rtol=1e-10, atol=1e-12, err_msg=key)


def test_generic_top_k_and_kernels_match_numpy():
    generic = _generic_backend("float64")
    rng = np.random.default_rng(13)
    z = rng.standard_normal((30, 40))
    got = top_k_indices(generic.xp, z, 6)
    assert np.array_equal(np.sort(got, axis=1), top_k_indices(np, z, 6))
    indices, values, dense = random_code(rng)
    w = rng.standard_normal((dense.shape[1], 29))
    g = rng.standard_normal((dense.shape[0], 29))
    np.testing.assert_allclose(sparse_code.code_times(generic, indices, values, w), dense @ w)
    np.testing.assert_allclose(
        sparse_code.gathered_dot(generic, g, w, indices),
        np.take_along_axis(g @ w.T, indices, axis=1),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        sparse_code.code_transpose_times(
            generic, indices, (values, values), (g, g), dense.shape[1]
        ),
        2 * dense.T @ g,
        rtol=1e-12,
        atol=1e-12,
    )


# -- memory ------------------------------------------------------------------------------------


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    from sparsekit.backend import process

    monkeypatch.setattr(process, "_malloc_tuned", False)
    monkeypatch.setenv("SPARSEKIT_MALLOC_TUNING", "0")
    assert process.keep_freed_memory() is False


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="Linux only")
@pytest.mark.parametrize(
    ("name", "options", "batch", "shape"),
    [
        ("l2", "hidden=1000", 256, (2048, 784)),
        # a wide SAE: its 1,024 × 16,384 pre-activations (64 MiB) are above any mmap threshold
        ("topk", "hidden=16384, lr=1e-4", 1024, (4096, 32)),
    ],
)
def test_a_training_step_does_not_fault_in_fresh_memory(name, options, batch, shape):
    """After a warm-up epoch, steps reuse memory: no per-step page-fault churn (weight decay
    allocates two H×D temporaries a step, which glibc used to hand back to the OS; a wide
    SAE's B×H pre-activations were mmapped and unmapped every step).

    Measured in a fresh process tuned as the ``sparsekit`` command tunes it
    (``tune_process``: glibc keeps freed memory). In the test process itself the count
    depends on what earlier tests left in the allocator (its adaptive thresholds), so the
    same code passed or failed with the order of the tests.
    """
    import subprocess
    import sys

    script = f"""
import json, resource
import numpy as np
from sparsekit.backend.process import tune_process
from sparsekit.methods.registry import load_registry
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Callback, Trainer

tune_process()
faults = []

class Count(Callback):
    def on_epoch_begin(self, trainer, epoch):
        self.start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def on_epoch_end(self, trainer, metrics):
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.start)

data = np.random.default_rng(14).random({shape}).astype(np.float32)
method = load_registry().create("{name}")
config = resolve_config(method, epochs=3, batch_size={batch}, {options})
Trainer(method, data, config, callbacks=[Count()]).fit()
print(json.dumps(faults))
"""
    env = {**os.environ, "SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    faults = json.loads(out.stdout.strip().splitlines()[-1])
    steps = shape[0] // batch
    # one 1000×784 float32 matrix is 766 pages, the SAE's pre-activations 16,384: fresh
    # temporaries every step would show thousands
    assert min(faults[1:]) / steps < 300, faults


def padded_code(rng, rows=40, hidden=60, widest=11, dim=24, dtype=np.float64):
    """A BatchTopK-like padded code: row i keeps counts[i] increasing units (0 to ``widest``,
    one row ``widest``), then padding at other units, with value 0."""
    counts = rng.integers(0, widest + 1, size=rows)
    counts[3] = widest
    indices = np.empty((rows, widest), dtype=np.int64)
    values = np.zeros((rows, widest), dtype=dtype)
    for i, c in enumerate(counts):
        units = rng.permutation(hidden)
        indices[i, :c] = np.sort(units[:c])
        indices[i, c:] = units[c:widest]
        values[i, :c] = rng.random(c) + 0.1
    w = rng.standard_normal((hidden, dim)).astype(dtype)
    return indices, values, w


@pytest.mark.parametrize("seed", [0, 1])
def test_kept_gathered_dot_is_the_dense_product_at_the_kept_entries(seed, threads, monkeypatch):
    monkeypatch.setattr(sparse_code, "KEPT_BLOCK_BYTES", 600)  # several blocks per width
    rng = np.random.default_rng(seed)
    indices, values, w = padded_code(rng)
    g = rng.standard_normal((indices.shape[0], w.shape[1]))
    out = sparse_code.kept_gathered_dot(CPU64, g, w, indices, values)
    kept = values != 0
    expected = np.where(kept, np.take_along_axis(g @ w.T, indices, axis=1), 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert not out[~kept].any()  # the padding is never multiplied


@pytest.mark.parametrize("exact", [True, False])
def test_kept_gathered_dot_has_the_whole_width_products_bits(exact, monkeypatch):
    """Each kept entry has the bits of gathered_dot over the code's whole width, whether the
    rows take their rounded-up counts (the BLAS probe holds, as on every machine that runs
    this suite) or the whole width (it does not); on one thread or four."""
    rng = np.random.default_rng(2)
    indices, values, w = padded_code(rng, rows=300, widest=23, dim=40, dtype=np.float32)
    g = rng.standard_normal((indices.shape[0], w.shape[1])).astype(np.float32)
    kept = values != 0
    whole = np.where(kept, sparse_code.gathered_dot(CPU32, g, w, indices), 0)
    assert sparse_code._compact_widths_exact(np.dtype(np.float32), w.shape[1])
    if not exact:
        monkeypatch.setattr(sparse_code, "_compact_widths_exact", lambda dtype, dim: False)
    spans = []
    real = sparse_code._kept_dots_rows
    monkeypatch.setattr(
        sparse_code, "_kept_dots_rows", lambda *a: spans.append(a[5]) or real(*a)
    )
    assert np.array_equal(sparse_code.kept_gathered_dot(CPU32, g, w, indices, values), whole)
    assert spans == ([4, 8, 12, 16, 20, 23] if exact else [23])  # 21..23 take the whole 23
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    monkeypatch.setattr(backend_threads, "PARALLEL_MIN_SIZE", 16)
    assert np.array_equal(sparse_code.kept_gathered_dot(CPU32, g, w, indices, values), whole)


def test_the_blas_probe_says_no_when_widths_change_the_bits(monkeypatch):
    """A BLAS whose column bits depend on the product's width sends every row to the whole
    width: the probe compares real products, so a fake matmul that adds the width shows it."""
    real = np.matmul

    def width_dependent(a, b, *args, **kwargs):
        out = real(a, b, *args, **kwargs)
        return out * (1 + 1e-6 * a.shape[-2]) if a.ndim == 3 else out

    monkeypatch.setattr(sparse_code, "_compact_exact", {})
    monkeypatch.setattr(sparse_code.np, "matmul", width_dependent)
    assert not sparse_code._compact_widths_exact(np.dtype(np.float64), 7)
    monkeypatch.setattr(sparse_code.np, "matmul", real)
    monkeypatch.setattr(sparse_code, "_compact_exact", {})
    assert sparse_code._compact_widths_exact(np.dtype(np.float64), 7)


@pytest.mark.parametrize("generic", [False, True])
def test_kept_gathered_dot_multiplies_each_entry_by_its_groups_matrix(generic):
    """Matryoshka: entry (i, j) times the matrix of its unit's group, each once."""
    rng = np.random.default_rng(3)
    indices, values, w = padded_code(rng, hidden=60)
    ends = np.array([6, 15, 30, 60])
    dense = [rng.standard_normal((indices.shape[0], w.shape[1])) for _ in ends]
    backend = _generic_backend("float64") if generic else CPU64
    group = np.searchsorted(ends, indices, side="right")
    out = sparse_code.kept_gathered_dot(backend, dense, w, indices, values, group)
    expected = np.zeros_like(values)
    for q, g in enumerate(dense):
        expected += np.where(group == q, np.take_along_axis(g @ w.T, indices, axis=1), 0.0)
    expected[values == 0] = 0.0
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="one per group"):
        sparse_code.kept_gathered_dot(CPU64, dense, w, indices, values)
    if not generic:  # float32: the bits of each group's whole-width product, masked and summed
        w32, dense32 = w.astype(np.float32), [g.astype(np.float32) for g in dense]
        whole = np.zeros(values.shape, dtype=np.float32)
        for q, g in enumerate(dense32):
            whole += sparse_code.gathered_dot(CPU32, g, w32, indices) * (group == q)
        got = sparse_code.kept_gathered_dot(CPU32, dense32, w32, indices, values, group)
        assert np.array_equal(got, np.where(values != 0, whole, 0))


def test_kept_gathered_dot_bits_do_not_depend_on_blocks_or_threads(monkeypatch):
    """The rows are shared among the threads by work and gathered in blocks; each row's
    products are its own calls, so any sharing gives the same bits (groups or not)."""
    rng = np.random.default_rng(4)
    indices, values, w = padded_code(
        rng, rows=300, widest=23, hidden=60, dim=40, dtype=np.float32
    )
    group = np.searchsorted(np.array([6, 15, 30, 60]), indices, side="right")
    dense = [rng.standard_normal((300, 40)).astype(np.float32) for _ in range(4)]
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "1")
    one = sparse_code.kept_gathered_dot(CPU32, dense, w, indices, values, group)
    single = sparse_code.kept_gathered_dot(CPU32, dense[0], w, indices, values)
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    monkeypatch.setattr(backend_threads, "PARALLEL_MIN_SIZE", 16)  # four shares
    monkeypatch.setattr(sparse_code, "KEPT_BLOCK_BYTES", 500)  # blocks of a few rows
    shares = []
    real = backend_threads.split_run
    monkeypatch.setattr(
        sparse_code, "split_run", lambda fn, size, **kw: shares.append(size) or real(fn, size, **kw)
    )
    grouped = sparse_code.kept_gathered_dot(CPU32, dense, w, indices, values, group)
    assert np.array_equal(grouped, one)
    assert np.array_equal(sparse_code.kept_gathered_dot(CPU32, dense[0], w, indices, values), single)
    assert shares == [4, 4]
