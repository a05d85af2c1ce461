"""Tests of the relu-l1 plugin: the sparsekit contract kit, the penalty, the registration."""

from __future__ import annotations

import numpy as np
import pytest
import sparsekit_relu_l1
from sparsekit_relu_l1 import ReluL1, decoder_norm_l1

import sparsekit
from sparsekit.methods import Method, ObjectiveMethod, check_method_class
from sparsekit.testing import check_method, method_contract_tests
from sparsekit.testing.gradcheck import check_gradients

# The whole method contract, one test per check (gradients tied and untied included).
test_contract = method_contract_tests(ReluL1)
test_contract_strong_penalty = method_contract_tests(ReluL1, l1=1.0)


def test_is_a_generic_step_method_the_contract_accepts():
    check_method_class(ReluL1)  # what register.add, training and gradcheck call
    assert issubclass(ReluL1, Method) and not issubclass(ReluL1, ObjectiveMethod)
    assert not ReluL1.own_update and not ReluL1.own_objective


def test_registers_through_its_module():
    pm = sparsekit.make_plugin_manager([sparsekit_relu_l1], entry_points=False)
    registry = sparsekit.load_registry(pm)
    assert registry.get("relu-l1") is ReluL1
    assert registry.methods["relu-l1"].origin.startswith("plugin")


@pytest.mark.parametrize("tied", [True, False])
def test_gradient_of_the_coupled_penalty_reaches_the_decoder(tied):
    report = check_gradients(ReluL1(l1=2.0), tied=tied, terms=True, seed=3)
    assert report.ok, report.summary()
    decoder = "W_enc" if tied else "W_dec"
    assert f"code-weight penalty: ∂Ω_HW/∂{decoder}" in report.terms


def test_penalty_value_matches_its_definition():
    rng = np.random.default_rng(0)
    code = np.maximum(rng.standard_normal((5, 4)), 0)
    w_dec = rng.standard_normal((4, 7))
    lam = 0.3
    value, d_code, d_dec = decoder_norm_l1(np, code, w_dec, lam)
    expected = (
        lam
        / 5
        * sum(abs(code[i, j]) * np.linalg.norm(w_dec[j]) for i in range(5) for j in range(4))
    )
    assert value == pytest.approx(expected, rel=1e-12)
    assert d_code.shape == code.shape and d_dec.shape == w_dec.shape


def test_penalty_is_invariant_to_rescaling_a_unit():
    """Scaling unit j's code by c and its decoder row by 1/c changes neither loss term."""
    rng = np.random.default_rng(1)
    code = np.maximum(rng.standard_normal((6, 3)), 0)
    w_dec = rng.standard_normal((3, 5))
    value, _, _ = decoder_norm_l1(np, code, w_dec, 1.0)
    scaled_code, scaled_dec = code.copy(), w_dec.copy()
    scaled_code[:, 1] *= 10.0
    scaled_dec[1] /= 10.0
    assert decoder_norm_l1(np, scaled_code, scaled_dec, 1.0)[0] == pytest.approx(value)
    np.testing.assert_allclose(scaled_code @ scaled_dec, code @ w_dec)


def test_a_zero_decoder_row_has_a_finite_gradient():
    code = np.ones((2, 2))
    w_dec = np.array([[0.0, 0.0], [3.0, 4.0]])
    _, d_code, d_dec = decoder_norm_l1(np, code, w_dec, 1.0)
    assert np.isfinite(d_dec).all() and np.all(d_dec[0] == 0)
    np.testing.assert_allclose(d_code, [[0.0, 2.5], [0.0, 2.5]])


def test_float32_stays_float32():
    code = np.ones((2, 3), dtype=np.float32)
    w_dec = np.ones((3, 4), dtype=np.float32)
    value, d_code, d_dec = decoder_norm_l1(np, code, w_dec, 0.1)
    assert value.dtype == d_code.dtype == d_dec.dtype == np.float32


def test_no_penalty_when_lambda_is_zero():
    assert (
        ReluL1(l1=0.0).code_weight_penalty(np, np.ones((2, 2)), {"W_enc": np.ones((2, 3))}) is None
    )
    check_method(ReluL1, l1=0.0)


def test_stronger_penalty_gives_sparser_codes():
    rng = np.random.default_rng(0)
    data = np.clip(rng.uniform(size=(200, 16)) * (rng.uniform(size=(200, 16)) < 0.3), 0, 1)
    active = []
    for l1 in (0.0, 0.5):
        model = sparsekit.train(ReluL1(l1=l1), data, hidden=16, epochs=15, lr=1e-2, seed=0)
        active.append(float((model.encode(data) > 1e-3).mean()))
    assert active[1] < active[0]
