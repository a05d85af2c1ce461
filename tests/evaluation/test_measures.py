"""Measures on known inputs, the per-epoch metrics, the linear probe and ``sparsekit eval``."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from sparsekit.backend import get_backend
from sparsekit.data import make_sparse_coding
from sparsekit.errors import ParameterError
from sparsekit.evaluation.measures import (
    MissingDependencyError,
    VarianceAccumulator,
    coherence,
    dead_units,
    evaluate,
    fraction_variance_explained,
    linear_probe,
    probe_features,
    select_C,
)
from sparsekit.methods.arora import Arora
from sparsekit.training.model import Model
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer, make_method

# -- fraction of variance explained --------------------------------------------------------


def test_fve_of_a_perfect_reconstruction_is_one_and_of_the_mean_is_zero():
    x = np.random.default_rng(0).normal(size=(50, 7))
    assert fraction_variance_explained(x, x) == 1.0
    mean = np.broadcast_to(x.mean(axis=0), x.shape)
    assert fraction_variance_explained(x, mean) == pytest.approx(0.0, abs=1e-12)
    # Worse than the mean is negative; a known value: half the deviation left -> 1 - 1/4.
    assert fraction_variance_explained(x, np.zeros_like(x) + 100) < 0
    half = mean + 0.5 * (x - mean)
    assert fraction_variance_explained(x, half) == pytest.approx(0.75)


def test_fve_checks_shapes_and_handles_constant_data():
    with pytest.raises(ParameterError, match="shape"):
        fraction_variance_explained(np.zeros((3, 2)), np.zeros((3, 3)))
    flat = np.ones((4, 3))
    assert fraction_variance_explained(flat, flat) == 1.0
    assert fraction_variance_explained(flat, flat + 1) == float("-inf")


def test_variance_accumulator_matches_the_two_pass_sum_of_squares():
    rng = np.random.default_rng(1)
    # A large offset: Σx² − N·x̄² would lose most digits here; the pairwise merge must not.
    x = 1e4 + rng.normal(size=(1001, 13))
    acc = VarianceAccumulator()
    for start, stop in ((0, 1), (1, 128), (128, 129), (129, 1001)):
        acc.add(x[start:stop].astype(np.float64))
    acc.add(x[:0])  # an empty batch changes nothing
    expected = float(((x - x.mean(axis=0)) ** 2).sum())
    assert acc.n == 1001
    assert acc.sst == pytest.approx(expected, rel=1e-9)
    assert VarianceAccumulator().sst == 0.0


# -- coherence and dead units -------------------------------------------------------------


def test_coherence_of_an_orthonormal_dictionary_is_zero():
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(30, 30)))
    assert coherence(q.T * 5.0) == pytest.approx(0.0, abs=1e-12)  # scale does not matter
    assert coherence(np.eye(4)[:1]) == 0.0  # one atom


def test_coherence_of_a_duplicated_atom_is_one_whatever_its_sign_and_scale():
    atoms = np.random.default_rng(3).normal(size=(20, 40))
    atoms[7] = -3.0 * atoms[2]
    assert coherence(atoms) == pytest.approx(1.0)


def test_coherence_in_blocks_equals_the_full_gram_and_the_column_convention():
    from sparsekit.data import mutual_coherence

    atoms = np.random.default_rng(4).normal(size=(57, 16))
    atoms[11] = 0.0  # a zero atom is coherent with nothing
    full = coherence(atoms)
    assert coherence(atoms, chunk=5) == pytest.approx(full, abs=1e-15)
    assert coherence(atoms.astype(np.float32)) == pytest.approx(full, rel=1e-6)
    assert full == pytest.approx(mutual_coherence(atoms.T))


def test_dead_units_counts_units_never_active():
    assert dead_units(np.array([3, 0, 1, 0])) == 2
    assert dead_units(np.array([1, 1])) == 0


# -- evaluate ----------------------------------------------------------------------------


def _arora_model(atoms: np.ndarray, tau: float = 0.5) -> Model:
    backend = get_backend(False, "float64")
    h, d = atoms.shape
    params = {"W_enc": atoms.copy(), "b_enc": np.zeros(h), "b_dec": np.zeros(d)}
    return Model(Arora(tau=tau), params, backend)


def test_evaluate_reports_every_measure_and_recovery_of_the_true_dictionary():
    problem = make_sparse_coding(n=600, dim=64, atoms=40, k=2, seed=5)
    truth_rows = problem.dictionary.T
    atoms = np.vstack([truth_rows, np.zeros((1, 64))])  # a last unit that can never fire
    model = _arora_model(atoms)
    out = evaluate(model, problem)
    assert out["n"] == 600
    assert out["dead_units"] == 1
    assert out["recovery_max"] == pytest.approx(0.0, abs=1e-9)
    assert out["recovered"] == 1.0
    assert out["coherence"] == pytest.approx(problem.coherence)
    xhat = model.reconstruct(problem.signals)
    assert out["mse"] == pytest.approx(np.mean((xhat - problem.signals) ** 2))
    assert out["fve"] == pytest.approx(fraction_variance_explained(problem.signals, xhat))
    assert out["fve"] > 0.9  # threshold decoding of 2-sparse codes is nearly exact here
    counts = (np.abs(model.encode(problem.signals, training=True)) > 1e-3).sum(axis=1)
    assert out["mean_active"] == pytest.approx(counts.mean())


def test_evaluate_refuses_data_of_the_wrong_width():
    model = _arora_model(np.eye(5))
    with pytest.raises(ParameterError, match="features"):
        evaluate(model, np.zeros((3, 4)))


def test_trainer_logs_fve_and_coherence_every_epoch():
    problem = make_sparse_coding(n=512, dim=16, atoms=20, k=2, seed=6)
    method = make_method("plain")
    # A vanishing step: the parameters do not move, so the epoch's running FVE must equal
    # what evaluate() finds for the final model on the same data.
    config = resolve_config(
        method, hidden=12, epochs=2, batch_size=100, lr=1e-12, optimizer="sgd", dtype="float64"
    )
    trainer = Trainer(method, problem.signals, config)
    model = trainer.fit()
    for row in trainer.history:
        assert {"mse", "fve", "coherence", "mean_active", "dead_units"} <= set(row)
        assert 0 <= row["coherence"] <= 1
    final = evaluate(model, problem.signals)
    assert trainer.history[-1]["fve"] == pytest.approx(final["fve"], rel=1e-6, abs=1e-9)
    assert trainer.history[-1]["coherence"] == pytest.approx(final["coherence"])


# -- linear probe ---------------------------------------------------------------------------


def test_probe_features_standardise_with_training_statistics_only():
    train = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    test = np.array([[2.0, 6.0]])
    tr, te = probe_features(train, test)
    assert np.allclose(tr.mean(axis=0), 0) and np.allclose(tr[:, 0].std(), 1)
    assert np.allclose(tr[:, 1], 0)  # a constant feature is only centred
    assert np.allclose(te, [[0.0, 1.0]])
    raw_tr, _ = probe_features(train, test, standardize=False)
    assert np.array_equal(raw_tr, train)


def test_probe_on_mnist_pixels_beats_chance_by_far(data_dir):
    from sparsekit.data import load_mnist

    train = load_mnist(data_dir, split="train", subset=2000)
    test = load_mnist(data_dir, split="test", subset=1000)
    error = linear_probe(train.to_array(), train.labels, test.to_array(), test.labels, max_iter=200)
    assert error < 0.3  # chance is 0.9


def test_select_c_scores_the_grid_on_held_out_training_samples():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=300)
    centres = rng.normal(size=(3, 5)) * 3
    x = centres[labels] + rng.normal(size=(300, 5))
    best, scores = select_C(x, labels, [1.0, 0.01], validation=0.25, max_iter=200)
    assert sorted(scores) == [0.01, 1.0] and best in scores
    assert scores[best] == min(scores.values()) and scores[best] < 0.2
    with pytest.raises(ParameterError, match="validation"):
        select_C(x, labels, [1.0], validation=300)


def test_probe_checks_its_inputs():
    x = np.zeros((4, 3))
    with pytest.raises(ParameterError, match="length"):
        linear_probe(x, [0, 1, 0], x, [0, 1, 0, 1])
    with pytest.raises(ParameterError, match="two classes"):
        linear_probe(x, [1, 1, 1, 1], x, [1, 1, 1, 1])


def test_probe_without_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'sparsekit\[eval\]'"):
        linear_probe(np.eye(2), [0, 1], np.eye(2), [0, 1])


# -- sparsekit eval, end to end ----------------------------------------------------------------


# One BLAS thread: on a shared machine OpenBLAS's spinning threads slow small products 10×.
_cli = partial(run_cli, env={"OPENBLAS_NUM_THREADS": "1"})


def test_eval_command_end_to_end_on_a_tiny_run(data_dir, tmp_path):
    trained = _cli(
        "train", "ksparse", "--data", str(data_dir), "--subset", "600", "--epochs", "2",
        "--hidden", "40", "--k", "8", "--k-start", "16", "--out", str(tmp_path), "--no-download",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    result = run_cli(
        "eval", str(run_dir), "--subset", "1000", "--test-subset", "500", "--max-iter", "200",
        env={"OPENBLAS_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "probe error, codes" in result.stdout and "raw pixels" in result.stdout
    # Issue 27: which code each L0 is, which probe ran, and the phases as they ran.
    assert "L0, training code" in result.stdout and "L0, encoding code" in result.stdout
    assert "all 1000 training samples" in result.stdout
    for phase in ("loading", "encoding", "measures", "pixel probe", "code probe"):
        assert phase in result.stderr
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["n_train"] == 1000 and report["n_test"] == 500
    assert report["probe"]["code"] == "encoding" and report["probe"]["C"] == 0.01
    assert report["probe"]["codes_error"] < 0.6 and report["probe"]["raw_pixels_error"] < 0.3
    assert report["test"]["mean_active"] == pytest.approx(8.0)  # training-time support, k
    assert {"mse", "fve", "dead_units", "coherence"} <= set(report["test"])


def test_eval_command_errors_are_one_line(tmp_path):
    missing = _cli("eval", str(tmp_path / "nope"))
    assert missing.returncode != 0
    assert missing.stderr.strip().startswith("sparsekit: error:")
    assert len(missing.stderr.strip().splitlines()) == 1
