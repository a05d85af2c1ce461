"""Behaviour of the five built-in methods on real MNIST and on synthetic dictionaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sparsekit
from sparsekit.core import step as autoencoder
from sparsekit.data import make_sparse_coding, recovery_summary


def registry():
    return sparsekit.load_registry(sparsekit.make_plugin_manager(entry_points=False))


class History(sparsekit.Callback):
    def __init__(self):
        self.rows = []

    def on_epoch_end(self, trainer, metrics):
        self.rows.append(metrics)


@pytest.mark.parametrize("name", ["plain", "l2", "kl", "arora", "ksparse"])
def test_each_builtin_lowers_its_objective_on_2000_mnist_images(name, mnist_2000):
    history = History()
    model = sparsekit.train(
        name, mnist_2000, hidden=64, epochs=4, seed=0, callbacks=[history], registry=registry()
    )
    losses = [row["loss"] for row in history.rows]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses
    assert model.encoder_weights.dtype == np.float32  # float32 by default
    assert model.encode(mnist_2000[:10]).shape == (10, 64)


def test_ksparse_codes_have_exactly_k_nonzeros_per_row(mnist_2000):
    model = sparsekit.train(
        "ksparse", mnist_2000, hidden=100, epochs=2, k=7, alpha=2.0, registry=registry()
    )
    training_codes = model.encode(mnist_2000[:300], training=True)
    assert np.all((training_codes != 0).sum(axis=1) == 7)
    # Encoding for downstream use keeps alpha*k units.
    assert np.all((model.encode(mnist_2000[:300]) != 0).sum(axis=1) == 14)


def test_ksparse_keeps_the_largest_values_by_sign():
    method = registry().create("ksparse", k=2, k_start=2)
    backend = sparsekit.get_backend(dtype="float64")
    params = {
        "W_enc": np.eye(4),
        "b_enc": np.zeros(4),
        "b_dec": np.zeros(4),
    }
    x = np.array([[-5.0, 1.0, 3.0, 2.0]])
    code = autoencoder.dense_code(backend, autoencoder.forward(method, backend, params, x))
    np.testing.assert_array_equal(code, [[0.0, 0.0, 3.0, 2.0]])  # -5 is large but negative


def test_ksparse_k_schedule_anneals_over_the_first_half():
    method = registry().create("ksparse", k=25, k_start=100)
    method.validate(1000, 784)
    ks = [method.k_at(e, 10) for e in range(10)]
    assert ks[0] == 100 and ks[5:] == [25] * 5
    assert all(a > b for a, b in zip(ks[:5], ks[1:6], strict=True))


def test_ksparse_k_start_above_hidden_starts_at_hidden_as_documented():
    # Clipped, not refused: the default k_start (100) is above small sizes such as the
    # hidden = 64 of docs/sweeps.md's own example, and k = hidden keeps every unit anyway.
    method = registry().create("ksparse", k=10, k_start=500)
    method.validate(64, 784)
    assert method.k_at(0, 10) == 64 and method.k_at(5, 10) == 10
    doc = (Path(__file__).parents[2] / "docs" / "sweeps.md").read_text(encoding="utf-8")
    assert "must not exceed the smallest hidden size" not in doc
    assert "k_start` above a trial's hidden size starts at hidden" in " ".join(doc.split())


def test_kl_penalty_drives_mean_activation_toward_rho(mnist_2000):
    common = dict(hidden=50, epochs=10, lr=1e-2, seed=0, registry=registry(), weight_decay=0.0)
    sparse = sparsekit.train("kl", mnist_2000, rho=0.05, beta=3.0, **common)
    free = sparsekit.train("kl", mnist_2000, rho=0.05, beta=0.0, **common)

    def mean_activation(model):
        backend = model.backend
        fwd = autoencoder.forward(model.method, backend, model.params, mnist_2000)
        return backend.to_numpy(fwd.a).mean(axis=0)

    with_penalty, without = mean_activation(sparse), mean_activation(free)
    # Without the penalty units sit near saturation; with it they come within a few hundredths
    # of rho in 160 steps (the reconstruction term still pulls the other way).
    assert abs(with_penalty.mean() - 0.05) < 0.06, (with_penalty.mean(), without.mean())
    assert abs(with_penalty.mean() - 0.05) < 0.1 * abs(without.mean() - 0.05)
    assert np.all(with_penalty < 0.3)


def test_arora_update_is_the_published_rule():
    """ĝ = (1/B) sgn(X)ᵀ (X W − Y) with X the thresholded correlations, then unit rows."""
    method = registry().create("arora", tau=0.3)
    backend = sparsekit.get_backend(dtype="float64")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    y = rng.standard_normal((8, 5))
    params = {"W_enc": w.copy(), "b_enc": np.zeros(6), "b_dec": np.zeros(5)}
    method.update(backend, params, y, lr=0.5)
    s = y @ w.T
    x = s * (np.abs(s) >= 0.3)
    g_hat = np.sign(x).T @ (x @ w - y) / 8
    expected = w - 0.5 * g_hat
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(params["W_enc"], expected, rtol=1e-12)


def test_arora_recovers_a_synthetic_incoherent_dictionary():
    """D = 64, H = 100, k = 3 nonzeros of ±1 (C = 1, τ = C/2), started near the truth.

    The analysis needs k ≲ √D/(μ log D); at D = 64 that is a few atoms (k = 10 as in the
    template of methods.md leaves threshold decoding too noisy to improve anything). The
    simple neural update keeps a small bias, so the tolerance is on the distance reached,
    not on exact recovery.
    """
    problem = make_sparse_coding(n=20000, dim=64, atoms=100, k=3, seed=0)
    truth = problem.dictionary  # D×H, unit columns
    rng = np.random.default_rng(1)
    start = truth.T + 0.045 * rng.standard_normal(truth.T.shape)
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    before = recovery_summary(truth, start.T)

    method = registry().create("arora", tau=0.5)
    config = sparsekit.resolve_config(method, hidden=100, epochs=3, batch_size=256, lr=1.0)
    trainer = sparsekit.Trainer(method, problem.dataset, config)
    trainer.params["W_enc"] = trainer.backend.asarray(start)
    model = trainer.fit()
    after = recovery_summary(truth, model.decoder_weights.T)
    assert before["mean"] > 0.3
    assert after["mean"] < 0.2, (before, after)
    assert after["max"] < before["max"]
