"""Every fused op (:mod:`sparsekit.backend.fused`) against the reference formula it mirrors.

Each twin performs its reference's operations in the same order, so both paths must give
the same bits, in float32 and float64 (coordinate descent's twin, which schedules its moves
differently, to its stated tolerance): the optimizers, weight decay, the sigmoid's backward
products, KL's penalty, Arora's decoding, the active-unit counts, the minibatch gather and
whole training runs. Also checked: every op declared in sparsekit has a twin and is covered
here, arrays a loop refuses, ``SPARSEKIT_JIT=0``, Numba missing, and a loop that fails on
first use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter

import numpy as np
import pytest

import sparsekit
from sparsekit.backend import fused
from sparsekit.backend.threads import PARALLEL_MIN_SIZE
from sparsekit.core import step as autoencoder
from sparsekit.core.contract import WeightDecay, penalty_pair
from sparsekit.methods.l2 import L2, l2_penalty
from sparsekit.training.optim import SGD, Adam, Momentum

DTYPES = [np.float32, np.float64]
OPTIMIZERS = {
    "sgd": lambda: SGD(0.05),
    "momentum": lambda: Momentum(0.05, 0.9),
    "adam": lambda: Adam(1e-2),
}


# -- fixtures: force one path or the other ---------------------------------------------------


class _Spy:
    """Records, per op call, whether its fused twin ran (True) or the reference (False)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list[tuple[str, bool]] = []

        def call(op, *args, **kwargs):
            if op.fused is not None:
                result = op.fused(*args, **kwargs)
                if result is not fused.NOT_RUN:
                    self.results.append((op.__name__, True))
                    return result
            self.results.append((op.__name__, False))
            return op.reference(*args, **kwargs)

        monkeypatch.setattr(fused.Op, "__call__", call)

    def names(self) -> set[str]:
        return {name for name, _ in self.results}


@pytest.fixture
def numpy_path(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    """No fused loops: every op runs its reference formula."""
    monkeypatch.setitem(fused._state, "numba", None)
    return _Spy(monkeypatch)


@pytest.fixture
def fused_kernels() -> None:
    """The real compiled loops (skips without Numba; fails if they are off)."""
    pytest.importorskip("numba")
    assert fused.enabled(), "Numba is installed but the fused loops are off"


@pytest.fixture
def fused_path(monkeypatch: pytest.MonkeyPatch, fused_kernels: None) -> tuple[_Spy, Counter]:
    """The compiled loops, wrapped to count calls by loop name (``_adam_loop``, ...)."""
    calls: Counter = Counter()
    lock = threading.Lock()
    real_ready = fused.Loop.ready

    def ready(loop, key, *warm):
        fn = real_ready(loop, key, *warm)
        if fn is None:
            return None

        def counting(*args):
            with lock:
                calls[loop.py.__name__] += 1
            return fn(*args)

        return counting

    monkeypatch.setattr(fused.Loop, "ready", ready)
    return _Spy(monkeypatch), calls


@pytest.fixture
def split_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads for split_run, so large arrays are cut at uneven offsets."""
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")


def _copy(arrays: dict) -> dict:
    return {k: v.copy() for k, v in arrays.items()}


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert a[key].dtype == b[key].dtype, f"{what}[{key}] dtype"
        assert np.array_equal(a[key], b[key]), (
            f"{what}[{key}] differs: max |Δ| = {np.max(np.abs(a[key] - b[key]))}"
        )


# -- 2, 3: optimizers ------------------------------------------------------------------------


def _problem(dtype) -> tuple[dict, list[dict]]:
    """Params (a weight big enough to be split over threads, two small vectors), 3 grads."""
    rng = np.random.default_rng(1)
    shapes = {"W": (700, 800), "b": (800,), "c": (37,)}
    assert 700 * 800 >= PARALLEL_MIN_SIZE
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [
        {k: (0.1 * rng.standard_normal(s)).astype(dtype) for k, s in shapes.items()}
        for _ in range(3)
    ]
    return params, grads


def _train_steps(opt_name: str, params: dict, grads: list[dict], decay) -> tuple[dict, dict]:
    opt = OPTIMIZERS[opt_name]()
    params = _copy(params)
    for g in grads:
        opt.step(np, params, _copy(g), decay=decay)
    state = {k: v for k, v in opt.state_dict().items() if k != "steps"}
    assert opt.steps == len(grads)
    return params, state


@pytest.mark.usefixtures("split_threads")
@pytest.mark.parametrize("decay", [None, {"W": 1e-3, "c": 0.5}], ids=["no-decay", "decay"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_optimizer_fused_equals_numpy(opt_name, dtype, decay, monkeypatch, fused_kernels):
    """3 steps of SGD/momentum/Adam: params and optimizer state bitwise equal on both paths."""
    params, grads = _problem(dtype)
    fused_params, fused_state = _train_steps(opt_name, params, grads, decay)

    monkeypatch.setitem(fused._state, "numba", None)
    numpy_params, numpy_state = _train_steps(opt_name, params, grads, decay)

    assert not np.array_equal(fused_params["W"], params["W"])  # the steps did something
    _assert_same(fused_params, numpy_params, "params")
    _assert_same(fused_state, numpy_state, "state")


@pytest.mark.usefixtures("split_threads")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_folded_decay_equals_decay_added_to_gradient(opt_name, dtype, fused_path):
    """step(decay={"W": λ}) equals grads["W"] += λ·W followed by step(), bitwise."""
    spy, calls = fused_path
    lam = 3e-3
    params, grads = _problem(dtype)
    folded, folded_state = _train_steps(opt_name, params, grads, {"W": lam})

    opt = OPTIMIZERS[opt_name]()
    added = _copy(params)
    for g in grads:
        g = _copy(g)
        g["W"] += lam * added["W"]
        opt.step(np, added, g)
    added_state = {k: v for k, v in opt.state_dict().items() if k != "steps"}

    assert all(ok for _, ok in spy.results) and calls[f"_{opt_name}_loop"] > 0
    _assert_same(folded, added, "params")
    _assert_same(folded_state, added_state, "state")


@pytest.mark.usefixtures("split_threads")
@pytest.mark.parametrize("path", ["fused_path", "numpy_path"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_step_returns_squares_of_decayed_params_before_the_update(opt_name, path, request):
    """step(decay=...) returns Σp² of exactly the decayed keys, taken before the update
    (weight decay's value at the parameters the loss was computed with)."""
    request.getfixturevalue(path)
    params, grads = _problem(np.float32)
    expected = {
        k: float(np.dot(params[k].ravel().astype(np.float64), params[k].ravel()))
        for k in ("W", "c")
    }
    opt = OPTIMIZERS[opt_name]()
    squares = opt.step(np, params, _copy(grads[0]), decay={"W": 1e-3, "c": 0.0})
    assert set(squares) == {"W", "c"}
    for k in squares:
        assert float(squares[k]) == pytest.approx(expected[k], rel=1e-5)
    assert opt.step(np, params, _copy(grads[1])) == {}


def test_optimizer_numpy_path_really_numpy(numpy_path):
    """With the loops forced off, the optimizers fall back (run() returns False)."""
    params, grads = _problem(np.float32)
    for name in OPTIMIZERS:
        _train_steps(name, params, grads[:1], {"W": 1e-3})
    assert numpy_path.names() == {"update_parameter"}
    assert not any(ok for _, ok in numpy_path.results)


# -- 4: autoencoder gradients ----------------------------------------------------------------


def _ae_problem(name: str, tied: bool, dtype: str):
    method = sparsekit.load_registry().create(name)
    backend = sparsekit.get_backend(False, dtype)
    rng = np.random.default_rng(0)
    dim, hidden, batch = 30, 20, 50  # 1/50 is inexact: the order of the scaling matters
    x = rng.uniform(0, 1, size=(batch, dim)).astype(dtype)
    params = method.init_params(np.random.default_rng(0), dim, hidden, tied, x)
    params = {k: v.astype(dtype) for k, v in params.items()}
    # Non-zero biases, so the bias gradients are not trivially alike.
    params["b_enc"] += rng.standard_normal(hidden).astype(dtype) * 0.1
    params["b_dec"] += rng.standard_normal(dim).astype(dtype) * 0.1
    return method, backend, params, x


AE_CASES = [(m, t) for m in ("plain", "l2", "kl") for t in (False, True)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("name", "tied"), AE_CASES, ids=[f"{m}-{'tied' if t else 'untied'}" for m, t in AE_CASES]
)
def test_loss_and_grads_fused_equals_numpy(name, tied, dtype, monkeypatch, fused_path):
    """loss_and_grads: every gradient bitwise equal on both paths; the loss equal but for
    the sum of squared errors, which the fused output pass accumulates in float64."""
    spy, calls = fused_path
    method, backend, params, x = _ae_problem(name, tied, dtype)
    loss_f, grads_f, _, rec_f = autoencoder.loss_and_grads(method, backend, _copy(params), x)
    # g′(Y) with the output error and b_dec's gradient; f′(Z) with b_enc's (and KL's row)
    assert calls["_output_delta_loop"] == 1 and calls["_hidden_delta_loop"] == 1
    assert (calls["_kl_penalty_loop"] == 1) == (name == "kl")
    ran = Counter(n for n, ok in spy.results if ok)
    assert ran["add_scaled"] == (0 if name == "plain" else 1 if tied else 2)
    assert all(ok for _, ok in spy.results)

    monkeypatch.setitem(fused._state, "numba", None)
    loss_n, grads_n, _, rec_n = autoencoder.loss_and_grads(method, backend, _copy(params), x)

    _assert_same(grads_f, grads_n, "grads")
    assert loss_f.dtype == loss_n.dtype == rec_f.dtype == rec_n.dtype == np.dtype(dtype)
    rel = 1e-6 if dtype == "float32" else 1e-13
    assert rec_f == pytest.approx(rec_n, rel=rel) and loss_f == pytest.approx(loss_n, rel=rel)
    if name == "plain":  # the squares are all there is: as close as the dtype allows
        assert abs(float(rec_f) - float(rec_n)) <= 2 * np.spacing(np.abs(rec_n))


@pytest.mark.parametrize("path", ["fused_path", "numpy_path"])
@pytest.mark.parametrize(
    ("name", "tied"), AE_CASES, ids=[f"{m}-{'tied' if t else 'untied'}" for m, t in AE_CASES]
)
def test_before_decay_plus_add_to_equals_loss_and_grads(name, tied, path, request):
    """loss_and_grads_before_decay, plus the decay's value and decay.add_to(grads), is
    loss_and_grads, on each path."""
    request.getfixturevalue(path)
    method, backend, params, x = _ae_problem(name, tied, "float32")
    loss, grads, _, _ = autoencoder.loss_and_grads(method, backend, params, x)
    loss_b, grads_b, _, _, decay = autoencoder.loss_and_grads_before_decay(
        method, backend, params, x
    )
    if name == "plain":
        assert decay is None
    else:
        assert isinstance(decay, WeightDecay)
        assert decay.strengths() == dict.fromkeys(
            ["W_enc"] if tied else ["W_enc", "W_dec"], method.weight_decay
        )
        assert not np.array_equal(loss, loss_b)  # the value is not in the loss yet
        loss_b = loss_b + decay.value
        decay.add_to(grads_b)
    _assert_same(grads, grads_b, "grads")
    assert np.array_equal(loss, loss_b)


# -- 5: whole training runs ------------------------------------------------------------------


def _short_run(name: str, optimizer: str | None, batch_size: int):
    x = np.random.default_rng(5).uniform(0, 1, size=(200, 30)).astype(np.float32)
    kwargs = {} if optimizer is None else {"optimizer": optimizer}
    model = sparsekit.train(name, x, hidden=20, epochs=2, batch_size=batch_size, seed=0, **kwargs)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in model.history]
    return model.params, history


@pytest.fixture
def trainer_history(monkeypatch):
    """Model has no history attribute: capture the trainer's via a patched Trainer.fit."""
    real_fit = sparsekit.Trainer.fit

    def fit(self):
        model = real_fit(self)
        model.history = self.history
        return model

    monkeypatch.setattr(sparsekit.Trainer, "fit", fit)


@pytest.mark.usefixtures("trainer_history")
@pytest.mark.parametrize(
    ("name", "optimizer", "batch_size"),
    [("l2", None, 32), ("kl", "momentum", 32), ("plain", "sgd", 24)],  # 24: 1/B inexact
)
def test_training_fused_equals_numpy(name, optimizer, batch_size, monkeypatch, fused_path):
    """A short training run gives the same params and metrics with the loops off as on."""
    spy, calls = fused_path
    params_f, history_f = _short_run(name, optimizer, batch_size)
    # (float data needs no gather-and-scale pass: take_scaled's twin declines it)
    refused = [r for r in spy.results if not r[1] and r[0] != "take_scaled"]
    assert not refused, refused[:3]
    assert calls["_output_delta_loop"] > 0 and calls["_hidden_delta_loop"] > 0
    assert calls["_count_active_loop"] > 0 and calls[f"_{optimizer or 'adam'}_loop"] > 0

    monkeypatch.setitem(fused._state, "numba", None)
    off = _Spy(monkeypatch)
    calls.clear()
    params_n, history_n = _short_run(name, optimizer, batch_size)
    assert not calls, f"compiled loops called with the JIT off: {dict(calls)}"
    assert off.results and not any(ok for _, ok in off.results)
    assert {"sigmoid_hidden_delta", "count_active", "update_parameter"} <= off.names()

    _assert_same(params_f, params_n, "params")
    # Σ‖W‖² (weight decay's value) comes from the update pass and Σ(X̂ − X)² from the output
    # pass, both in float64 lanes, or from NumPy's float32 vdot: the loss and the MSE may
    # differ in their last bits, nothing else.
    for h_f, h_n in zip(history_f, history_n, strict=True):
        assert h_f.pop("loss") == pytest.approx(h_n.pop("loss"), rel=1e-6)
        assert h_f.pop("mse") == pytest.approx(h_n.pop("mse"), rel=1e-6)
        assert h_f.pop("fve") == pytest.approx(h_n.pop("fve"), abs=1e-6)
    assert history_f == history_n


# -- 6: WeightDecay --------------------------------------------------------------------------


def _weights(dtype=np.float32) -> dict:
    rng = np.random.default_rng(2)
    return {
        "W_enc": rng.standard_normal((20, 30)).astype(dtype),
        "W_dec": rng.standard_normal((20, 30)).astype(dtype),
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_weight_decay_declares_its_value_and_gradients(dtype):
    """WeightDecay's value is ½λΣ‖W‖² and its gradients λW (penalty_pair reads them), and it
    does not pose as a tuple: the step recognises it by its type."""
    from sparsekit.core.contract import penalty_pair

    lam = 3e-3
    w = _weights(dtype)
    decay = l2_penalty(np, w, lam)
    assert isinstance(decay, WeightDecay)
    value, grads = penalty_pair(decay)
    assert value is decay.value and grads is decay.grads
    expected = sum(0.5 * lam * float(np.sum(a.astype(np.float64) ** 2)) for a in w.values())
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert grads.keys() == w.keys()
    for k in w:
        assert grads[k].dtype == dtype
        assert np.array_equal(grads[k], lam * w[k])
    with pytest.raises(TypeError):
        _ = decay[0]
    assert decay.strengths() == {"W_enc": lam, "W_dec": lam}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("path", ["fused_path", "numpy_path"])
def test_weight_decay_add_to(path, dtype, request):
    """add_to adds λW to each gradient in place (same array object), equal to g + λ·W."""
    spy = request.getfixturevalue(path)
    if path == "fused_path":
        spy, _calls = spy
    lam = 3e-3
    w = _weights(dtype)
    grads = {
        k: np.random.default_rng(3).standard_normal(v.shape).astype(dtype) for k, v in w.items()
    }
    expected = {k: grads[k] + lam * w[k] for k in w}
    ids = {k: id(v) for k, v in grads.items()}
    WeightDecay(np, w, lam).add_to(grads)
    assert {k: id(v) for k, v in grads.items()} == ids
    _assert_same(grads, expected, "grads")
    assert [ok for _, ok in spy.results] == [path == "fused_path"] * 2


class ScaledL2(L2):
    """L2 whose weight penalty doubles the gradient of the base class's WeightDecay."""

    name = "scaled-l2-test"

    def weight_penalty(self, xp, weights):
        value, grads = penalty_pair(super().weight_penalty(xp, weights))
        return value, {k: 2 * g for k, g in grads.items()}


@pytest.mark.parametrize("path", ["fused_path", "numpy_path"])
def test_weight_penalty_override_is_not_bypassed(path, request):
    """An L2 subclass that rescales the unpacked gradient gets that gradient, in training too."""
    request.getfixturevalue(path)
    lam = 3e-3
    method, backend, params, x = _ae_problem("l2", False, "float32")
    scaled = ScaledL2(weight_decay=lam)
    base, base_grads, _, _, decay = autoencoder.loss_and_grads_before_decay(
        L2(weight_decay=lam), backend, params, x
    )
    loss, grads, _, _ = autoencoder.loss_and_grads(scaled, backend, params, x)
    assert np.array_equal(loss, base + decay.value)
    for k in ("W_enc", "W_dec"):
        assert np.array_equal(grads[k], base_grads[k] + 2 * (lam * params[k]))
    for k in ("b_enc", "b_dec"):
        assert np.array_equal(grads[k], base_grads[k])

    # Training: ScaledL2(λ) follows L2(2λ)'s parameters exactly (2·(λW) = (2λ)·W in floats),
    # and not L2(λ)'s.
    data = np.random.default_rng(6).uniform(0, 1, size=(100, 30)).astype(np.float32)

    def run(m):
        kw = {"hidden": 20, "epochs": 1, "batch_size": 25, "seed": 0, "optimizer": "sgd", "lr": 1.0}
        return sparsekit.train(m, data, **kw).params

    p_scaled, p_double, p_single = (
        run(scaled),
        run(L2(weight_decay=2 * lam)),
        run(L2(weight_decay=lam)),
    )
    _assert_same(p_scaled, p_double, "params")
    assert not np.array_equal(p_scaled["W_enc"], p_single["W_enc"])


# -- 7: run() refuses unsuitable arrays; SPARSEKIT_JIT=0 -----------------------------------


def _refused_cases():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "non-contiguous": (base[:, ::2], np.ones((3, 2), np.float32)),
        "transposed": (base.T, np.ones((4, 3), np.float32)),
        "mixed dtypes": (base.copy(), np.ones((3, 4), np.float64)),
        "int array": (np.arange(12).reshape(3, 4), np.ones((3, 4), np.int64)),
        "list": ([1.0, 2.0, 3.0], np.ones(3, np.float32)),
        "list second": (np.ones(3, np.float32), [1.0, 2.0, 3.0]),
        # the loops index without bounds checks: sizes and shapes must match exactly
        "shorter gradient": (np.ones(10, np.float32), np.full(4, 2.0, np.float32)),
        "same size, other shape": (np.ones((2, 3), np.float32), np.ones((3, 2), np.float32)),
        "read-only parameter": (_read_only(np.ones(5, np.float32)), np.ones(5, np.float32)),
    }


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("case", list(_refused_cases()))
def test_run_refuses_unsuitable_arrays(case, fused_kernels):
    """run() returns False and leaves every array unchanged for arrays the loops cannot take."""
    from sparsekit.training.optim import _sgd_loop

    p, g = _refused_cases()[case]
    before = (np.array(p, copy=True), np.array(g, copy=True))
    assert fused.run(_sgd_loop, (p, g), (0.1, 0.5)) is False
    assert np.array_equal(np.asarray(p), before[0]) and np.array_equal(np.asarray(g), before[1])
    assert fused.enabled()  # refusing is not a failure


def test_run_accepts_and_refuses_non_contiguous_view(fused_kernels):
    """A strided view is refused although its base would be accepted."""
    from sparsekit.training.optim import _sgd_loop

    p = np.ones((6, 8), np.float32)
    g = np.full((6, 8), 2.0, np.float32)
    assert fused.run(_sgd_loop, (p[:, ::2], g[:, ::2]), (0.0, 0.5)) is False
    assert np.all(p == 1)
    assert fused.run(_sgd_loop, (p, g), (0.0, 0.5)) is True
    assert np.all(p == 0)


def test_jit_env_off_in_subprocess():
    """SPARSEKIT_JIT=0: the loops are off, ops run their references, training still works."""
    code = """
import numpy as np, sparsekit
from sparsekit.backend import fused
from sparsekit.training.optim import _sgd_loop
assert not fused.enabled()
p = np.ones(4, np.float32)
assert fused.run(_sgd_loop, (p, p.copy()), (0.0, 0.5)) is False
x = np.random.default_rng(0).uniform(0, 1, size=(40, 8)).astype(np.float32)
m = sparsekit.train("plain", x, hidden=4, epochs=1, batch_size=10, seed=0)
assert all(np.isfinite(v).all() for v in m.params.values())
assert "numba" not in __import__("sys").modules
print("ok")
"""
    env = {**os.environ, "SPARSEKIT_JIT": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- 8: a loop that fails on first use -------------------------------------------------------


def _failing_loop(monkeypatch, loop: fused.Loop, error: Exception) -> None:
    """``loop`` raises ``error`` when first called (as a failed compilation would)."""

    def broken(*args):
        raise error

    monkeypatch.setattr(loop, "_compiled", broken)
    monkeypatch.setattr(loop, "_ready", set())
    monkeypatch.setitem(fused._state, "numba", fused._state.get("numba") or object())


def test_loop_failing_on_first_use_disables_the_loops(monkeypatch, fused_kernels):
    """A loop raising on first use: run() returns False, warns, and the loops stay off."""
    from sparsekit.training.optim import _sgd_loop

    _failing_loop(monkeypatch, _sgd_loop, RuntimeError("cannot compile\nsecond line"))
    p = np.ones(5, np.float32)
    g = np.full(5, 2.0, np.float32)
    with pytest.warns(RuntimeWarning, match="fused loops off.*RuntimeError: cannot compile"):
        assert fused.run(_sgd_loop, (p, g), (0.0, 0.5)) is False
    assert not fused.enabled()
    assert np.all(p == 1) and np.all(g == 2)
    # The optimizer then takes its reference path.
    SGD(0.5).step(np, {"w": p}, {"w": g})
    assert np.all(p == 0)


def test_count_active_failing_on_first_use_disables_the_loops(monkeypatch, fused_kernels):
    """count_active's loop raising on first use: warns, the reference counts, loops off."""
    from sparsekit.backend.counting import _count_active_loop, count_active

    _failing_loop(monkeypatch, _count_active_loop, ValueError("no"))
    counts = np.zeros(3, np.int64)
    with pytest.warns(RuntimeWarning, match="fused loops off"):
        count_active(np, counts, np.ones((2, 3), np.float32), 0.5)
    assert not fused.enabled()
    assert np.array_equal(counts, [2, 2, 2])


# -- 9: count_active -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_count_active_matches_numpy(dtype, fused_path):
    """counts += (|code| > t).sum(axis=0): negatives and values exactly at t included."""
    from sparsekit.backend.counting import count_active

    spy, calls = fused_path
    t = 1e-3
    rng = np.random.default_rng(4)
    code = rng.choice([-1.0, 1.0], size=(50, 7)) * rng.uniform(0, 2e-3, size=(50, 7))
    code = code.astype(dtype)
    at = dtype(t)
    code[0] = [at, -at, np.nextafter(at, dtype(1)), -np.nextafter(at, dtype(1)), 0, -0.0, -5]
    start = np.arange(7, dtype=np.int64)
    counts = start.copy()
    count_active(np, counts, code, t)
    expected = start + (np.abs(code) > t).sum(axis=0)
    assert np.array_equal(counts, expected)
    assert counts.dtype == np.int64
    count_active(np, counts, code, t)  # a second call keeps adding
    assert np.array_equal(counts, start + 2 * (np.abs(code) > t).sum(axis=0))
    assert calls["_count_active_loop"] == 2


def test_count_active_refuses_what_the_loop_cannot_take(fused_path):
    """Float or int32 counts, a wrong shape, a transposed or integer code: the reference
    formula runs instead (and counts the same)."""
    from sparsekit.backend.counting import count_active

    spy, calls = fused_path
    code = np.ones((4, 3), np.float32)
    for counts in (np.zeros(3), np.zeros(3, np.int32)):
        count_active(np, counts, code, 0.5)
        assert np.array_equal(counts, [4, 4, 4])
    count_active(np, np.zeros(3, np.int64), np.ones((3, 4), np.float32).T, 0.5)
    count_active(np, np.zeros(3, np.int64), np.ones((4, 3), np.int64), 0.5)
    assert calls["_count_active_loop"] == 0
    assert spy.results == [("count_active", False)] * 4


# -- Arora's decoding and atom update ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_threshold_code_matches_numpy_bitwise(dtype, fused_path):
    """Arora's fused decoding gives the reference's support, code and sign bit for bit,
    including values exactly at τ, ±0, NaN and ±inf."""
    from sparsekit.methods.arora import threshold_code

    _, calls = fused_path
    tau = 0.5
    rng = np.random.default_rng(3)
    z = rng.standard_normal((37, 53)).astype(dtype)
    z.flat[:8] = [tau, -tau, 0.0, -0.0, np.nan, np.inf, -np.inf, np.nextafter(dtype(tau), 0)]
    got = threshold_code(np, z, tau)
    assert calls["_threshold_code_loop"] == 1
    want = threshold_code.reference(np, z, tau)
    expected_support = (np.abs(z) >= tau).astype(dtype)
    assert np.array_equal(want[2], expected_support)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        assert np.array_equal(g, w, equal_nan=True)
        assert np.array_equal(np.signbit(g), np.signbit(w))


@pytest.mark.parametrize("renormalize", [True, False])
def test_atom_update_matches_numpy(renormalize, fused_path):
    """w ← w − step and the rows renormalised: the reference to float32 rounding (the fused
    row norms are summed in float64)."""
    from sparsekit.methods.arora import atom_update

    _, calls = fused_path
    rng = np.random.default_rng(4)
    w = rng.standard_normal((700, 787)).astype(np.float32)
    step = (0.1 * rng.standard_normal(w.shape)).astype(np.float32)
    w[3] = step[3]  # a row that becomes exactly zero: kept at zero, not NaN
    expected = w.copy()
    atom_update.reference(np, expected, step, renormalize)
    atom_update(np, w, step, renormalize)
    assert calls["_atom_update_loop"] >= 1
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, expected, rtol=2e-6, atol=1e-7)
    assert np.all(w[3] == 0)
    if renormalize:
        np.testing.assert_allclose(np.linalg.norm(np.delete(w, 3, 0), axis=1), 1.0, rtol=1e-6)


def test_arora_training_fused_matches_numpy(monkeypatch, fused_path):
    """Arora trains to the same atoms with the fused loops as with NumPy (float32 rounding
    apart: the fused row norms are summed in float64) and the same codes."""
    spy, calls = fused_path
    x = np.random.default_rng(0).uniform(0, 1, (600, 50)).astype(np.float32)

    def run():
        method = sparsekit.make_method("arora")
        config = sparsekit.resolve_config(method, hidden=40, epochs=3, batch_size=64, seed=0)
        trainer = sparsekit.Trainer(method, x, config)
        trainer.fit()
        return trainer.params, trainer.history

    params_f, history_f = run()
    assert calls["_threshold_code_loop"] > 0 and calls["_atom_update_loop"] > 0
    monkeypatch.setitem(fused._state, "numba", None)
    calls.clear()
    params_n, history_n = run()
    assert not calls
    np.testing.assert_allclose(params_f["W_enc"], params_n["W_enc"], rtol=1e-5, atol=1e-6)
    for h_f, h_n in zip(history_f, history_n, strict=True):
        assert h_f["mean_active"] == h_n["mean_active"]
        assert h_f["loss"] == pytest.approx(h_n["loss"], rel=1e-5)


def _sparse_code(dtype, rows=300, units=1000, density=0.02, seed=5):
    """A B×H code about ``density`` nonzero, with an empty row, a ±0 and a NaN-free full row."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, units)).astype(dtype)
    a[rng.random(a.shape) > density] = 0
    a[7] = 0  # a sample with no active unit
    a[8, :] = 0
    a[8, :25] = 1.5  # a busy sample
    a[9, 3] = -0.0  # a zero, though its sign bit is set
    return a


@pytest.mark.usefixtures("split_threads")
@pytest.mark.parametrize("split", [False, True], ids=["one-thread", "split"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nonzero_products_match_blas(dtype, split, fused_path, monkeypatch):
    """X W, Xᵀ R (also added into a given array) and (G Wᵀ) at X's nonzeros, by X's nonzeros
    alone, equal BLAS's products: bit for bit where every partial sum is exact (small
    integers), to rounding otherwise (float32: 1e-5 of the largest |entry|; float64: 1e-12),
    whole or split over four threads (rows, units and the search for the nonzeros), with W
    taken in small tiles (30 rows) or whole."""
    from sparsekit.backend import sparse_code, threads
    from sparsekit.backend.sparse_code import (
        nonzero_masked_times,
        nonzero_times,
        nonzero_transpose_times,
    )

    if split:
        monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)
        monkeypatch.setattr(sparse_code, "NONZERO_TILE_BYTES", 30 * 77 * np.dtype(dtype).itemsize)
    _, calls = fused_path
    rng = np.random.default_rng(6)
    a = _sparse_code(dtype)
    w = rng.standard_normal((1000, 77)).astype(dtype)
    r = rng.standard_normal((300, 77)).astype(dtype)
    start = rng.standard_normal((1000, 77)).astype(dtype)
    added = start.copy()
    returned = nonzero_transpose_times(np, a, r, add_to=added)
    assert returned is added
    for got, want, loop in (
        (nonzero_times(np, a, w), a @ w, "_rows_times_loop"),
        (nonzero_transpose_times(np, a, r), a.T @ r, "_units_times_loop"),
        (added, start + a.T @ r, "_units_times_loop"),
        (nonzero_masked_times(np, a, r, w), (r @ w.T) * (a != 0), "_nonzero_masked_times_loop"),
    ):
        assert calls[loop] >= 1, loop
        assert got.dtype == dtype and got.shape == want.shape
        scale = float(np.abs(want).max())
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)
    assert np.all(nonzero_times(np, a, w)[7] == 0)
    assert np.all(nonzero_masked_times(np, a, r, w)[a == 0] == 0)
    # Small integers: every sum is exact in both orders, so the bits must agree.
    ai, wi, ri = np.round(a * 2), np.round(w * 4), np.round(r * 4)
    assert np.array_equal(nonzero_times(np, ai, wi), ai @ wi)
    assert np.array_equal(nonzero_transpose_times(np, ai, ri), ai.T @ ri)
    assert np.array_equal(nonzero_masked_times(np, ai, ri, wi), (ri @ wi.T) * (ai != 0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nonzero_products_add_one_row_at_a_time(dtype, fused_kernels, monkeypatch):
    """X W and Xᵀ R add their terms in increasing order, one at a time, whatever the tiles
    and the four-at-a-time grouping: the same bits as a plain loop (so Arora's and FISTA's
    products kept their bits when the kernels were tiled and unrolled)."""
    from sparsekit.backend import sparse_code

    a = _sparse_code(dtype, rows=40, units=300, density=0.06)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((300, 13)).astype(dtype)
    r = rng.standard_normal((40, 13)).astype(dtype)
    plain = np.zeros((40, 13), dtype=dtype)
    plain_t = np.zeros((300, 13), dtype=dtype)
    for i, j in zip(*np.nonzero(a), strict=True):  # row-major: increasing j in a row, i in a unit
        plain[i] = plain[i] + a[i, j] * w[j]
        plain_t[j] = plain_t[j] + a[i, j] * r[i]
    for tile_rows in (16, 37, 300):
        monkeypatch.setattr(sparse_code, "NONZERO_TILE_BYTES", tile_rows * 13 * a.itemsize)
        assert np.array_equal(sparse_code.nonzero_times(np, a, w), plain), tile_rows
    assert np.array_equal(sparse_code.nonzero_transpose_times(np, a, r), plain_t)



def test_nonzero_products_share_found_nonzeros(fused_path):
    """The nonzeros found once serve several products: with A itself the same bits as
    finding them again, and with a matrix that is zero wherever A is (some of A's nonzeros
    zeroed) its products by W and R; DENSE sends a matrix found too dense to BLAS without a
    second search; nonzeros of another shape are refused."""
    from sparsekit.backend import sparse_code

    _, calls = fused_path

    rng = np.random.default_rng(12)
    a = _sparse_code(np.float32)
    b = a * (rng.random(a.shape) < 0.5)  # zero wherever a is, and at half its nonzeros
    w = rng.standard_normal((1000, 20)).astype(np.float32)
    r = rng.standard_normal((300, 20)).astype(np.float32)
    found = sparse_code.find_nonzeros(a)
    assert found is not None and found.nnz == np.count_nonzero(a)
    for m in (a, b):
        assert np.array_equal(
            sparse_code.nonzero_times(np, m, w, nonzeros=found), sparse_code.nonzero_times(np, m, w)
        )
        assert np.array_equal(
            sparse_code.nonzero_transpose_times(np, m, r, nonzeros=found),
            sparse_code.nonzero_transpose_times(np, m, r),
        )
    assert np.array_equal(
        sparse_code.nonzero_masked_times(np, a, r, w, nonzeros=found),
        sparse_code.nonzero_masked_times(np, a, r, w),
    )
    # DENSE: found too dense once, BLAS's product at once (no second search)
    dense = _sparse_code(np.float32, density=2 * sparse_code.NONZERO_DENSITY)
    scanned = calls["_row_nonzeros_loop"]
    assert np.array_equal(
        sparse_code.nonzero_times(np, dense, w, nonzeros=sparse_code.DENSE), dense @ w
    )
    assert np.array_equal(
        sparse_code.nonzero_transpose_times(np, dense, r, nonzeros=sparse_code.DENSE),
        dense.T @ r,
    )
    assert calls["_row_nonzeros_loop"] == scanned
    with pytest.raises(ValueError, match="nonzeros of a 300-row matrix"):
        sparse_code.nonzero_times(np, a[:200], w, nonzeros=found)
    assert sparse_code.find_nonzeros(np.ones((4, 4), dtype=np.float32)) is None  # too dense


@pytest.mark.usefixtures("split_threads")
@pytest.mark.parametrize("split", [False, True], ids=["one-thread", "split"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("order", ["increasing", "any"])
def test_row_sparse_products_fused_equal_scipys_bitwise(dtype, order, split, fused_path, monkeypatch):
    """Hc W and Hcᵀ X (one code, or a pair sharing the indices) by the compiled loops, which
    skip entries whose value is zero: the same bits as SciPy's CSR kernels, in tiles of W (increasing indices, 23 entries a row
    of 90 units, tiles of 16 rows) or whole (any order), int32 or int64 indices, whole or
    split over four threads."""
    from sparsekit.backend import sparse_code, threads

    if split:
        monkeypatch.setattr(threads, "PARALLEL_MIN_SIZE", 16)
    monkeypatch.setattr(sparse_code, "NONZERO_TILE_BYTES", 16 * 9 * np.dtype(dtype).itemsize)
    _, calls = fused_path
    cpu = sparsekit.get_backend(False, np.dtype(dtype).name)
    rng = np.random.default_rng(13)
    rows, units, k = 50, 90, 23
    indices = np.argsort(rng.random((rows, units)), axis=1)[:, :k]
    if order == "increasing":
        indices.sort(axis=1)
    values = rng.standard_normal((rows, k)).astype(dtype)
    values[3] = 0  # a row whose entries are all zero
    values[rng.random(values.shape) < 0.3] = 0  # zeros inside rows (a padded code's padding)
    other = rng.standard_normal((rows, k)).astype(dtype)
    values[5:8, 12:] = 0  # trailing zeros, which the twins neither scan nor sort
    other[6:8, 15:] = 0  # (a pair's rows end at their last entry nonzero in either code)
    other[7, 20] = 2.0
    values[8, -2:] = (1.0, -0.0)  # -0.0 is a zero too
    other[6, 14] = 1.0
    assert list(sparse_code._row_lengths([values, other])[5:8]) == [k, 15, 21]
    assert sparse_code._row_lengths([values])[8] == k - 1
    w = rng.standard_normal((units, 9)).astype(dtype)
    x = rng.standard_normal((rows, 9)).astype(dtype)
    g = rng.standard_normal((rows, 9)).astype(dtype)
    for idx in (indices, indices.astype(np.int32)):
        assert np.array_equal(
            sparse_code.code_times(cpu, idx, values, w),
            sparse_code.code_times.reference(cpu, idx, values, w),
        )
        for args in ((values, x, units), ([values, other], [x, g], units)):
            assert np.array_equal(
                sparse_code.code_transpose_times(cpu, idx, *args),
                sparse_code.code_transpose_times.reference(cpu, idx, *args),
            )
    assert calls["_rows_times_loop"] >= 2 and calls["_units_times_loop"] >= 6
    assert sparse_code._tile_rows(w, k, order == "increasing") == (16 if order == "increasing" else 90)

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_column_sums_and_fired_units_fused_match_numpy_bitwise(dtype, fused_path):
    """The scatters of a row-sparse code (∇b_enc's Σ_rows, the batch's firing units) in one
    compiled pass, skipping zeros: NumPy's add.at bits, int32 or int64 indices, NaN kept; a
    bad index leaves the loops to the reference, which raises."""
    from sparsekit.backend import sparse_code

    _, calls = fused_path
    cpu = sparsekit.get_backend(dtype=dtype.__name__)
    rng = np.random.default_rng(17)
    rows, units, width = 400, 120, 30
    indices = rng.integers(0, units, size=(rows, width))  # repeats within and across rows
    values = (rng.standard_normal((rows, width)) * 1e3).astype(dtype)
    values[rng.random(values.shape) < 0.4] = 0  # padding
    values[5, :3] = [-0.0, np.nan, -1e-30]
    for idx in (indices, indices.astype(np.int32)):
        got = sparse_code.column_sums(cpu, idx, values, units)
        want = sparse_code.column_sums.reference(cpu, idx, values, units)
        assert got.dtype == dtype and np.array_equal(got, want, equal_nan=True)
        fired = sparse_code.fired_units(cpu, idx, values, units)
        assert np.array_equal(fired, sparse_code.fired_units.reference(cpu, idx, values, units))
        assert fired.dtype == bool and 0 < fired.sum() < units or fired.all()
    assert calls["_column_sums_loop"] == 2 and calls["_fired_units_loop"] == 2
    bad = indices.copy()
    bad[7, 2] = units
    with pytest.raises(IndexError):
        sparse_code.column_sums(cpu, bad, values, units)
    with pytest.raises(IndexError):
        sparse_code.fired_units(cpu, bad, values, units)
    assert calls["_column_sums_loop"] == 2 and calls["_fired_units_loop"] == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_padded_code_fused_matches_numpy(dtype, fused_path):
    """BatchTopK's padded code built in one compiled pass: the reference's indices and values
    (kept units in order, then the unkept ones smallest first), rows that keep nothing or
    every unit included; the dense code rebuilt from it is exact."""
    from sparsekit.backend.selection import padded_code

    _, calls = fused_path
    rng = np.random.default_rng(19)
    rows, hidden = 60, 37
    z = rng.standard_normal((rows, hidden)).astype(dtype)
    keep = rng.random((rows, hidden)) < rng.random((rows, 1)) * 0.6
    keep[4] = False
    keep[9] = True  # a row that keeps every unit: no padding, and the code's full width
    flat = np.flatnonzero(keep)
    vals = z.reshape(-1)[flat]
    got = padded_code(np, z, flat, vals)
    want = padded_code.reference(np, z, flat, vals)
    assert calls["_padded_code_loop"] == 1
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    dense = np.zeros_like(z)
    np.put_along_axis(dense, got[0], got[1], axis=1)
    assert np.array_equal(dense, np.where(keep, z, 0))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("with_row", [False, True], ids=["no-row", "row"])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_relu_hidden_delta_fused_matches_numpy(dtype, with_row, scale, fused_path, split_threads):
    """ReLU's hidden pass in one compiled sweep, its columns on threads: the reference's dZ
    and Σ_rows dZ bit for bit, with NaN, ±inf, -0.0 and Z exactly 0 or -0.0 (f′ = 0 there)."""
    from sparsekit.core.activations import relu_hidden_delta

    _, calls = fused_path
    rng = np.random.default_rng(31)
    rows, cols = 2000, 600
    z = rng.standard_normal((rows, cols)).astype(dtype)
    d = rng.standard_normal((rows, cols)).astype(dtype)
    z[:, 7] = -1.0  # a dead unit: every dZ a signed zero, the column sum +0.0
    z[3, 3], z[4, 4], z[5, 5] = 0.0, -0.0, np.nan
    d[6, 6], d[7, 7], d[8, 8], d[9, 9] = np.nan, np.inf, -np.inf, -0.0
    row = rng.standard_normal(cols).astype(dtype) if with_row else None
    got_d, want_d = d.copy(), d.copy()
    got = relu_hidden_delta(np, got_d, z, row, scale)
    with np.errstate(invalid="ignore"):  # ±inf · 0 is NaN, as it should be
        want = relu_hidden_delta.reference(np, want_d, z, row, scale)
    assert calls["_relu_hidden_delta_loop"] >= 2  # column ranges on more than one thread
    assert got.dtype == want.dtype == dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    assert np.array_equal(got_d.view(np.uint8), want_d.view(np.uint8))


def test_row_lengths_on_threads(split_threads, fused_kernels):
    """Each row's length up to its last nonzero in any of the codes, the rows split over
    four threads (a padded batch's width, 4,000 rows): NumPy's answer, NaN counted."""
    from sparsekit.backend import sparse_code

    rng = np.random.default_rng(29)
    rows, width = 4000, 300
    codes = []
    for _ in range(2):
        code = np.zeros((rows, width), np.float32)
        for i in range(rows):
            n = rng.integers(0, 6)
            code[i, rng.choice(width, n, replace=False)] = rng.standard_normal(n)
        codes.append(code)
    codes[1][17, 299] = np.nan
    nonzero = (codes[0] != 0) | (codes[1] != 0)
    want = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    assert np.array_equal(sparse_code._row_lengths(codes), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64], ids=["int32", "int64"])
def test_split_code_fused_matches_numpy(dtype, index_dtype, fused_path, split_threads):
    """A row-sparse code split at column ends (Matryoshka's groups) in one compiled pass over
    threads: the reference's part of every entry (on the ends too) and its values times
    1[part = q], bit for bit: -0.0, NaN and infinities (0·inf is NaN) and the padding."""
    from sparsekit.backend.sparse_code import split_code

    _, calls = fused_path
    rng = np.random.default_rng(23)
    rows, width, hidden = 8000, 40, 160
    ends = [10, 20, 40, 80, 160]
    indices = np.sort(rng.integers(0, hidden, (rows, width)), axis=1).astype(index_dtype)
    indices[:5, :5] = np.array(ends)  # every end itself: the next group's first latent
    values = rng.standard_normal((rows, width)).astype(dtype)
    values[:, -7:] = 0  # padding
    values[7, 3], values[8, 4], values[9, 5], values[10, 6] = -0.0, np.nan, np.inf, -np.inf
    group, parts = split_code(np, indices, values, ends)
    with np.errstate(invalid="ignore"):  # ±inf · 0 is NaN, as it should be
        want_group, want_parts = split_code.reference(np, indices, values, ends)
    assert calls["_split_code_loop"] >= 2  # the row blocks went to more than one thread
    assert group.dtype == want_group.dtype and np.array_equal(group, want_group)
    assert len(parts) == len(want_parts) == len(ends)
    for got, want in zip(parts, want_parts, strict=True):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8))  # signs of zero, NaN


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_relu_top_k_block_fused_matches_numpy(dtype, fused_path):
    """The AuxK code's selection in one compiled pass per row: the reference's bits, for
    crowded rows (more than k positive), rows with at most k positive, -0.0, rows whose
    values share their top bits, and the rows it hands back to the reference (ties at the
    k-th value, NaN)."""
    from sparsekit.backend.selection import relu_top_k_block

    _, calls = fused_path
    rng = np.random.default_rng(23)
    rows, hidden, k = 40, 300, 12
    z = rng.standard_normal((rows, hidden)).astype(dtype)
    columns = np.sort(rng.choice(hidden, 170, replace=False))
    z[1] = -np.abs(z[1])  # no positive entry
    z[2, columns[:5]] = np.abs(z[2, columns[:5]])  # at most k positive: all kept
    z[2, columns[5:]] = -np.abs(z[2, columns[5:]])
    z[3, columns[::2]] = -0.0
    z[4, columns[:40]] = 5.0  # a tie at the k-th largest: the reference decides
    z[5, columns[7]] = np.nan
    z[6, columns] = np.arange(1, 171, dtype=dtype)
    z[7, columns] = 1 + np.arange(170, dtype=dtype) / 1024  # all in one bucket of top bits
    z[8, columns] = np.where(np.arange(170) < 100, 3.0, z[8, columns])  # ties far above
    z[9, columns[:12]] = np.float32(1e-40)  # subnormal: its own smallest bucket
    got = relu_top_k_block(np, z, columns, k)
    want = relu_top_k_block.reference(np, z, columns, k)
    assert calls["_relu_top_k_loop"] == 1
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.count_nonzero(got[0]) == k and np.count_nonzero(got[2]) == 5
    # indices out of range, or k not below the columns: the reference alone
    calls.clear()
    every = np.maximum(z[:, columns], 0)
    assert np.array_equal(relu_top_k_block(np, z, columns, 170), every, equal_nan=True)
    assert calls["_relu_top_k_loop"] == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_block_top_k_fused_matches_numpy(dtype, fused_path, monkeypatch):
    """Each row's k largest in compiled passes: the reference's positions, for plain rows,
    rows of one value, -0.0 beside 0.0, a tie at the k-th value, NaN and infinities (the
    reference decides for those three), a width that is no multiple of the groups, k = 1,
    and k above INSERTED; rows narrower than TWIN_MIN_WIDTH · k go to the reference alone."""
    from sparsekit.backend import selection
    from sparsekit.backend.selection import block_top_k

    _, calls = fused_path
    rng = np.random.default_rng(29)
    rows, hidden = 30, 913
    z = rng.standard_normal((rows, hidden)).astype(dtype)
    z[1] = 1.0  # every entry tied
    z[2, 5] = np.nan
    z[3, ::3] = -0.0
    z[3, 1::3] = 0.0
    z[4, :40] = 5.0  # a tie at the k-th largest, far above the rest
    z[5, 7] = np.inf
    z[6] = -np.inf
    z[6, [9, 200]] = 0.0
    z[7] = np.arange(hidden, dtype=dtype)  # increasing: every group's maximum at its end
    z[8, :12] = 3.0
    z[9, -3:] = 100.0  # the largest entries in the width's remainder
    z[10] = -np.abs(z[10]) * 1e-30
    reference = block_top_k.reference
    handed: list[int] = []  # rows the twin hands to the reference

    def spied(block, k, scratch):
        handed.append(block.shape[0])
        return reference(block, k, scratch)

    monkeypatch.setattr(block_top_k, "reference", spied)
    for k, inserted in ((1, 64), (5, 64), (12, 64), (12, 4)):  # (12, 4): sorted once found
        monkeypatch.setattr(selection, "INSERTED", inserted)
        calls.clear()
        handed.clear()
        got = block_top_k(z, k, np.empty_like(z))
        want = reference(z, k, np.empty_like(z))
        assert calls["_top_k_rows_loop"] == 1
        # only the rows with a tie at the k-th value, NaN or infinity went to the reference
        tied = np.bincount(want // hidden, minlength=rows) != k
        assert handed == [int((tied | ~np.isfinite(z).all(axis=1)).sum())]
        assert got.dtype == want.dtype
        assert np.array_equal(got, want), k
        per_row = np.bincount(got // hidden, minlength=rows)
        assert per_row[0] == k and per_row[1] == hidden  # a plain row; a row of one value
        plain = z[11:]  # rows the twin takes alone, in a block of their own
        handed.clear()
        assert np.array_equal(
            block_top_k(plain, k, np.empty_like(plain)), reference(plain, k, np.empty_like(plain))
        )
        assert handed == []
    calls.clear()
    k = hidden // selection.TWIN_MIN_WIDTH + 1  # too narrow a row for the twin
    got = block_top_k(z, k, np.empty_like(z))
    assert np.array_equal(got, block_top_k.reference(z, k, np.empty_like(z)))
    assert calls["_top_k_rows_loop"] == 0


def test_nonzero_products_leave_dense_or_unsuitable_input_to_blas(fused_path):
    """Above NONZERO_DENSITY, for non-contiguous or mixed-dtype input, the reference runs:
    BLAS's exact bits."""
    from sparsekit.backend import sparse_code
    from sparsekit.backend.sparse_code import (
        nonzero_masked_times,
        nonzero_times,
        nonzero_transpose_times,
    )

    spy, calls = fused_path
    rng = np.random.default_rng(7)
    dense = _sparse_code(np.float32, density=2 * sparse_code.NONZERO_DENSITY)
    w = rng.standard_normal((1000, 40)).astype(np.float32)
    r = rng.standard_normal((300, 40)).astype(np.float32)
    assert np.array_equal(nonzero_times(np, dense, w), dense @ w)
    assert np.array_equal(nonzero_transpose_times(np, dense, r), dense.T @ r)
    sparse = _sparse_code(np.float32)
    assert np.array_equal(nonzero_times(np, sparse, np.asfortranarray(w)), sparse @ w)
    assert np.array_equal(
        nonzero_times(np, sparse, w.astype(np.float64)), sparse @ w.astype(np.float64)
    )
    # Shapes that do not chain: BLAS's own error, never a read past W's or R's end.
    with pytest.raises(ValueError):
        nonzero_times(np, sparse, w[:999])
    with pytest.raises(ValueError):
        nonzero_transpose_times(np, sparse, r[:299])
    assert np.array_equal(nonzero_masked_times(np, dense, r, w), (r @ w.T) * (dense != 0))
    assert np.array_equal(
        nonzero_masked_times(np, sparse, r, w.astype(np.float64)),
        (r @ w.T.astype(np.float64)) * (sparse != 0),
    )
    with pytest.raises(ValueError):
        nonzero_masked_times(np, sparse, r[:, :39], w)
    added = np.zeros((1000, 40), dtype=np.float64)  # another dtype: the reference adds
    nonzero_transpose_times(np, sparse, r, add_to=added)
    np.testing.assert_array_equal(added, (sparse.T @ r).astype(np.float64))
    assert not calls["_rows_times_loop"] and not calls["_units_times_loop"]
    assert not calls["_nonzero_masked_times_loop"]
    assert {ok for name, ok in spy.results} == {False}


def test_arora_step_by_nonzeros_matches_the_dense_step(monkeypatch, fused_kernels):
    """Arora's whole update with its products by the nonzeros against the same update with
    BLAS's dense products (float64: 1e-12), on MNIST-like density."""
    from sparsekit.backend import sparse_code
    from sparsekit.methods.arora import Arora

    rng = np.random.default_rng(8)
    params = _arora_params(rng, hidden=200, dim=64)
    y = rng.standard_normal((128, 64))
    method = Arora(tau=2.5)
    backend = sparsekit.get_backend(False, "float64")
    by_nonzeros = _copy(params)
    out = method.update(backend, by_nonzeros, y, 0.1)
    assert 0 < float(out.forward.support.mean()) < sparse_code.NONZERO_DENSITY
    monkeypatch.setattr(sparse_code, "NONZERO_DENSITY", -1.0)  # always BLAS
    dense = _copy(params)
    method.update(backend, dense, y, 0.1)
    np.testing.assert_allclose(by_nonzeros["W_enc"], dense["W_enc"], rtol=1e-12, atol=1e-14)


def _arora_params(rng, hidden=30, dim=20):
    w = rng.standard_normal((hidden, dim))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    return {"W_enc": w, "b_enc": np.zeros(hidden), "b_dec": np.zeros(dim)}


def test_arora_subclass_direction_is_the_step(fused_kernels):
    """A subclass's own direction() is what update() steps along: W ← W − lr·direction."""
    from sparsekit.methods.arora import Arora

    class Halved(Arora):
        def direction(self, backend, params, y, scale=1.0):
            step, fwd, residual = super().direction(backend, params, y, scale)
            return 0.5 * step, fwd, residual

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (40, 20))
    backend = sparsekit.get_backend(dtype="float64")
    halved, plain = Halved(tau=0.2, renormalize=False), Arora(tau=0.2, renormalize=False)
    p_halved = _arora_params(rng)
    p_plain = {k: v.copy() for k, v in p_halved.items()}
    out_halved = halved.update(backend, p_halved, x, 0.3)
    out_plain = plain.update(backend, p_plain, x, 0.15)
    np.testing.assert_allclose(p_halved["W_enc"], p_plain["W_enc"], rtol=1e-12, atol=1e-14)
    assert float(out_halved.loss) == pytest.approx(float(out_plain.loss), rel=1e-12)


def test_arora_subclass_decoding_is_the_step(fused_path):
    """A subclass that decodes differently (its own decode()) is stepped along its code."""
    from sparsekit.core.step import Forward, pre_activation
    from sparsekit.methods.arora import Arora

    spy, calls = fused_path

    class KeepAll(Arora):
        def mask(self, xp, z, a, training):
            return xp.ones_like(z)

        def decode(self, backend, params, y):
            z = pre_activation(backend.xp, params, y)
            out = z @ params["W_enc"] + params["b_dec"]
            return Forward(z, z, self.mask(backend.xp, z, z, True), z, None, out, out), np.sign(z)

    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, (40, 20))
    params = _arora_params(rng)
    w0 = params["W_enc"].copy()
    backend = sparsekit.get_backend(dtype="float64")
    KeepAll(tau=0.2, renormalize=False).update(backend, params, x, 0.1)
    assert calls["_threshold_code_loop"] == 0
    code = x @ w0.T  # every unit kept
    residual = code @ w0 - x
    expected = w0 - np.sign(code).T @ (residual * (0.1 / len(x)))
    np.testing.assert_allclose(params["W_enc"], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_sigmoid_fused_matches_numpy_bitwise(dtype, monkeypatch, fused_path):
    """The sigmoid's last two passes fused into one: NumPy's bits, saturated ends included."""
    from sparsekit.core.activations import sigmoid

    _, calls = fused_path
    z = np.random.default_rng(7).standard_normal((300, 900)).astype(dtype) * 8
    z.flat[:5] = [0.0, -0.0, 1e30, -1e30, np.nan]
    out_fused = sigmoid(np, z)
    assert calls["_sigmoid_tail_loop"] >= 1
    monkeypatch.setitem(fused._state, "numba", None)
    out_plain = sigmoid(np, z)
    assert out_fused.dtype == out_plain.dtype == dtype
    assert np.array_equal(out_fused, out_plain, equal_nan=True)


def test_sigmoid_on_threads_is_the_formula_bit_for_bit(monkeypatch):
    """σ(z) = ½(1 + tanh(z/2)) split over four threads (each part all three passes, in
    cache): the bits of the formula written out, saturated ends and NaN included."""
    from sparsekit.backend import threads
    from sparsekit.core.activations import sigmoid

    z = np.random.default_rng(8).standard_normal((257, 333)).astype(np.float32) * 8
    z.flat[:5] = [0.0, -0.0, 1e30, -1e30, np.nan]
    calls = []
    split = threads.split_run
    monkeypatch.setattr(threads, "split_run", lambda *a, **k: calls.append(a[1]) or split(*a, **k))
    monkeypatch.setenv("SPARSEKIT_NUM_THREADS", "4")
    out = sigmoid(np, z)
    assert calls and calls[0] == z.size  # the whole array went to the threads
    expected = (np.tanh(z * np.float32(0.5)) + np.float32(1)) * np.float32(0.5)
    assert out.dtype == np.float32
    assert np.array_equal(out, expected, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("batch", [256, 7])
def test_kl_penalty_fused_matches_numpy(dtype, batch, monkeypatch, fused_path):
    """KL's penalty in one pass: its gradient row NumPy's bits (means clipped at both ends,
    NaN kept); its value the same to the dtype's rounding (summed in float64)."""
    from sparsekit.methods.kl import KLSparse

    _, calls = fused_path
    method = KLSparse(rho=0.05, beta=2.5)
    code = np.random.default_rng(batch).uniform(0, 1, (batch, 300)).astype(dtype)
    code[:, 0], code[:, 1], code[:, 2] = 0.0, 1.0, 1e-9  # ρ̂ below, above and at the floor
    code[0, 3] = np.nan
    clean = code.copy()
    clean[0, 3] = 0.5
    p_f = method.code_penalty(np, code)
    p_f_clean = method.code_penalty(np, clean)
    assert calls["_kl_penalty_loop"] == 2
    monkeypatch.setitem(fused._state, "numba", None)
    p_n = method.code_penalty(np, code)
    p_n_clean = method.code_penalty(np, clean)
    d_f, d_n = p_f.row, p_n.row
    assert d_f.shape == d_n.shape == code.shape[1:] and d_f.dtype == d_n.dtype == dtype
    assert np.array_equal(d_f, d_n, equal_nan=True)
    assert np.isnan(d_f[3]) and np.isfinite(d_f[[0, 1, 2, 4]]).all()
    assert np.isnan(p_f.value) and np.isnan(p_n.value)  # the NaN column poisons the sum
    value_f, value_n = p_f_clean.value, p_n_clean.value
    assert type(value_f) is type(value_n) is np.dtype(dtype).type
    assert value_f == pytest.approx(value_n, rel=2e-6 if dtype == np.float32 else 1e-13)


def test_kl_penalty_refuses_what_it_cannot_take(fused_path):
    """A strided, empty, float16 or 1-D code: the reference formula runs."""
    from sparsekit.methods.kl import kl_penalty

    spy, calls = fused_path
    code = np.random.default_rng(1).uniform(0, 1, (20, 30)).astype(np.float32)
    for bad in (code[:, ::2], code.astype(np.float16)):
        kl_penalty(np, bad, 0.1, 3.0, 1e-6)
    assert calls["_kl_penalty_loop"] == 0
    assert spy.results == [("kl_penalty", False)] * 2


def test_without_numba_the_loops_are_off(monkeypatch):
    """Numba missing (ImportError): no loops, no error; callers take the NumPy path."""
    from sparsekit.training.optim import _sgd_loop

    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.delitem(fused._state, "numba", raising=False)
    assert not fused.enabled()
    p, g = np.ones(8, np.float32), np.full(8, 2.0, np.float32)
    assert fused.run(_sgd_loop, (p, g), (0.0, 0.5)) is False
    assert np.all(p == 1)


# -- minibatch gathering ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("source", ["uint8", "int16"])
def test_take_gathers_converts_and_scales_like_numpy(dtype, source, monkeypatch, fused_path):
    from sparsekit.data.dataset import ArrayDataset

    spy, calls = fused_path
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(300, 37)).astype(source)
    dataset = ArrayDataset(pixels, scale=1 / 255)
    rows = np.concatenate([rng.permutation(300)[:64], [0, 299, 7, 7]])  # unsorted, repeats
    expected = np.asarray(pixels[rows], dtype=dtype) * np.dtype(dtype).type(1 / 255)
    got = dataset.take(rows, np.dtype(dtype))
    assert spy.results[-1] == ("take_scaled", True), "the fused gather ran"
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    assert np.array_equal(got, expected)

    # Rows the loop does not check (negative, past the end) go to NumPy's indexing.
    numpy_rows = np.asarray(pixels[[-1, 2]], dtype=dtype) * np.dtype(dtype).type(1 / 255)
    assert np.array_equal(dataset.take(np.array([-1, 2]), dtype), numpy_rows)
    assert spy.results[-1] == ("take_scaled", False)
    with pytest.raises(IndexError):
        dataset.take(np.array([300]), dtype)

    monkeypatch.setitem(fused._state, "numba", None)  # loops off: the same values
    assert np.array_equal(dataset.take(rows, np.dtype(dtype)), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_coordinate_descent_twin_reaches_the_reference(monkeypatch, fused_path, dtype):
    """The one twin that is not the same bits: cd_sweeps' twin sweeps active sets between
    full sweeps (coders/cd.py), so it makes other moves to the same stopping rule. At a tight
    tolerance both reach the same codes (tests/coders/test_cd.py compares more)."""
    from sparsekit.coders.cd import coordinate_descent

    _, calls = fused_path
    rng = np.random.default_rng(4)
    atoms = rng.standard_normal((64, 32))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    x, atoms = rng.standard_normal((40, 32)).astype(dtype), atoms.astype(dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-6
    twin = coordinate_descent(x, atoms, 0.3, tol=tol)
    assert calls["_cd_rows_loop"] >= 1
    monkeypatch.setitem(fused._state, "numba", None)
    reference = coordinate_descent(x, atoms, 0.3, tol=tol)
    from sparsekit.coders import l1_objective

    assert ((twin.codes != 0) == (reference.codes != 0)).all()
    if dtype == np.float64:
        np.testing.assert_allclose(twin.codes, reference.codes, atol=1e-7)
    objective = [
        l1_objective(x.astype(np.float64), atoms.astype(np.float64), c.astype(np.float64), 0.3)
        for c in (twin.codes, reference.codes)
    ]  # in float32 a few codes of near-parallel atoms differ by 1e-4, objectives by rounding
    np.testing.assert_allclose(*objective, rtol=1e-6)


# -- every op is covered -----------------------------------------------------------------------

#: Every fused op in sparsekit and the tests above that compare its two paths.
COVERED_OPS = {
    "sparsekit.training.optim.update_parameter": "test_optimizer_fused_equals_numpy",
    "sparsekit.core.declarations.add_scaled": "test_weight_decay_add_to",
    "sparsekit.core.activations.sigmoid_tail": "test_sigmoid_fused_matches_numpy_bitwise",
    "sparsekit.core.activations.sigmoid_output_delta": "test_loss_and_grads_fused_equals_numpy",
    "sparsekit.core.activations.sigmoid_hidden_delta": "test_loss_and_grads_fused_equals_numpy",
    "sparsekit.core.activations.relu_hidden_delta": "test_relu_hidden_delta_fused_matches_numpy",
    "sparsekit.methods.kl.kl_penalty": "test_kl_penalty_fused_matches_numpy",
    "sparsekit.methods.arora.threshold_code": "test_threshold_code_matches_numpy_bitwise",
    "sparsekit.methods.arora.atom_update": "test_atom_update_matches_numpy",
    "sparsekit.backend.sparse_code.nonzero_times": "test_nonzero_products_match_blas",
    "sparsekit.backend.sparse_code.nonzero_transpose_times": "test_nonzero_products_match_blas",
    "sparsekit.backend.sparse_code.nonzero_masked_times": "test_nonzero_products_match_blas",
    "sparsekit.backend.sparse_code.code_times": "test_row_sparse_products_fused_equal_scipys_bitwise",
    "sparsekit.backend.sparse_code.code_transpose_times": (
        "test_row_sparse_products_fused_equal_scipys_bitwise"
    ),
    "sparsekit.backend.sparse_code.column_sums": (
        "test_column_sums_and_fired_units_fused_match_numpy_bitwise"
    ),
    "sparsekit.backend.sparse_code.fired_units": (
        "test_column_sums_and_fired_units_fused_match_numpy_bitwise"
    ),
    "sparsekit.backend.selection.padded_code": "test_padded_code_fused_matches_numpy",
    "sparsekit.backend.selection.relu_top_k_block": "test_relu_top_k_block_fused_matches_numpy",
    "sparsekit.backend.selection.block_top_k": "test_block_top_k_fused_matches_numpy",
    "sparsekit.backend.sparse_code.split_code": "test_split_code_fused_matches_numpy",
    "sparsekit.backend.counting.count_active": "test_count_active_matches_numpy",
    "sparsekit.backend.gather.take_scaled": "test_take_gathers_converts_and_scales_like_numpy",
    "sparsekit.coders.cd.cd_sweeps": "test_coordinate_descent_twin_reaches_the_reference",
}


def test_every_fused_op_has_a_twin_and_a_test():
    """Walk sparsekit's modules: every Op has a fused twin, and is listed in COVERED_OPS."""
    import importlib
    import pkgutil

    found = {}
    for info in pkgutil.walk_packages(sparsekit.__path__, "sparsekit."):
        if info.name.startswith("sparsekit.cli"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional extras (CuPy, Dask, ...)
            continue
        for name, value in vars(module).items():
            if isinstance(value, fused.Op) and value.reference.__module__ == info.name:
                found[f"{info.name}.{name}"] = value
    assert set(found) == set(COVERED_OPS)
    for name, op in found.items():
        assert op.fused is not None, f"{name} declares no fused twin"
        assert COVERED_OPS[name] in globals(), f"{name}: no test {COVERED_OPS[name]}"
