"""A library changes nothing process-wide; the command tunes its process through one call.

``import sparsekit`` sets no environment variable and loads none of the heavy or CLI-only
modules; building a Trainer and training leave glibc's malloc settings, the environment and
the BLAS thread limits as they were (BLAS runs on one thread only inside the step loop,
:func:`sparsekit.backend.process.own_threads`). ``sparsekit.tune_process()`` is the explicit,
documented call the ``sparsekit`` command makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sparsekit.backend import process, spin, threads

HEAVY = ("typer", "rich", "numba", "scipy", "matplotlib", "cupy", "threadpoolctl")


def _run(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sparsekit_changes_and_loads_nothing():
    result = _run(
        "import os, sys, json; before = dict(os.environ); import sparsekit; "
        f"print(json.dumps({{'env_same': dict(os.environ) == before, "
        f"'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    assert result == {"env_same": True, "loaded": []}


def test_training_leaves_the_process_as_it_was():
    code = """
import json, os
import numpy as np
import pytest
import sparsekit
from sparsekit.backend import process
from threadpoolctl import threadpool_info

def blas():
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

env, threads = dict(os.environ), blas()
x = np.random.default_rng(0).uniform(0, 1, (256, 40)).astype(np.float32)
trainer = sparsekit.Trainer(
    sparsekit.make_method("ksparse", k=5, k_start=5), x,
    sparsekit.resolve_config(sparsekit.make_method("ksparse"), hidden=30, epochs=1, batch_size=64),
)
trainer.fit()
after = blas()  # (a BLAS loaded during training, e.g. SciPy's, is not limited either)
print(json.dumps({"env_same": dict(os.environ) == env, "malloc_tuned": process._malloc_tuned,
                  "blas_same": {k: after[k] for k in threads} == threads
                  and all(n == max(threads.values()) for n in after.values())}))
"""
    assert _run(code) == {"env_same": True, "malloc_tuned": False, "blas_same": True}


def test_the_command_tunes_its_process():
    code = """
import json
from sparsekit.backend import process
from sparsekit.cli.main import main
try:
    main(["methods"])
except SystemExit:
    pass
print(json.dumps({"malloc_tuned": process._malloc_tuned}))
"""
    assert _run(code) == {"malloc_tuned": True}


def test_own_threads_bounds_blas_and_splits_products_inside_only(monkeypatch):
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    # compiling Numba code (the workers' spin-waits, on their first split) loads SciPy's BLAS
    # as a second library: load it before counting
    spin.spinner()
    before = blas()
    a = np.random.default_rng(0).standard_normal((256, 300)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((300, 200)).astype(np.float32)
    monkeypatch.setattr(threads, "PRODUCT_MIN_WORK", 1)
    outside = threads.matmul(a, b)
    with process.own_threads():
        assert all(n == 1 for n in blas())
        inside = threads.matmul(a, b)
        single = a @ b  # one BLAS call on one thread
    assert blas() == before
    assert inside.dtype == np.float32
    # split by rows, each part one single-threaded BLAS call: float32 rounding apart (BLAS
    # blocks the inner sum differently for another shape), the same product
    scale = float(np.abs(single).max())
    np.testing.assert_allclose(inside, single, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(outside, single, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("shape", [(256, 300, 200), (64, 300, 500)])  # split by rows, columns
def test_a_product_plus_a_bias_is_the_product_then_the_addition(shape, monkeypatch):
    """``matmul(a, b, plus)`` adds the bias on each thread's part right after its product:
    the same bits as adding it to the whole product afterwards, split or not."""
    rows, inner, cols = shape
    rng = np.random.default_rng(2)
    a = rng.standard_normal((rows, inner)).astype(np.float32)
    b = rng.standard_normal((inner, cols)).astype(np.float32)
    bias = rng.standard_normal(cols).astype(np.float32)
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "PRODUCT_MIN_WORK", 1)
    outside = threads.matmul(a, b, plus=bias)
    expected_outside = a @ b
    expected_outside += bias
    np.testing.assert_array_equal(outside, expected_outside)
    with process.own_threads():
        split = threads.matmul(a, b, plus=bias)
        expected = threads.matmul(a, b)
        expected += bias
        broadcast = threads.matmul(a, b, plus=bias[None, :])  # not a row vector: unsplit
    assert split.dtype == np.float32
    np.testing.assert_array_equal(split, expected)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(broadcast, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("threads_env", "inside", "side_by_side"),
    [("2", True, True), ("3", True, False), ("2", False, False), ("1", True, False)],
)
def test_run_tasks_side_by_side_only_when_the_tasks_fill_the_threads(
    threads_env, inside, side_by_side, monkeypatch
):
    """Each task runs once; two tasks on two threads inside own_threads run on two threads
    (and a product a task splits runs on its own thread); with more threads than tasks,
    outside own_threads or on one thread, they run one after another on the caller."""
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", threads_env)
    monkeypatch.setattr(threads, "PRODUCT_MIN_WORK", 1)
    rng = np.random.default_rng(4)
    a = rng.standard_normal((64, 80)).astype(np.float32)
    b = rng.standard_normal((80, 96)).astype(np.float32)
    ran: list[tuple[int, int]] = []
    products = {}

    def task(i):
        def run():
            ran.append((i, threading.get_ident()))
            products[i] = threads.matmul(a, b)

        return run

    scope = process.own_threads() if inside else contextlib.nullcontext()
    with scope:
        threads.run_tasks(np, [task(0), task(1)])
        alone = threads.matmul(a, b)
    assert sorted(i for i, _ in ran) == [0, 1]
    idents = {ident for _, ident in ran}
    assert len(idents) == (2 if side_by_side else 1)
    if not side_by_side:
        assert idents == {threading.get_ident()}
    for product in products.values():
        scale = float(np.abs(alone).max())
        np.testing.assert_allclose(product, alone, rtol=1e-5, atol=1e-5 * scale)


def test_run_tasks_side_by_side_raises_a_task_error_once_every_task_has_run(monkeypatch):
    """(One after another, the first error stops the rest, as any loop would.)"""
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "2")
    done = []

    def fail():
        raise ValueError("task failed")

    def slow():
        time.sleep(0.05)
        done.append(True)

    with process.own_threads(), pytest.raises(ValueError, match="task failed"):
        threads.run_tasks(np, [fail, slow])
    assert done == [True]


def test_run_tasks_on_a_device_runs_them_in_order():
    order = []

    class Device:  # any array module but NumPy: one stream, the tasks' order kept
        pass

    with process.own_threads():
        threads.run_tasks(Device, [lambda: order.append(0), lambda: order.append(1)])
    assert order == [0, 1]
