"""The standard L1 SAE and the matching-pursuit SAE: their formulas, beyond the gradient check."""

from __future__ import annotations

import numpy as np
import pytest

import sparsekit
from sparsekit import get_backend
from sparsekit.core.declarations import StepState
from sparsekit.methods.mp_sae import MatchingPursuitSAE
from sparsekit.methods.standard import StandardSAE
from sparsekit.testing import method_contract_tests
from sparsekit.testing.gradcheck import check_gradients, random_problem

F64 = get_backend(dtype="float64")

test_contract_standard = method_contract_tests(StandardSAE, l1_warm_up_steps=5)
test_contract_mp_sae = method_contract_tests(MatchingPursuitSAE, k=3)


def _standard_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {
        "W_enc": rng.standard_normal((6, 5)),
        "b_enc": 0.1 * rng.standard_normal(6),
        "b_dec": rng.standard_normal(5),
        "W_dec": rng.standard_normal((6, 5)) * rng.uniform(0.3, 2, (6, 1)),
    }
    return params, rng.standard_normal((9, 5))


def test_standard_loss_is_the_april_update_formula():
    method = StandardSAE(l1=0.7)
    params, x = _standard_problem()
    loss, _, fwd, rec = method.loss_and_grads(F64, params, x, StepState())
    f = np.maximum((x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"], 0)
    xhat = f @ params["W_dec"] + params["b_dec"]
    norms = np.linalg.norm(params["W_dec"], axis=1)
    expected = 0.5 / 9 * ((xhat - x) ** 2).sum() + 0.7 / 9 * (f * norms).sum()
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(fwd.code, f)
    assert (f == 0).any() and (f > 0).any()


def test_standard_penalty_cannot_be_lowered_by_rescaling_a_unit():
    """F_j·c with W_dec[j]/c leaves both terms unchanged (what an unweighted L1 lacks)."""
    method = StandardSAE(l1=0.7)
    params, x = _standard_problem(1)
    before = float(method.loss_and_grads(F64, params, x, StepState())[0])
    scaled = {k: v.copy() for k, v in params.items()}
    scaled["W_enc"][2] *= 5.0
    scaled["b_enc"][2] *= 5.0
    scaled["W_dec"][2] /= 5.0
    after = float(method.loss_and_grads(F64, scaled, x, StepState())[0])
    assert after == pytest.approx(before, rel=1e-12)


def test_standard_l1_warm_up_ramps_and_is_saved_with_the_state():
    method = StandardSAE(l1=1.0, l1_warm_up_steps=4)
    seen = []
    for _ in range(6):
        seen.append(method.l1_now())
        method.after_step(F64, {}, None)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    again = StandardSAE(l1=1.0, l1_warm_up_steps=4)
    again.load_state_dict(method.state_dict())
    assert again.l1_now() == 1.0
    assert StandardSAE(l1=1.0).l1_now() == 1.0  # no warm-up: λ from the first step


def test_standard_warm_up_resumes_exactly(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((256, 10)).astype(np.float32))
    opts = dict(hidden=16, batch_size=32, l1=0.05, l1_warm_up_steps=20, seed=3)
    straight = sparsekit.train_run("standard", str(data), out=tmp_path / "a", epochs=2, **opts)
    halfway = sparsekit.train_run("standard", str(data), out=tmp_path / "b", epochs=1, **opts)
    resumed = sparsekit.resume_run(halfway, epochs=2)
    full = sparsekit.load_run(straight)
    steps = full.method.state_dict()["steps"]
    assert 0 < steps < 20  # the run ends inside the warm-up
    assert resumed.method.state_dict()["steps"] == steps
    for name in ("W_enc", "b_enc", "b_dec", "W_dec"):
        np.testing.assert_array_equal(resumed.params[name], full.params[name])


def test_standard_decoder_is_free_and_starts_at_norm_point_one():
    method = StandardSAE()
    assert not method.upkeep().unit_norm_decoder
    params = method.init_params(np.random.default_rng(0), 7, 5, False, np.zeros((3, 7)))
    np.testing.assert_allclose(np.linalg.norm(params["W_dec"], axis=1), 0.1)
    np.testing.assert_array_equal(params["W_enc"], params["W_dec"])


def test_mp_sae_reconstruction_is_x_minus_the_last_residual():
    method = MatchingPursuitSAE(k=4)
    params, x = random_problem(method, tied=True)
    params = method.check_problem(np.random.default_rng(0), params, x)
    fwd = method.forward(F64, params, x, False)
    np.testing.assert_allclose(fwd.xhat, fwd.code @ params["W_enc"] + params["b_dec"], atol=1e-12)
    assert ((fwd.code > 0).sum(axis=1) <= 4).all()
    assert (fwd.code >= 0).all()


def test_mp_sae_gradient_holds_when_atoms_repeat():
    method = MatchingPursuitSAE(k=12)  # more steps than the 8 atoms of the problem
    params, x = random_problem(method, tied=True)
    params = method.check_problem(np.random.default_rng(0), params, x)
    idx = method.forward(F64, params, x, True).code
    assert ((idx > 0).sum(axis=1) < 12).all()  # every row chose some atom twice
    report = check_gradients(method, tied=True, tolerance=1e-6)
    assert report.ok, report.errors


class CodeHeldFixed(MatchingPursuitSAE):
    """The gradient with the code z held constant: ∇D = zᵀ(X̂ − X)/B, not SAELens' training."""

    name = "mp-sae-code-fixed"

    def _objective(self, backend, params, x, state, term, anchor, want_grads):
        loss, grads, fwd, rec = super()._objective(
            backend, params, x, state, term, anchor, want_grads
        )
        if want_grads:
            g = (fwd.xhat - x) / x.shape[0]
            grads["W_enc"] = fwd.code.T @ g
            grads["b_dec"] = g.sum(axis=0)
        return loss, grads, fwd, rec


def test_the_check_tells_the_pursuit_gradient_from_the_code_held_fixed():
    report = check_gradients(CodeHeldFixed(k=3), tied=True, tolerance=1e-6)
    assert not report.ok and report.errors["W_enc"] > 1e-3


def test_mp_sae_trains_with_unit_atoms_and_lowers_the_error():
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((30, 12))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = rng.uniform(0, 1, (600, 30)) * (rng.uniform(size=(600, 30)) < 0.1)
    x = (codes @ atoms).astype(np.float32)
    short = sparsekit.train("mp-sae", x, hidden=30, epochs=1, k=3, batch_size=64, seed=1)
    long = sparsekit.train("mp-sae", x, hidden=30, epochs=15, k=3, batch_size=64, seed=1)
    np.testing.assert_allclose(np.linalg.norm(long.params["W_enc"], axis=1), 1, atol=1e-5)
    err = [float(((m.reconstruct(x) - x) ** 2).mean()) for m in (short, long)]
    assert err[1] < 0.8 * err[0]
