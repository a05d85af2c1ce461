"""The method test kit (sparsekit.testing): the built-ins pass it, broken methods fail it."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit import Method, Param, ParameterError, StepResult, UpdateMethod
from sparsekit.core.activations import IDENTITY, RELU, ReLU
from sparsekit.core.contract import positive
from sparsekit.methods.arora import Arora
from sparsekit.methods.kl import KLSparse
from sparsekit.methods.ksparse import KSparse
from sparsekit.methods.l2 import L2
from sparsekit.methods.plain import Plain
from sparsekit.testing import ContractError, check_method, iter_checks, method_contract_tests

# The five built-ins, each with one line. k-sparse needs k below the kit's 8 hidden units;
# Arora's default threshold switches no unit on for the kit's 12-pixel inputs.
test_plain = method_contract_tests(Plain)
test_l2 = method_contract_tests(L2)
test_kl = method_contract_tests(KLSparse)
test_arora = method_contract_tests(Arora, tau=0.3)
test_ksparse = method_contract_tests(KSparse, k=3, k_start=5)


def test_the_checks_cover_the_contract():
    names = [name for name, _ in iter_checks(Arora, tau=0.3)]
    assert "gradients_tied" in names and "gradients_untied" not in names  # Arora is tied only
    for expected in (
        "class_attributes",
        "defaults_valid",
        "parameter_validation",
        "init_params",
        "dtypes_float32",
        "dtypes_float64",
        "deterministic",
        "training_lowers_loss",
        "state_dict",
    ):
        assert expected in names
    assert {"gradients_tied", "gradients_untied"} <= {name for name, _ in iter_checks(Plain)}


# -- broken methods: each must fail with a message that says what is wrong ----------------


class ReluBase(Method):
    """A correct ReLU autoencoder with an L1 code penalty, to break one piece at a time."""

    name = "relu-test"
    description = "test method"
    params = (Param("l1", float, 0.01, "L1 weight", positive),)

    hidden_activation = RELU
    output_activation = IDENTITY
    uses_code_penalty = True

    def code_penalty(self, xp, code):
        batch = code.shape[0]
        return self.l1 * xp.abs(code).sum() / batch, self.l1 * xp.sign(code) / batch


def failure(cls, **params) -> str:
    with pytest.raises(AssertionError) as info:
        check_method(cls, **params)
    assert isinstance(info.value, ContractError)
    return str(info.value)


def test_a_correct_method_passes():
    check_method(ReluBase)


def test_a_wrong_penalty_gradient_is_caught_and_located():
    class Wrong(ReluBase):
        def code_penalty(self, xp, code):
            value, grad = super().code_penalty(xp, code)
            return value, 2 * grad

    message = failure(Wrong, l1=0.5)
    assert "[gradients_tied]" in message and "[gradients_untied]" in message
    assert "code penalty" in message  # the per-term check names the culprit


def test_a_silent_upcast_is_caught():
    class UpcastReLU(ReLU):
        def value(self, xp, z):
            return np.maximum(z, 0).astype(np.float64)

    class Upcast(ReluBase):
        hidden_activation = UpcastReLU()

    message = failure(Upcast)
    assert "[dtypes_float32 tied=True]" in message and "float64" in message
    assert "dtypes_float64" not in message


def test_a_host_scalar_is_caught():
    class HostScalar(ReluBase):
        def code_penalty(self, xp, code):
            value, grad = super().code_penalty(xp, code)
            return float(value), grad

    message = failure(HostScalar)
    assert "code_penalty value is a builtins.float" in message


def test_an_activation_override_without_its_declaration_is_caught():
    """The first contract's activation() is retired: the kit reports the refusal the class
    meets when it registers, naming the declaration to write instead."""

    class Overridden(ReluBase):
        hidden_activation = IDENTITY  # declares f = identity, but computes a ReLU

        def activation(self, xp, z):
            return xp.maximum(z, 0)

    message = failure(Overridden)
    assert "[class_attributes]" in message and "defines activation()" in message
    assert "declare hidden_activation" in message


def test_an_undeclared_code_penalty_is_caught():
    class Undeclared(ReluBase):
        uses_code_penalty = False

    message = failure(Undeclared)
    assert "[declarations]" in message and "uses_code_penalty" in message


def test_validate_that_skips_the_checks_is_caught():
    class NoValidate(ReluBase):
        def validate(self, hidden, dim=None):
            pass

    message = failure(NoValidate)
    assert "[parameter_validation]" in message and "l1=" in message


def test_nondeterminism_is_caught():
    class Noisy(ReluBase):
        def init_params(self, rng, dim, hidden, tied, sample):
            params = super().init_params(rng, dim, hidden, tied, sample)
            params["W_enc"] = params["W_enc"] + 0.01 * np.random.default_rng().standard_normal(
                (hidden, dim)
            )
            return params

    assert "[deterministic]" in failure(Noisy)


def test_training_in_the_wrong_direction_is_caught():
    class Ascent(UpdateMethod, ReluBase):
        def update(self, backend, params, x, lr):
            from sparsekit.core.step import loss_and_grads

            loss, grads, fwd, rec = loss_and_grads(self, backend, params, x)
            for name, g in grads.items():
                params[name] += lr * g
            return StepResult(loss, rec, fwd)

    message = failure(Ascent)
    assert "[training_lowers_loss]" in message


def test_bad_class_attributes_are_caught():
    class BadName(ReluBase):
        name = "Bad Name"

    assert "[class_attributes]" in failure(BadName)

    class Clash(ReluBase):
        params = (Param("hidden", int, 3, "clashes with --hidden"),)

    assert "clashes with the `sparsekit train --hidden` option" in failure(Clash)

    class BadDefaults(ReluBase):
        training_defaults = {"learning_rate": 0.1}

    assert "unknown settings ['learning_rate']" in failure(BadDefaults)


def test_an_invalid_default_is_caught():
    class BadDefault(ReluBase):
        params = (Param("l1", float, -1.0, "L1 weight", positive),)

    assert "[defaults_valid]" in failure(BadDefault)


def test_parameters_that_do_not_fit_the_tiny_problem_are_explained():
    message = failure(KSparse)  # k=25 > 8 hidden units
    assert "pass parameters that fit a tiny problem" in message


def test_a_crash_in_a_method_is_reported_not_raised():
    class Crash(ReluBase):
        def mask(self, xp, z, a, training):
            raise RuntimeError("boom")

    message = failure(Crash)
    assert "RuntimeError: boom" in message


def test_parameter_errors_name_the_parameter():
    with pytest.raises(ParameterError, match="l1"):
        ReluBase(l1="x")


def test_arrays_of_another_device_are_caught():
    """On a GPU backend a NumPy array is host memory: the checker says so (simulated CuPy)."""
    import types

    from sparsekit.backend import Backend
    from sparsekit.testing.contract import _ArrayChecker

    class DeviceArray(np.ndarray):
        pass

    fake_cupy = types.SimpleNamespace(ndarray=DeviceArray)
    backend = Backend("cupy", fake_cupy, None, np.dtype(np.float32), is_gpu=True)
    check = _ArrayChecker(Plain, "dtypes_float32_gpu", backend)
    check("on the device", np.zeros((2, 3), np.float32).view(DeviceArray), (2, 3))
    with pytest.raises(
        ContractError, match=r"activation\(z\) is a numpy.ndarray, not a cupy array"
    ):
        check("activation(z)", np.zeros((2, 3), np.float32), (2, 3))
    with pytest.raises(ContractError, match="has shape"):
        check("the code", np.zeros((2, 4), np.float32).view(DeviceArray), (2, 3))


class CoupledPenalty(ReluBase):
    """Ω_HW = (λ/B) Σ_ij |H_ij| ‖d_j‖: a penalty on code and decoder together."""

    name = "coupled-test"

    def code_penalty(self, xp, code):
        return None

    def code_weight_penalty(self, xp, code, weights):
        name = "W_dec" if "W_dec" in weights else "W_enc"
        w = weights[name]
        scale = self.l1 / code.shape[0]
        norms = xp.sqrt((w * w).sum(axis=1))
        total = xp.abs(code).sum(axis=0)
        value = scale * xp.vdot(total, norms)
        return value, scale * xp.sign(code) * norms, {name: scale * w * (total / norms)[:, None]}


def test_code_weight_penalty_on_dense_and_top_k_supports():
    from sparsekit.core.contract import TopK
    from sparsekit.methods.ksparse import top_k_indices

    class CoupledTopK(CoupledPenalty):
        name = "coupled-topk-test"

        def mask(self, xp, z, a, training):
            return TopK(top_k_indices(xp, z, 3))

    check_method(CoupledPenalty, l1=0.5)
    check_method(CoupledTopK, l1=0.5)


def test_a_wrong_decoder_gradient_of_a_coupled_penalty_is_caught():
    class Wrong(CoupledPenalty):
        def code_weight_penalty(self, xp, code, weights):
            value, d_code, d_w = super().code_weight_penalty(xp, code, weights)
            return value, d_code, {k: 0 * v for k, v in d_w.items()}

    message = failure(Wrong, l1=0.5)
    assert "code-weight penalty: ∂Ω_HW/∂W_dec" in message
    assert "code-weight penalty: ∂Ω_HW/∂W_enc" in message  # tied: the decoder is W_enc
