"""The hand-written optimizers (sparsekit/training/optim.py) against their textbook formulas.

Small float64 arrays, so the comparisons are tight; the fused loops and the array operations
give the same bits (tests/backend/test_fused.py), so whichever path runs here is checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparsekit.errors import ParameterError
from sparsekit.training.optim import SGD, Adam, Momentum, make_optimizer

SHAPES = {"W": (4, 3), "b": (3,)}


def params_and_grads(seed: int = 0, steps: int = 3) -> tuple[dict, list[dict]]:
    """Parameters and ``steps`` rounds of gradients (float64, C-contiguous)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(steps)]
    return params, grads


def copy(arrays: dict) -> dict:
    return {k: v.copy() for k, v in arrays.items()}


def test_sgd_is_theta_minus_lr_g():
    params, grads = params_and_grads()
    expected = copy(params)
    opt = SGD(0.1)
    for g in grads:
        for k in expected:
            expected[k] = expected[k] - 0.1 * g[k]
        opt.step(np, params, copy(g))
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-13)
    assert opt.steps == len(grads)


def test_momentum_accumulates_a_velocity():
    params, grads = params_and_grads()
    expected, velocity = copy(params), {k: np.zeros(s) for k, s in SHAPES.items()}
    opt = Momentum(0.05, momentum=0.8)
    for g in grads:
        for k in expected:
            velocity[k] = 0.8 * velocity[k] - 0.05 * g[k]
            expected[k] = expected[k] + velocity[k]
        opt.step(np, params, copy(g))
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12)
        np.testing.assert_allclose(opt.velocity[k], velocity[k], rtol=1e-12)


def test_adam_matches_kingma_and_ba_with_bias_correction():
    params, grads = params_and_grads(steps=4)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    expected = copy(params)
    m = {k: np.zeros(s) for k, s in SHAPES.items()}
    v = {k: np.zeros(s) for k, s in SHAPES.items()}
    opt = Adam(lr)
    for t, g in enumerate(grads, start=1):
        for k in expected:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            expected[k] = expected[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        opt.step(np, params, copy(g))
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-10)
        np.testing.assert_allclose(opt.m[k], m[k], rtol=1e-12)
        np.testing.assert_allclose(opt.v[k], v[k], rtol=1e-12)


def test_adam_first_step_moves_each_entry_by_about_lr():
    """With bias correction the first step is lr·g/(|g| + eps): lr·sign(g) for |g| ≫ eps."""
    params, grads = params_and_grads()
    before = copy(params)
    Adam(0.01).step(np, params, copy(grads[0]))
    np.testing.assert_allclose(before["W"] - params["W"], 0.01 * np.sign(grads[0]["W"]), rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_decay_adds_lambda_p_and_returns_the_sum_of_squares_before(name):
    params, grads = params_and_grads()
    plain_params = copy(params)
    lam = 0.3
    squares = make_optimizer(name, 0.01).step(np, params, copy(grads[0]), decay={"W": lam})
    assert set(squares) == {"W"}
    assert float(squares["W"]) == pytest.approx(float((plain_params["W"] ** 2).sum()), rel=1e-12)
    # The same as the gradient g + λp without decay.
    folded = copy(grads[0])
    folded["W"] = folded["W"] + lam * plain_params["W"]
    make_optimizer(name, 0.01).step(np, plain_params, folded)
    for k in params:
        np.testing.assert_allclose(params[k], plain_params[k], rtol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_per_parameter_updates_equal_the_whole_step(name):
    whole, grads = params_and_grads()
    parts = copy(whole)
    a, b = make_optimizer(name, 0.02), make_optimizer(name, 0.02)
    for g in grads:
        a.step(np, whole, copy(g))
        b.start_step()
        for key in reversed(list(g)):  # the trainer updates each weight when its gradient is final
            b.update(np, parts, key, g[key].copy())
    for k in whole:
        assert np.array_equal(whole[k], parts[k]), k
    assert a.steps == b.steps == len(grads)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_state_dict_round_trip_continues_exactly(name):
    params, grads = params_and_grads(steps=4)
    first = make_optimizer(name, 0.02)
    for g in grads[:2]:
        first.step(np, params, copy(g))
    state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in first.state_dict().items()}
    resumed_params = copy(params)
    resumed = make_optimizer(name, 0.02)
    resumed.load_state_dict(state)
    assert resumed.steps == 2
    for g in grads[2:]:
        first.step(np, params, copy(g))
        resumed.step(np, resumed_params, copy(g))
    for k in params:
        assert np.array_equal(params[k], resumed_params[k]), k


def test_state_dict_names_its_arrays():
    params, grads = params_and_grads(steps=1)
    adam, momentum = Adam(0.01), Momentum(0.01)
    adam.step(np, copy(params), copy(grads[0]))
    momentum.step(np, copy(params), copy(grads[0]))
    assert set(adam.state_dict()) == {"steps", "m.W", "m.b", "v.W", "v.b"}
    assert set(momentum.state_dict()) == {"steps", "velocity.W", "velocity.b"}
    assert SGD(0.01).state_dict() == {"steps": 0}


def test_reset_rows_zeroes_the_state_of_those_rows_only():
    params, grads = params_and_grads(steps=1)
    adam, momentum = Adam(0.01), Momentum(0.01)
    adam.step(np, copy(params), copy(grads[0]))
    momentum.step(np, copy(params), copy(grads[0]))
    rows = np.array([1, 3])
    adam.reset_rows("W", rows)
    momentum.reset_rows("W", rows)
    momentum.reset_rows("never-seen", rows)  # no state yet: nothing to do
    for state in (adam.m["W"], adam.v["W"], momentum.velocity["W"]):
        assert not state[rows].any()
        assert np.all(state[[0, 2]] != 0)
    SGD(0.01).reset_rows("W", rows)  # stateless


@pytest.mark.parametrize("lr", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_learning_rate_is_refused(lr):
    with pytest.raises(ParameterError, match="learning rate must be > 0"):
        SGD(lr)


@pytest.mark.parametrize("momentum", [-0.1, 1.0])
def test_momentum_must_be_in_zero_one(momentum):
    with pytest.raises(ParameterError, match=r"momentum must be in \[0, 1\)"):
        Momentum(0.1, momentum)


def test_make_optimizer_by_name():
    assert type(make_optimizer("sgd", 0.1)) is SGD
    assert make_optimizer("momentum", 0.1, momentum=0.5).momentum == 0.5
    adam = make_optimizer("adam", 0.1)
    assert type(adam) is Adam and adam.lr == 0.1
    with pytest.raises(ParameterError, match="unknown optimizer 'rmsprop': choose from sgd"):
        make_optimizer("rmsprop", 0.1)
