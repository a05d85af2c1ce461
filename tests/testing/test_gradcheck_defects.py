"""Plugins with planted surrogate defects fail the gradient check, for every seed.

Issue 27: a JumpReLU pseudo-derivative whose window was |z − θ| < ε instead of ε/2 (the 1/ε
factor kept) passed ``gradcheck`` and the contract kit for seeds 0–4, because the random
problem put every unit's pre-activation 0.1ε–0.4ε from its threshold. The check now places
pre-activations across the whole band (−ε, ε), both sides of every threshold, and beyond.
"""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit import get_backend
from sparsekit.methods.jumprelu import JumpReLUSAE
from sparsekit.testing import ContractError, check_method
from sparsekit.testing.gradcheck import check_gradients, random_problem

SURROGATE = "surrogate: ∂L/∂log_threshold"
SEEDS = range(5)


class TooWideWindow(JumpReLUSAE):
    """The window |z − θ| < ε where the declared smoothing has ε/2; the 1/ε factor kept."""

    name = "too-wide-window"

    def loss_and_grads(self, backend, params, x, state, term=None):
        # A bandwidth of 2ε gives the window |z − θ| < ε with the factor 1/(2ε): times 2.
        wide = JumpReLUSAE(bandwidth=2 * self.bandwidth)
        loss, grads, fwd, rec = wide.loss_and_grads(backend, params, x, state, term)
        grads["log_threshold"] = 2 * grads["log_threshold"]
        return loss, grads, fwd, rec


class MissingFactor(JumpReLUSAE):
    """The pseudo-derivative without its 1/ε (the L0 variant's θ gradient is all surrogate)."""

    name = "missing-factor"

    def loss_and_grads(self, backend, params, x, state, term=None):
        loss, grads, fwd, rec = super().loss_and_grads(backend, params, x, state, term)
        grads["log_threshold"] = self.bandwidth * grads["log_threshold"]
        return loss, grads, fwd, rec


class ExtraFactor(JumpReLUSAE):
    """The pseudo-derivative with a second 1/ε."""

    name = "extra-factor"

    def loss_and_grads(self, backend, params, x, state, term=None):
        loss, grads, fwd, rec = super().loss_and_grads(backend, params, x, state, term)
        grads["log_threshold"] = grads["log_threshold"] / self.bandwidth
        return loss, grads, fwd, rec


class WrongSign(JumpReLUSAE):
    """The pseudo-derivative with its sign flipped."""

    name = "wrong-sign"

    def loss_and_grads(self, backend, params, x, state, term=None):
        loss, grads, fwd, rec = super().loss_and_grads(backend, params, x, state, term)
        grads["log_threshold"] = -grads["log_threshold"]
        return loss, grads, fwd, rec


DEFECTS = [TooWideWindow, MissingFactor, ExtraFactor, WrongSign]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cls", DEFECTS)
def test_a_planted_defect_fails_gradcheck(cls, seed):
    report = check_gradients(cls(), tied=False, seed=seed)
    assert not report.ok, report.summary()
    assert SURROGATE in report.failures or "log_threshold" in report.wrong_signs
    # the true derivatives are untouched and still pass
    assert report.errors["W_enc"] < 1e-6 and report.errors["W_dec"] < 1e-6


@pytest.mark.parametrize("cls", DEFECTS)
def test_a_planted_defect_fails_the_contract_kit(cls):
    with pytest.raises(ContractError, match="log_threshold"):
        check_method(cls)


def test_a_sign_flip_reads_as_a_sign_flip():
    summary = check_gradients(WrongSign(), tied=False).summary()
    assert "gradient of log_threshold has the wrong sign (cosine -1.00 with finite" in summary
    assert "e+0" not in summary  # no meaningless huge relative error


@pytest.mark.parametrize("seed", SEEDS)
def test_pre_activations_cover_the_whole_band_on_both_sides(seed):
    """Every unit has a row in each quarter of (−ε, ε), clear of the kinks at 0 and ±ε/2."""
    method = JumpReLUSAE()
    params, x = random_problem(method, tied=False, seed=seed)
    params = method.check_problem(np.random.default_rng([seed, 1]), params, x)
    backend = get_backend(gpu=False, dtype="float64")
    z = method.forward(backend, params, x, True).z
    u = (z - np.exp(params["log_threshold"])) / method.bandwidth
    for low in (-1.0, -0.5, 0.0, 0.5):
        assert np.all(((u > low + 0.04) & (u < low + 0.46)).any(axis=0)), low
    assert np.all(np.abs(u - np.round(2 * u) / 2) > 0.04)  # no row on a kink


@pytest.mark.parametrize("seed", SEEDS)
def test_the_built_in_jumprelu_still_passes(seed):
    report = check_gradients(JumpReLUSAE(), tied=False, seed=seed, terms=True)
    assert report.ok, report.summary()
