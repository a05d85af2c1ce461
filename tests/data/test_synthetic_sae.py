"""The synthetic-sae world: Zipf firing, hierarchy, correlation, determinism, ground truth."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from sparsekit.backend import get_backend
from sparsekit.data import ground_truth, load_dataset, make_synthetic_sae
from sparsekit.data.synthetic_sae import SyntheticSAEParams, parse_spec, zipf_probabilities
from sparsekit.errors import ParameterError
from sparsekit.evaluation.measures import evaluate, mcc
from sparsekit.methods.ksparse import KSparse
from sparsekit.training.model import Model

SMALL = "synthetic-sae:features=512,dim=64,n=5000,roots=8,branching=4,depth=2"


def _binomial_ok(freq: np.ndarray, p: np.ndarray, n: int, sigmas: float = 5.0) -> np.ndarray:
    """|freq − p| within ``sigmas`` binomial standard deviations (plus one count)."""
    return np.abs(freq - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1.0 / n


def test_zipf_probabilities_run_from_p_max_to_p_min_as_a_power_law():
    p = zipf_probabilities(1000, 0.5, 0.4, 5e-4)
    assert p[0] == pytest.approx(0.4) and p[-1] == pytest.approx(5e-4)
    assert np.all(np.diff(p) < 0)
    # p_i − p_min is proportional to i^(−a) − N^(−a): the exponent on a log-log scale
    ranks = np.arange(1, 1001)
    shifted = (p - 5e-4) * (1 - 1000**-0.5) / (0.4 - 5e-4) + 1000**-0.5
    assert np.allclose(np.log(shifted), -0.5 * np.log(ranks))


def test_firing_frequencies_follow_the_zipf_law_with_correlated_firing():
    # no trees: every feature is sampled with its own Zipf rate; the copula keeps marginals
    world = make_synthetic_sae(features=1024, dim=32, roots=0, corr_rank=25, corr_scale=0.1)
    n = 30_000
    _, codes = world.sample(n, 1, return_codes=True)
    freq = (codes > 0).mean(axis=0)
    p = world.probabilities
    assert np.all(world.sample_probabilities == p)
    ok = _binomial_ok(freq, p, n)
    assert ok.mean() > 0.995, np.flatnonzero(~ok)
    # the fitted log-log slope of the frequent features' excess rate is the exponent
    top = np.arange(1, 201)
    excess = (freq[:200] - 5e-4) * (1 - 1024**-0.5) / (0.4 - 5e-4) + 1024**-0.5
    slope = np.polyfit(np.log(top), np.log(excess), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.03)


def test_correlation_factor_makes_features_co_fire_and_rank_zero_does_not():
    def co_firing(rank: int, scale: float) -> float:
        world = make_synthetic_sae(
            features=64, dim=8, roots=0, p_max=0.3, p_min=0.3, corr_rank=rank,
            corr_scale=scale, seed=4,
        )  # fmt: skip
        _, codes = world.sample(20_000, 1, return_codes=True)
        fire = (codes > 0).astype(np.float64)
        corr = np.corrcoef(fire.T)
        loadings = world.corr_factor @ world.corr_factor.T if rank else np.zeros((64, 64))
        off = ~np.eye(64, dtype=bool)
        # the firing correlations follow the sign of the latent correlations
        return (
            float(np.corrcoef(corr[off], loadings[off])[0, 1])
            if rank
            else float(np.abs(corr[off]).mean())
        )

    assert co_firing(1, 0.3) > 0.8
    assert co_firing(0, 0.0) < 0.02


def test_children_fire_only_with_their_parent_and_exclusive_siblings_never_together():
    # zipf=1: children are rare next to their parents, so compensation is feasible (with the
    # default 0.5 most exclusive siblings would need rates above 1 and are clamped)
    world = make_synthetic_sae(
        features=512, dim=16, roots=8, branching=4, depth=2, zipf=1.0, seed=2
    )
    _, codes = world.sample(20_000, 1, return_codes=True)
    fire = codes > 0
    children = np.flatnonzero(world.parent >= 0)
    assert len(children) == 8 * 4 + 8 * 16
    parent_on = fire[:, world.parent[children]]
    assert not np.any(fire[:, children] & ~parent_on)
    siblings = fire[:, 8 : 8 + 32 + 128].reshape(len(fire), -1, 4)
    assert siblings.sum(axis=2).max() == 1
    # compensated sampling keeps each unclamped child's marginal near its Zipf rate
    p = world.probabilities
    free = children[(world.sample_probabilities[children] < 0.95) & (p[children] > 0.01)]
    assert len(free) > 20
    freq = fire.mean(axis=0)
    assert np.median(np.abs(freq[free] - p[free]) / p[free]) < 0.1
    # exclusive children are sampled above p_child / p_parent to make up for the siblings
    assert np.all(world.sample_probabilities[free] > p[free] / p[world.parent[free]])


def test_without_exclusion_several_siblings_fire_together():
    world = make_synthetic_sae(
        features=512, dim=16, roots=8, branching=4, depth=2, exclusive=0.0, seed=2
    )
    _, codes = world.sample(5_000, 1, return_codes=True)
    siblings = (codes[:, 8 : 8 + 32] > 0).reshape(len(codes), -1, 4)
    assert siblings.sum(axis=2).max() >= 2


def test_signals_are_the_codes_times_the_true_features_plus_the_bias():
    world = make_synthetic_sae(features=256, dim=32, roots=4, depth=2)
    x, codes = world.sample(3000, 1, return_codes=True)
    assert x.dtype == np.float32 and x.shape == (3000, 32)
    assert np.allclose(x, codes @ world.feature_vectors + world.bias, atol=1e-4)
    assert np.allclose(np.linalg.norm(world.feature_vectors, axis=1), 1.0, atol=1e-6)
    assert np.linalg.norm(world.bias) == pytest.approx(0.5, rel=1e-5)
    on = codes[codes > 0]
    assert on.min() > 0 and 3.0 < on.mean() < 6.0  # magnitudes around mu (5 → 4)


def test_the_default_world_is_cpu_sized_with_the_documented_true_l0():
    params = SyntheticSAEParams()
    assert (params.features, params.dim, params.tree_size) == (4096, 256, 2720)
    world = make_synthetic_sae()
    assert world.true_l0(n=6000) == pytest.approx(16.2, abs=0.6)


def test_same_seed_same_bytes_other_seed_other_world_and_prefixes_agree():
    a = load_dataset(SMALL, subset=2500).to_array()
    b = load_dataset(SMALL).to_array()
    assert np.array_equal(a, b[:2500])  # a subset is the first rows, bit for bit
    assert np.array_equal(b, load_dataset(SMALL).to_array())
    other = load_dataset(SMALL + ",seed=1").to_array()
    assert not np.allclose(other, b)
    test = load_dataset(SMALL, split="test")
    assert len(test) == 500 and test.name == "synthetic-sae-test"
    assert not np.allclose(test.to_array(), b[:500])  # an independent stream
    truth = ground_truth(SMALL)
    assert np.array_equal(truth, load_dataset(SMALL).ground_truth)
    assert not np.array_equal(truth, ground_truth(SMALL + ",seed=1"))


def test_specs_are_parsed_and_bad_ones_rejected_in_one_line():
    p = parse_spec("synthetic-sae:features=100,dim=10,zipf=0.7,roots=0,seed=9")
    assert (p.features, p.dim, p.zipf, p.roots, p.seed) == (100, 10, 0.7, 0, 9)
    for spec, match in [
        ("synthetic-sae:featurez=3", "featurez"),
        ("synthetic-sae:dim=x", "bad value"),
        ("synthetic-sae:features=100", "need 2720 features"),
        ("synthetic-sae:p_min=0.5,p_max=0.1", "p_min"),
        ("synthetic-sae:exclusive=2", "exclusive"),
        ("synthetic-sae:zipf=0", "zipf"),
    ]:
        with pytest.raises(ParameterError, match=match):
            load_dataset(spec)
    with pytest.raises(ParameterError, match="corr_scale"):
        make_synthetic_sae(features=64, dim=8, roots=0, corr_rank=25, corr_scale=0.5)
    with pytest.raises(ParameterError, match="subset"):
        load_dataset(SMALL, subset=6000)
    assert ground_truth("mnist") is None
    assert ground_truth("synthetic:dim=8,atoms=10,k=2").shape == (8, 10)


# -- measures against the ground truth ---------------------------------------------------------


def test_mcc_is_one_for_the_true_dictionary_in_any_order_sign_and_scale():
    rng = np.random.default_rng(0)
    truth = make_synthetic_sae(features=256, dim=32, roots=4, depth=2).feature_vectors
    perm = rng.permutation(256)
    scaled = truth[perm] * rng.choice([-3.0, 0.5], size=(256, 1))
    assert mcc(truth, scaled) == pytest.approx(1.0)
    assert mcc(truth, scaled[:64]) == pytest.approx(1.0)  # fewer latents than features
    wider = np.vstack([scaled, rng.standard_normal((100, 32))])
    assert mcc(truth, wider) == pytest.approx(1.0)  # more latents than features


def test_mcc_of_a_random_dictionary_is_low_and_a_half_true_one_in_between():
    rng = np.random.default_rng(1)
    truth = make_synthetic_sae().feature_vectors
    random = rng.standard_normal((1024, 256))
    low = mcc(truth, random)
    assert 0.18 < low < 0.3  # chance level of 4,096 features in 256 dimensions (≈ 0.235)
    half = np.vstack([truth[:512], random[:512]])
    assert mcc(truth, half) == pytest.approx((512 + 512 * low) / 1024, abs=0.03)
    with pytest.raises(ParameterError, match="same dim"):
        mcc(truth, random[:, :10])


def _ksparse_model(decoder: np.ndarray, bias: np.ndarray, k: int) -> Model:
    h, d = decoder.shape
    params = {
        "W_enc": decoder.astype(np.float32),
        "b_enc": np.zeros(h, np.float32),
        "W_dec": decoder.astype(np.float32),
        "b_dec": bias.astype(np.float32),
    }
    return Model(KSparse(k=k), params, get_backend(False, "float32"))


def test_evaluate_reports_mcc_dense_units_and_shrinkage_on_synthetic_sae():
    ds = load_dataset(SMALL, subset=2000)
    world = make_synthetic_sae(**{"features": 512, "dim": 64, "n": 5000, "roots": 8, "depth": 2})
    true_model = _ksparse_model(world.feature_vectors, world.bias, k=16)
    out = evaluate(true_model, ds)  # the truth comes with the data set
    assert out["mcc"] == pytest.approx(1.0)
    assert "recovery_max" in out and out["recovery_max"] == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(3)
    random_model = _ksparse_model(rng.standard_normal((128, 64)), world.bias, k=16)
    out = evaluate(random_model, ds)
    assert out["mcc"] < 0.5 and "recovery_max" not in out  # 128 units < 512 true features
    # shrinkage is the mean ‖x̂‖/‖x‖; dense units fire on more than 10% of the samples
    x = ds.to_array()
    xhat = random_model.reconstruct(x)
    ratio = np.linalg.norm(xhat, axis=1) / np.linalg.norm(x, axis=1)
    assert out["shrinkage"] == pytest.approx(ratio.mean(), rel=1e-4)
    codes = random_model.encode(x, training=True)
    assert out["dense_units"] == int(((np.abs(codes) > 1e-3).mean(axis=0) > 0.1).sum())
    assert out["dense_units"] > 0
    assert "mcc" not in evaluate(random_model, x)  # a bare array has no ground truth


def test_eval_command_reports_mcc_for_a_synthetic_sae_run(tmp_path):
    cli = partial(run_cli, env={"OPENBLAS_NUM_THREADS": "1"})
    trained = cli(
        "train", "ksparse", "--dataset", SMALL, "--epochs", "2", "--hidden", "128", "--k", "8",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    result = cli("eval", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "MCC" in result.stdout and "no linear probe" in result.stdout
    report = json.loads((run_dir / "eval.json").read_text())["test"]
    assert report["n"] == 500
    assert 0.2 < report["mcc"] <= 1.0
    assert {"dense_units", "shrinkage", "mean_active", "fve", "dead_units"} <= set(report)
