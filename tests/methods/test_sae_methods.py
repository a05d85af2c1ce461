"""The sparse-autoencoder methods (topk, batchtopk, jumprelu, gated, matryoshka): surrogate and
stop-gradient checks, the peers' published AuxK bugs pinned, and the trainer's upkeep."""

from __future__ import annotations

import numpy as np
import pytest

import sparsekit
from sparsekit import get_backend
from sparsekit.methods import StepState, Upkeep
from sparsekit.methods.batchtopk import BatchTopKSAE
from sparsekit.methods.gated import GatedSAE
from sparsekit.methods.jumprelu import JumpReLUSAE
from sparsekit.methods.matryoshka import MatryoshkaSAE
from sparsekit.methods.topk import TopKSAE
from sparsekit.testing import method_contract_tests
from sparsekit.testing.gradcheck import (
    check_gradients,
    numeric_gradient,
    random_problem,
    relative_error,
)
from sparsekit.training.optim import Adam
from sparsekit.training.upkeep import Upkeeper, geometric_median

F64 = get_backend(gpu=False, dtype="float64")

test_contract_topk = method_contract_tests(TopKSAE, k=3, k_aux=2, dead_after=20)
test_contract_batchtopk = method_contract_tests(BatchTopKSAE, k=3, k_aux=2, dead_after=20)
test_contract_matryoshka = method_contract_tests(
    MatryoshkaSAE, k=3, k_aux=2, dead_after=20, prefixes="0.25,0.5,1"
)
test_contract_jumprelu = method_contract_tests(JumpReLUSAE)
test_contract_gated = method_contract_tests(GatedSAE)


@pytest.mark.parametrize(
    "params",
    [
        {"pre_bias": True},
        {"l0_coef": 0.5},
        # the tanh variant's curvature inside the window scales as 1/ε: a wider one keeps the
        # finite differences' truncation error below the tolerance
        {"sparsity": "tanh", "tanh_coef": 0.1, "preact_coef": 0.05, "bandwidth": 0.01},
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_jumprelu_variants_pass_gradcheck(params, seed):
    report = check_gradients(JumpReLUSAE(**params), tied=False, seed=seed, terms=True)
    assert report.ok, report.summary()
    assert report.surrogates == ("log_threshold",)
    assert "surrogate: ∂L/∂log_threshold" in report.all_errors


def _surrogate_gradient(method, seed=0):
    params, x = random_problem(method, tied=False, seed=seed)
    rng = np.random.default_rng([seed, 1])
    state = method.check_state(rng, 8)
    params = method.check_problem(rng, params, x)
    grads = method.loss_and_grads(F64, params, x, state)[1]
    return params, x, state, grads


def test_the_surrogate_check_is_not_vacuous():
    """The random problem puts pre-activations in the windows: the θ gradient is not zero,
    and finite differences of the plain loss (steps unsmoothed) disagree with it."""
    method = JumpReLUSAE()
    params, x, state, grads = _surrogate_gradient(method)
    assert np.all(grads["log_threshold"] != 0)
    probe = {k: v.copy() for k, v in params.items()}
    plain = numeric_gradient(
        lambda: float(method.loss_and_grads(F64, probe, x, state)[0]), probe["log_threshold"], 1e-6
    )
    assert relative_error(plain, grads["log_threshold"]) > 0.5


class WrongSurrogate(JumpReLUSAE):
    """A plugin whose JumpReLU θ pseudo-derivative lacks the factor θ (the BatchTopK-repo port
    returns it for log θ without the chain rule's θ): every true derivative is right."""

    name = "wrong-surrogate"

    def loss_and_grads(self, backend, params, x, state, term=None):
        loss, grads, fwd, rec = super().loss_and_grads(backend, params, x, state, term)
        grads["log_threshold"] = grads["log_threshold"] / backend.xp.exp(params["log_threshold"])
        return loss, grads, fwd, rec


class WrongKernel(JumpReLUSAE):
    """A plugin whose pseudo-derivative uses a kernel twice as wide as the smoothing it declares."""

    name = "wrong-kernel"

    def loss_and_grads(self, backend, params, x, state, term=None):
        wide = JumpReLUSAE(bandwidth=2 * self.bandwidth)
        return wide.loss_and_grads(backend, params, x, state, term)


@pytest.mark.parametrize("cls", [WrongSurrogate, WrongKernel])
def test_a_wrong_surrogate_fails_gradcheck_and_the_kit(cls):
    report = check_gradients(cls(), tied=False, terms=True)
    assert not report.ok
    assert set(report.failures) >= {"surrogate: ∂L/∂log_threshold"}
    assert report.errors["W_enc"] < 1e-6 and report.errors["W_dec"] < 1e-6  # the true ones pass
    from sparsekit.testing import ContractError, check_method

    with pytest.raises(ContractError, match="surrogate"):
        check_method(cls)


# -- AuxK: the peers' published bugs, pinned against an independent NumPy formula ---------------


def _aux_reference(variant: str, params, x, dead, k_aux, alpha, anchor):
    """The AuxK loss written out from the paper, or with a peer's bug.

    ``correct``: Ê = A_aux W_dec, R = X − X̂ and N_R taken at ``anchor`` (detached).
    ``b_dec_twice`` (sparsify #132): Ê = A_aux W_dec + b_dec.
    ``not_detached`` (SAELens PR #432, sparsify #57): R = X − X̂ live (N_R still constant).
    """

    def fwd(p):
        z = (x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"]
        idx = np.argsort(-z, axis=1)[:, :3]  # k = 3
        a = np.zeros_like(z)
        np.put_along_axis(a, idx, np.maximum(np.take_along_axis(z, idx, 1), 0), 1)
        return z, a @ p["W_dec"] + p["b_dec"]

    z, xhat = fwd(params)
    _, xhat0 = fwd(anchor)
    r0 = x - xhat0
    residual = x - xhat if variant == "not_detached" else r0
    units = np.flatnonzero(dead)
    zd = z[:, units]
    local = np.argsort(-zd, axis=1)[:, : min(k_aux, units.size)]
    a_aux = np.zeros_like(z)
    np.put_along_axis(a_aux, units[local], np.maximum(np.take_along_axis(zd, local, 1), 0), 1)
    e_hat = a_aux @ params["W_dec"]
    if variant == "b_dec_twice":
        e_hat = e_hat + params["b_dec"]
    xc, rc = x - x.mean(0), r0 - r0.mean(0)
    weight = alpha * (xc * xc).sum() / (rc * rc).sum()
    return weight * 0.5 / len(x) * ((e_hat - residual) ** 2).sum()


def _aux_setup():
    method = TopKSAE(k=3, k_aux=2)
    params, x = random_problem(method, tied=False, seed=3)
    dead = np.zeros(8, dtype=bool)
    dead[[1, 4, 6]] = True
    return method, params, x, dead


def _reference_gradients(variant):
    method, params, x, dead = _aux_setup()
    anchor = {k: v.copy() for k, v in params.items()}
    grads = {}
    for name in params:
        probe = {k: v.copy() for k, v in params.items()}
        grads[name] = numeric_gradient(
            lambda p=probe: _aux_reference(variant, p, x, dead, 2, 1 / 32, anchor),
            probe[name],
            1e-6,
        )
    return grads


def _aux_errors(grads):
    """Relative error of each gradient against the correct formula's finite differences."""
    reference = _reference_gradients("correct")
    return {name: relative_error(reference[name], grads[name]) for name in reference}


def test_auxk_matches_the_papers_formula():
    method, params, x, dead = _aux_setup()
    _, grads, _, _ = method.loss_and_grads(F64, params, x, StepState(dead=dead), term="auxk")
    assert max(_aux_errors(grads).values()) < 1e-6
    # the aux term really acts: dead rows of the decoder move, the live ones not at all
    assert np.abs(grads["W_dec"][dead]).sum() > 0
    assert np.all(grads["W_dec"][~dead] == 0)


def test_auxk_check_fails_on_b_dec_counted_twice():
    """sparsify #132: decode() added b_dec to the dead latents' prediction."""
    errors = _aux_errors(_reference_gradients("b_dec_twice"))
    assert errors["W_dec"] > 1e-2 and errors["b_dec"] > 1e-2


def test_auxk_check_fails_on_a_residual_not_detached():
    """SAELens PR #432 / sparsify #57: the residual kept its graph, so the aux loss pulled the
    live latents and b_dec."""
    buggy = _reference_gradients("not_detached")
    errors = _aux_errors(buggy)
    assert errors["W_dec"] > 1e-2 and errors["b_dec"] > 1e-2
    _, _, _, dead = _aux_setup()
    assert np.abs(buggy["W_dec"][~dead]).max() > 1e-3  # the bug moves live rows


def test_auxk_needs_its_stop_gradient_to_pass():
    """Finite differences of the un-anchored loss (residual not held) reject the gradient:
    the declared stop-gradient is what the check differentiates."""
    method, params, x, dead = _aux_setup()
    state = StepState(dead=dead)
    grads = method.loss_and_grads(F64, params, x, state, term="auxk")[1]
    probe = {k: v.copy() for k, v in params.items()}
    plain = numeric_gradient(
        lambda: float(method.anchored_loss(F64, probe, x, state, probe, term="auxk")),
        probe["b_dec"],
        1e-6,
    )
    assert relative_error(plain, grads["b_dec"]) > 1e-2


@pytest.mark.parametrize("k_aux", [2, 3, 5])  # fewer than, as many as, more than the dead
@pytest.mark.parametrize("block_bytes", [8, 1 << 22])  # one row per block, one block
def test_auxk_in_blocks_matches_the_papers_formula(monkeypatch, k_aux, block_bytes):
    """The AuxK term taken a block of rows at a time, on the dead columns (every dead latent
    kept when k_aux >= their number), against the paper's formula's finite differences."""
    from sparsekit.backend import selection

    monkeypatch.setattr(selection, "ROW_BLOCK_BYTES", block_bytes)
    method, params, x, dead = _aux_setup()
    method.k_aux = k_aux
    anchor = {k: v.copy() for k, v in params.items()}
    loss, grads, _, _ = method.loss_and_grads(F64, params, x, StepState(dead=dead), term="auxk")
    assert float(loss) == pytest.approx(
        _aux_reference("correct", params, x, dead, k_aux, 1 / 32, anchor), rel=1e-12
    )
    for name in params:
        probe = {k: v.copy() for k, v in params.items()}
        expected = numeric_gradient(
            lambda p=probe: _aux_reference("correct", p, x, dead, k_aux, 1 / 32, anchor),
            probe[name],
            1e-6,
        )
        assert relative_error(expected, grads[name]) < 1e-6, name
    assert np.all(grads["W_dec"][~dead] == 0) and np.abs(grads["W_dec"][dead]).sum() > 0


@pytest.mark.parametrize("by_nonzeros", [True, False], ids=["nonzeros", "blas"])
def test_auxk_by_the_codes_nonzeros_matches_the_papers_formula(monkeypatch, by_nonzeros):
    """Many dead latents and a small k_aux (4 of 80: 5% of the aux code nonzero, as at
    768→16,384 where 512 of 6,569 are kept): the AuxK products run by the code's nonzeros
    on the CPU, and loss and gradients still match the paper's formula's finite
    differences, as they do with BLAS's dense products."""
    from sparsekit.backend import sparse_code

    if by_nonzeros:
        pytest.importorskip("numba")
    else:
        monkeypatch.setattr(sparse_code, "NONZERO_DENSITY", -1.0)  # always BLAS
    found = []
    real = sparse_code.find_nonzeros
    monkeypatch.setattr(sparse_code, "find_nonzeros", lambda a: found.append(real(a)) or found[-1])
    rng = np.random.default_rng(11)
    method = TopKSAE(k=3, k_aux=4, dead_after=1)
    params = method.init_params(rng, 12, 128, False, None)
    x = rng.standard_normal((40, 12))
    dead = np.zeros(128, dtype=bool)
    dead[rng.choice(128, 80, replace=False)] = True
    anchor = {k: v.copy() for k, v in params.items()}
    loss, grads, _, _ = method.loss_and_grads(F64, params, x, StepState(dead=dead), term="auxk")
    assert any(f is not None for f in found) == by_nonzeros
    assert float(loss) == pytest.approx(
        _aux_reference("correct", params, x, dead, 4, method.aux_coef, anchor), rel=1e-12
    )
    for name in params:
        probe = {k: v.copy() for k, v in params.items()}
        expected = numeric_gradient(
            lambda p=probe: _aux_reference("correct", p, x, dead, 4, method.aux_coef, anchor),
            probe[name],
            1e-6,
        )
        assert relative_error(expected, grads[name]) < 1e-6, name
    assert np.all(grads["W_dec"][~dead] == 0) and np.abs(grads["W_dec"][dead]).sum() > 0


def test_auxk_blocks_do_not_change_a_float32_step_beyond_rounding(monkeypatch):
    """One block or many: the same float32 loss and gradients to rounding (the sums over
    blocks are the only difference)."""
    from sparsekit.backend import selection

    f32 = get_backend(gpu=False, dtype="float32")
    rng = np.random.default_rng(5)
    method = TopKSAE(k=4, k_aux=6, dead_after=1)
    params = {
        k: v.astype(np.float32) for k, v in method.init_params(rng, 16, 64, False, None).items()
    }
    x = rng.standard_normal((300, 16)).astype(np.float32)
    dead = rng.uniform(size=64) < 0.3
    results = []
    for block_bytes in (1 << 22, 4 * 7 * int(dead.sum())):  # one block; blocks of 7 rows
        monkeypatch.setattr(selection, "ROW_BLOCK_BYTES", block_bytes)
        results.append(method.loss_and_grads(f32, params, x, StepState(dead=dead)))
    (loss_a, grads_a, _, _), (loss_b, grads_b, _, _) = results
    assert loss_a.dtype == np.float32 and float(loss_a) == pytest.approx(float(loss_b), rel=1e-5)
    for name, g in grads_a.items():
        assert g.dtype == np.float32
        np.testing.assert_allclose(grads_b[name], g, rtol=1e-4, atol=1e-6 * np.abs(g).max())


def test_no_dead_latent_no_aux_term():
    method, params, x, _ = _aux_setup()
    none_dead = StepState(dead=np.zeros(8, dtype=bool))
    loss, grads, _, _ = method.loss_and_grads(F64, params, x, none_dead, term="auxk")
    assert float(loss) == 0 and all(np.all(g == 0) for g in grads.values())


# -- the methods' own behaviour --------------------------------------------------------------


def test_topk_is_relu_of_top_k_with_the_pre_encoder_bias():
    method = TopKSAE(k=3)
    params, x = random_problem(method, tied=False)
    fwd = method.forward(F64, params, x, True)
    z = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
    code = np.zeros_like(z)
    top = np.argsort(-z, axis=1)[:, :3]
    np.put_along_axis(code, top, np.maximum(np.take_along_axis(z, top, 1), 0), 1)
    assert np.allclose(sparsekit.core.step.dense_code(F64, fwd), code)
    assert np.allclose(fwd.xhat, code @ params["W_dec"] + params["b_dec"])


def test_batchtopk_keeps_b_times_k_and_learns_an_inference_threshold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 10)).astype(np.float32)
    method = BatchTopKSAE(k=4, dead_after=0)
    config = sparsekit.resolve_config(method, hidden=32, epochs=3, batch_size=100, lr=1e-3)
    trainer = sparsekit.Trainer(method, x, config)
    fwd = method.forward(trainer.backend, trainer.params, x[:100], True)
    code = sparsekit.core.step.dense_code(trainer.backend, fwd)
    assert int((code > 0).sum()) == 400 and fwd.code is None  # sparse while training
    assert method.threshold is None
    model = trainer.fit()
    assert method.threshold is not None and method.threshold > 0 and method.threshold_updates == 9
    codes = model.encode(x, training=False)
    assert np.all((codes == 0) | (codes > method.threshold))
    assert 1 <= (codes > 0).sum(axis=1).mean() <= 16  # about k on average


def test_matryoshka_loss_is_the_sum_over_prefixes():
    method = MatryoshkaSAE(k=3, prefixes="0.25,0.5,1")
    params, x = random_problem(method, tied=False)
    loss, _, fwd, rec = method.loss_and_grads(F64, params, x, StepState(), term="prefixes")
    code = sparsekit.core.step.dense_code(F64, fwd)
    expected = 0.0
    for m in (2, 4, 8):
        e = code[:, :m] @ params["W_dec"][:m] + params["b_dec"] - x
        expected += 0.5 / len(x) * (e * e).sum()
    assert np.isclose(float(loss), expected)
    e = code @ params["W_dec"] + params["b_dec"] - x
    assert np.isclose(float(rec), 0.5 / len(x) * (e * e).sum())


def test_gated_aux_term_leaves_the_decoder_alone():
    method = GatedSAE()
    params, x = random_problem(method, tied=False)
    params = method.check_problem(np.random.default_rng(0), params, x)
    _, grads, _, _ = method.loss_and_grads(F64, params, x, StepState(), term="aux")
    assert np.all(grads["W_dec"] == 0)
    assert np.abs(grads["W_enc"]).sum() > 0


# -- the trainer's upkeep -------------------------------------------------------------------


def test_geometric_median():
    # Three points of an equilateral triangle and its centre: the median is the centre,
    # however far an outlier pulls the mean.
    pts = np.array([[1.0, 0.0], [-0.5, np.sqrt(3) / 2], [-0.5, -np.sqrt(3) / 2], [0, 0]])
    assert np.allclose(geometric_median(pts, iterations=1000, tol=1e-12), [0, 0], atol=1e-6)
    skewed = np.vstack([np.zeros((10, 2)), [[1000.0, 0.0]]])
    assert np.linalg.norm(geometric_median(skewed)) < 1e-3 < np.linalg.norm(skewed.mean(0))


def test_projection_removes_the_radial_part_and_rows_stay_unit():
    rng = np.random.default_rng(0)
    up = Upkeeper(Upkeep(unit_norm_decoder=True), TopKSAE(), F64, 5, seed=0)
    rows = rng.standard_normal((5, 7))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    params = {"W_enc": rows.copy(), "W_dec": rows}
    grad = rng.standard_normal((5, 7))
    up.project("W_dec", grad, params)
    assert np.allclose((grad * rows).sum(axis=1), 0, atol=1e-12)
    other = rng.standard_normal((5, 7))
    up.project("W_enc", other, params)  # the encoder is not the decoder: untouched
    params["W_dec"] += 0.3 * rng.standard_normal((5, 7))
    up.renormalise("W_dec", params)
    assert np.allclose(np.linalg.norm(params["W_dec"], axis=1), 1)


def test_trainer_starts_b_dec_at_the_geometric_median_and_keeps_rows_unit():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((400, 6)) + 3).astype(np.float32)
    method = TopKSAE(k=2, dead_after=0)
    config = sparsekit.resolve_config(method, hidden=12, epochs=1, batch_size=50)
    trainer = sparsekit.Trainer(method, x, config)
    rows = np.sort(
        np.random.default_rng(np.random.SeedSequence(0).spawn(2)[0]).choice(400, 400, replace=False)
    )
    assert np.allclose(
        trainer.params["b_dec"], geometric_median(x[rows].astype(np.float64)), atol=1e-5
    )
    trainer.fit()
    assert np.allclose(np.linalg.norm(trainer.params["W_dec"], axis=1), 1, atol=1e-5)


def test_resampling_reinitialises_dead_units_and_their_moments():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 6))
    method = TopKSAE(k=2, dead_after=10, resample_every=1)
    params = {k: np.asarray(v) for k, v in method.init_params(rng, 6, 8, False, x).items()}
    params["b_enc"][[2, 5]] = -100.0  # units 2 and 5 never fire
    up = Upkeeper(method.upkeep(), method, F64, 8, seed=0)
    adam = Adam(1e-3)
    adam.start_step()
    for name, value in params.items():
        adam.update(np, params, name, np.ones_like(value))
    before = {k: v.copy() for k, v in params.items()}
    state = up.step_state()
    assert not state.dead.any()  # nothing seen yet
    _, _, fwd, _ = method.loss_and_grads(F64, params, x, state)
    up.after_step(params, x, fwd, adam)  # 64 samples >= 10: the silent units are dead
    assert up.resampled == 2
    for j in (2, 5):
        assert params["b_enc"][j] == 0
        assert np.isclose(np.linalg.norm(params["W_dec"][j]), 1)
        assert adam.m["W_dec"][j].sum() == 0 and adam.v["W_enc"][j].sum() == 0
        assert adam.m["b_enc"][j] == 0
    live = [0, 1, 3, 4, 6, 7]
    assert np.array_equal(params["W_dec"][live], before["W_dec"][live])
    assert np.all(adam.m["W_dec"][live] != 0)
    assert up.since_fired[[2, 5]].tolist() == [0, 0]


def test_resampling_needs_dead_unit_tracking():
    with pytest.raises(sparsekit.ParameterError, match="--resample-every needs --dead-after > 0"):
        TopKSAE(k=2, dead_after=0, resample_every=5).validate(8, 4)


def test_checkpoint_round_trips_the_upkeep_and_refuses_a_bad_counter(tmp_path):
    from sparsekit.training.checkpoint import load_checkpoint, save_checkpoint

    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    method = TopKSAE(k=2, dead_after=50, resample_every=2)
    config = sparsekit.resolve_config(method, hidden=16, epochs=1, batch_size=50)
    trainer = sparsekit.Trainer(method, x, config)
    trainer.fit()
    path = save_checkpoint(tmp_path / "c.npz", trainer)
    upkeep = load_checkpoint(path)["state"]["upkeep"]
    assert np.array_equal(upkeep["since_fired"], trainer.upkeep.since_fired)
    assert upkeep["steps"] == 4 and upkeep["rng"] == trainer.upkeep.rng.bit_generator.state

    members = dict(np.load(path))
    members["upkeep/since_fired"] = members["upkeep/since_fired"][:5]
    np.savez(tmp_path / "bad.npz", **members)
    with pytest.raises(sparsekit.CheckpointError, match="upkeep/since_fired"):
        load_checkpoint(tmp_path / "bad.npz")


# -- BatchTopK's sparse code -------------------------------------------------------------------


def _dense_batch_top_k(z, n):
    """The paper's selection on a dense copy: ReLU, then zero all but the n largest entries."""
    code = np.maximum(z, 0)
    flat = code.reshape(-1)
    flat[np.argpartition(flat, flat.size - n)[: flat.size - n]] = 0
    return code


@pytest.mark.parametrize("cls", [BatchTopKSAE, MatryoshkaSAE])
def test_batchtopk_training_forward_has_no_dense_code(cls):
    method = cls(k=3, k_aux=2, dead_after=20)
    params, x = random_problem(method, tied=False)
    fwd = method.forward(F64, params, x, True)
    assert fwd.code is None and fwd.code_values.shape[0] == x.shape[0]
    code = sparsekit.core.step.dense_code(F64, fwd)
    z = (x - params["b_dec"]) @ params["W_enc"].T + params["b_enc"]
    assert np.array_equal(code, _dense_batch_top_k(z, 3 * x.shape[0]))
    assert np.allclose(fwd.xhat, code @ params["W_dec"] + params["b_dec"], rtol=1e-12)


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE, MatryoshkaSAE])
def test_the_generic_array_path_matches_the_numpy_one(cls):
    """The code a CuPy backend runs (no ``xp is numpy`` fast path: the batch selection from
    all positive entries, the AuxK selection in one block) gives the NumPy path's step."""
    import types

    import scipy.sparse

    from sparsekit.backend import Backend

    clone = types.ModuleType("numpy_clone")
    clone.__dict__.update({k: v for k, v in np.__dict__.items() if not k.startswith("__")})
    generic = Backend("numpy-clone", clone, scipy.sparse, np.dtype("float64"))
    method = cls(k=3, k_aux=2, dead_after=20)
    params, x = random_problem(method, tied=False, seed=4)
    state = StepState(dead=np.arange(params["W_enc"].shape[0]) % 3 == 0)
    loss, grads, fwd, _ = method.loss_and_grads(F64, params, x, state)
    loss_g, grads_g, fwd_g, _ = method.loss_and_grads(generic, params, x, state)
    assert float(loss_g) == pytest.approx(float(loss), rel=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(grads_g[name], g, rtol=1e-10, atol=1e-12)
    assert np.array_equal(
        sparsekit.core.step.dense_code(F64, fwd), sparsekit.core.step.dense_code(generic, fwd_g)
    )


@pytest.mark.parametrize("shift", [-1.0, 0.0, 2.0], ids=["few-positive", "half", "crowded"])
@pytest.mark.parametrize("k_aux", [5, 40, 79])
def test_the_aux_code_keeps_the_k_aux_largest_dead_pre_activations(shift, k_aux):
    """The selection is skipped on rows with at most k_aux positives (the ReLU leaves the
    same code); checked against sorting each row."""
    from sparsekit.backend.selection import relu_top_k_of_columns

    rng = np.random.default_rng(3)
    z = (rng.standard_normal((64, 120)) + shift).astype(np.float32)
    units = np.sort(rng.choice(120, 80, replace=False))
    code = relu_top_k_of_columns(np, z, units, k_aux)
    z_dead = z[:, units]
    expected = np.zeros_like(z_dead)
    top = np.argsort(-z_dead, axis=1, kind="stable")[:, :k_aux]
    rows = np.arange(64)[:, None]
    expected[rows, top] = np.maximum(z_dead[rows, top], 0)
    np.testing.assert_array_equal(code, expected)
