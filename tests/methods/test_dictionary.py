"""dict-learning (online dictionary learning): the update, its state, resume and dead atoms."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit import Trainer, make_method, resolve_config, restore_trainer, save_checkpoint
from sparsekit.backend import get_backend
from sparsekit.coders import fista, l1_objective
from sparsekit.errors import ParameterError
from sparsekit.methods.dictionary import block_coordinate_pass, forgetting_factor


def _data(n: int = 600, dim: int = 20, atoms: int = 30, seed: int = 0) -> np.ndarray:
    """Sparse combinations (3 of ``atoms``) of random unit atoms, plus a little noise."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((atoms, dim))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    codes = np.zeros((n, atoms))
    for row in codes:
        row[rng.choice(atoms, 3, replace=False)] = rng.uniform(1, 2, 3) * rng.choice([-1, 1], 3)
    return (codes @ truth + 0.01 * rng.standard_normal((n, dim))).astype(np.float32)


def _trainer(data, epochs, **params):
    method = make_method("dict-learning", **params)
    config = resolve_config(method, hidden=30, epochs=epochs, batch_size=50, seed=3)
    return Trainer(method, data, config)


@pytest.mark.parametrize("coder", ["fista", "ista", "omp", "cd"])
def test_learning_lowers_the_held_out_objective(coder) -> None:
    data = _data()
    train, held = data[:500], data[500:]
    trainer = _trainer(train, 3, coder=coder, alpha=0.2, k=3)
    before = trainer.params["W_enc"].copy()
    trainer.fit()
    after = trainer.params["W_enc"]
    assert (np.linalg.norm(after, axis=1) <= 1 + 1e-5).all()

    def objective(d):
        codes = fista(held, d, 0.2, tol=1e-5, max_iter=5000).codes
        return l1_objective(held, d, codes, 0.2).mean()

    assert objective(after) < 0.85 * objective(before)  # from data-drawn atoms: ~0.75


def test_resume_is_exact(tmp_path) -> None:
    """Two epochs in one go equal one epoch, a checkpoint (A, B and the step count in it)
    and a resumed second epoch, bit for bit."""
    data = _data(300)
    straight = _trainer(data, 2)
    straight.fit()
    first = _trainer(data, 1)
    first.fit()
    state = first.method.state_dict()
    assert state["steps"] == 6 and state["A"].shape == (30, 30) and state["B"].shape == (30, 20)
    save_checkpoint(tmp_path / "checkpoint.npz", first)
    resumed = restore_trainer(tmp_path / "checkpoint.npz", dataset=data, epochs=2)
    assert resumed.method.steps == 6
    np.testing.assert_array_equal(resumed.method.state_dict()["A"], state["A"])
    resumed.fit()
    np.testing.assert_array_equal(resumed.params["W_enc"], straight.params["W_enc"])
    np.testing.assert_array_equal(
        resumed.method.state_dict()["B"], straight.method.state_dict()["B"]
    )


def test_forgetting_schedule_is_mairals() -> None:
    batch = 4
    # θ = (t + 1)B for t < B − 1, then B² + t + 1 − B; β = (θ + 1 − B)/(θ + 1)
    assert forgetting_factor(0, batch) == pytest.approx(1 / 5)
    assert forgetting_factor(2, batch) == pytest.approx(9 / 13)
    assert forgetting_factor(3, batch) == pytest.approx(13 / 17)
    assert forgetting_factor(10, batch) == pytest.approx(20 / 24)


def test_constant_forgetting_scales_the_statistics() -> None:
    data = _data(100)
    method = make_method("dict-learning", forgetting=0.5, alpha=0.2)
    backend = get_backend(dtype="float64")
    params = method.init_params(np.random.default_rng(0), 20, 30, True, data)
    x = data[:50].astype(np.float64)
    method.update(backend, params, x, 1.0)
    a1 = method.state_dict()["A"].copy()
    code = method.forward(backend, params, data[50:].astype(np.float64), True).code
    method.update(backend, params, data[50:].astype(np.float64), 1.0)
    np.testing.assert_allclose(method.state_dict()["A"], 0.5 * a1 + code.T @ code / 50, rtol=1e-12)


def test_block_coordinate_pass_matches_its_formula() -> None:
    """Each atom j in turn: d_j + (b_j − a_j D)/A_jj, projected onto the unit ball."""
    rng = np.random.default_rng(1)
    codes = rng.standard_normal((40, 6))
    x = rng.standard_normal((40, 5))
    a, b = codes.T @ codes / 40, codes.T @ x / 40
    dictionary = rng.standard_normal((6, 5))
    expected = dictionary.copy()
    for j in range(6):
        atom = expected[j] + (b[j] - a[j] @ expected) / a[j, j]
        expected[j] = atom / max(np.linalg.norm(atom), 1)
    block_coordinate_pass(np, dictionary, a, b, x, x - codes @ dictionary)
    np.testing.assert_allclose(dictionary, expected, rtol=1e-12)


def test_dead_atoms_take_the_worst_coded_samples() -> None:
    """Unused atoms become the samples with the largest residuals, worst first."""
    rng = np.random.default_rng(2)
    codes = rng.standard_normal((10, 4))
    codes[:, [1, 3]] = 0  # atoms 1 and 3 unused: A_11 = A_33 = 0
    x = rng.standard_normal((10, 5))
    a, b = codes.T @ codes / 10, codes.T @ x / 10
    dictionary = rng.standard_normal((4, 5))
    residual = rng.standard_normal((10, 5))
    residual[7] *= 10  # the worst-coded sample
    residual[2] *= 5  # the second worst
    block_coordinate_pass(np, dictionary, a, b, x, residual)
    np.testing.assert_allclose(dictionary[1], x[7] / np.linalg.norm(x[7]))
    np.testing.assert_allclose(dictionary[3], x[2] / np.linalg.norm(x[2]))
    assert np.isfinite(dictionary).all()


def test_parameters_are_checked() -> None:
    with pytest.raises(ParameterError, match="--coder"):
        make_method("dict-learning", coder="lars").validate(30, 20)
    with pytest.raises(ParameterError, match="--forgetting"):
        make_method("dict-learning", forgetting=1.5).validate(30, 20)
    with pytest.raises(ParameterError, match="--k"):
        make_method("dict-learning", k=31).validate(30, 20)


def test_coordinate_descent_coder_gradient_and_gpu_refusal() -> None:
    """With --coder cd the checked gradient is still the decoder's with the code held fixed;
    on a GPU the coder is refused in one line (one coordinate at a time is thousands of
    kernel launches a batch)."""
    from sparsekit.backend.simulated import simulated_backend
    from sparsekit.testing.gradcheck import check_gradients

    method = make_method("dict-learning", coder="cd", alpha=0.2)
    report = check_gradients(method, tied=True, seed=0, tolerance=1e-6)
    assert report.ok, report.errors
    backend = simulated_backend(dtype="float32")
    data = _data(60)
    with pytest.raises(ParameterError, match="--coder cd runs on the CPU"):
        method.code(backend, backend.asarray(data[:30]), backend.asarray(data[30:]), True)
