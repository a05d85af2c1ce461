"""Same seed, same weights (bit for bit, on the CPU); runs never share a directory."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

import sparsekit
from sparsekit.runs import writer as run_module


@pytest.fixture(scope="module")
def images(mnist_2000) -> np.ndarray:
    return mnist_2000[:1000]


def _weights(method: str, data: np.ndarray, seed: int, **params) -> dict[str, np.ndarray]:
    model = sparsekit.train(method, data, hidden=48, epochs=2, seed=seed, **params)
    return model.numpy_params()


@pytest.mark.parametrize(
    ("method", "params"),
    [("ksparse", {"k": 10, "k_start": 30}), ("kl", {}), ("arora", {})],
)
def test_same_seed_gives_bitwise_identical_weights(images, method, params):
    first = _weights(method, images, 7, **params)
    second = _weights(method, images, 7, **params)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name
    other = _weights(method, images, 8, **params)
    assert any(not np.array_equal(first[k], other[k]) for k in first)


def _frozen_clock(monkeypatch) -> None:
    # every run believes it starts in the same second
    monkeypatch.setattr(run_module.time, "strftime", lambda fmt, *a: "20250101-120000")


def test_run_dirs_created_in_the_same_second_from_threads_are_distinct(tmp_path, monkeypatch):
    _frozen_clock(monkeypatch)
    n = 24
    barrier = threading.Barrier(n)
    made: list[Path] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait()
        path = run_module.create_run_dir(tmp_path, "ksparse")
        with lock:
            made.append(path)

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == n
    assert len(set(made)) == n
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)
    assert {p.name for p in made} == {"ksparse-20250101-120000"} | {
        f"ksparse-20250101-120000-{i}" for i in range(2, n + 1)
    }


def _create_in_process(root: str, barrier, queue) -> None:
    run_module.time.strftime = lambda fmt, *a: "20250101-120000"
    barrier.wait()
    queue.put(str(run_module.create_run_dir(root, "l2")))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork to be quick"
)
def test_run_dirs_created_in_the_same_second_from_processes_are_distinct(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 8
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_create_in_process, args=(str(tmp_path), barrier, queue))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    made = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(set(made)) == n
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(m).name for m in made)
