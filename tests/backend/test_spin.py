"""The spin-waits of the threads' hand-offs (``sparsekit.backend.spin``): they end as soon as
the counter they watch is written, give up after their budget, release the GIL while they
spin, and change nothing but the speed of :func:`split_run`."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from sparsekit.backend import spin
from sparsekit.backend import threads as backend_threads

pytest.importorskip("numba")


@pytest.fixture()
def spinner(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_SPIN_US", "5000000")  # 5 s: long enough to notice a hang
    made = spin.spinner()
    assert made is not None and made.budget_ns > 0
    return made


def test_a_wait_ends_at_the_store_and_lets_other_threads_run(spinner, monkeypatch):
    """A thread spinning on a counter returns as soon as another thread writes it, and holds
    no GIL meanwhile: the writer, plain Python, runs while the spinner spins."""
    # (were both threads put on one CPU, the spin would rightly give up: not tested here)
    monkeypatch.setattr(spinner, "_contended_ns", 10**10)
    counters = np.zeros(16, dtype=np.int64)
    result = {}

    def waiter():
        start = time.perf_counter()
        result["seen"] = spinner.wait(counters, 8, 3)
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=waiter)
    thread.start()
    python_steps = 0
    deadline = time.perf_counter() + 0.05
    while time.perf_counter() < deadline:  # Python bytecode, which needs the GIL
        python_steps += 1
    counters[8] = 3
    thread.join(timeout=4)
    assert not thread.is_alive()
    assert result["seen"] is True
    assert result["seconds"] < 1.0  # ended at the store, not at the 5 s budget
    assert python_steps > 1000


def test_a_wait_returns_at_once_when_the_counter_is_already_there(spinner):
    counters = np.array([7], dtype=np.int64)
    start = time.perf_counter()
    assert spinner.wait(counters, 0, 5) is True
    assert time.perf_counter() - start < 0.5


def test_a_wait_gives_up_after_its_budget(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_SPIN_US", "20000")  # 20 ms
    made = spin.spinner()
    counters = np.zeros(1, dtype=np.int64)
    start = time.perf_counter()
    assert made.wait(counters, 0, 1) is False
    seconds = time.perf_counter() - start
    assert 0.002 < seconds < 2.0  # the budget, give or take a slow machine


def test_store_then_wait_stores_before_it_waits(spinner):
    counters = np.zeros(16, dtype=np.int64)
    assert spinner.store_then_wait(counters, 8, 42, 8, 42) is True  # sees its own store
    assert counters[8] == 42


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_wait_blocks_once_another_thread_wants_its_cpu(spinner):
    """Two threads of one CPU: the spinner's yield hands the CPU to the other, busy thread,
    comes back late, and gives up (False) long before its 5 s budget; then every wait gives
    up at once for QUIET_S, without spinning."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    counters = np.zeros(1, dtype=np.int64)
    result = {}

    def waiter():
        os.sched_setaffinity(0, {cpu})  # this thread only
        start = time.perf_counter()
        result["seen"] = spinner.wait(counters, 0, 1)
        result["seconds"] = time.perf_counter() - start

    os.sched_setaffinity(0, {cpu})
    try:
        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.perf_counter() + 1.0
        while thread.is_alive() and time.perf_counter() < deadline:
            pass  # busy on the same CPU
        thread.join(timeout=6)
    finally:
        os.sched_setaffinity(0, before)
    assert result["seen"] is False
    assert result["seconds"] < 1.5
    assert spinner.contended == 1
    start = time.perf_counter()
    assert spinner.wait(counters, 0, 1) is False  # quiet: no spin at all
    assert time.perf_counter() - start < spin.QUIET_S
    assert spinner.contended == 1


@pytest.mark.parametrize("setting", [("SPARSEKIT_SPIN_US", "0"), ("SPARSEKIT_JIT", "0")])
def test_spinning_is_off_without_a_budget_or_without_numba(setting, monkeypatch):
    monkeypatch.setenv(*setting)
    assert spin.spinner() is None


@pytest.mark.parametrize("spin_us", ["0", "2000"])
def test_split_run_is_the_same_spinning_or_blocking(spin_us, monkeypatch):
    """Many calls in a row (each hand-off within a worker's spin) cover every index once, an
    error still reaches the caller, and the counters agree with the parts given."""
    monkeypatch.setenv("SPARSEKIT_SPIN_US", spin_us)
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "3")
    monkeypatch.setattr(backend_threads, "_workers", None)  # fresh workers read the setting
    seen = np.zeros(999, dtype=np.int64)

    def mark(lo, hi):
        seen[lo:hi] += 1

    for _ in range(200):
        backend_threads.split_run(mark, seen.size, min_size=1)
    assert np.all(seen == 200)
    workers = backend_threads._workers
    assert (workers._spin is None) == (spin_us == "0")

    def fail_on_a_worker(lo, hi):
        if lo > 0:
            raise ValueError("worker part")

    with pytest.raises(ValueError, match="worker part"):
        backend_threads.split_run(fail_on_a_worker, 9, min_size=1)
    backend_threads.split_run(mark, seen.size, min_size=1)
    assert np.all(seen == 201)
    for i in range(2):
        given = workers.counts[backend_threads._given(i)]
        assert given == workers._issued[i] == 202
        assert workers.counts[backend_threads._finished(i)] == given
    workers.stop()
