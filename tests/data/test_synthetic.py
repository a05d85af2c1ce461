"""Synthetic sparse-coding data and dictionary matching."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.data import (
    make_sparse_coding,
    match_dictionaries,
    mutual_coherence,
    recovery_distance,
    recovery_summary,
)
from sparsekit.errors import ParameterError


def test_problem_shapes_and_sparsity() -> None:
    p = make_sparse_coding(n=500, dim=16, atoms=24, k=3, seed=4)
    assert p.dictionary.shape == (16, 24)
    np.testing.assert_allclose(np.linalg.norm(p.dictionary, axis=0), 1.0)
    assert p.codes.shape == (500, 24)
    assert np.all((p.codes != 0).sum(axis=1) == 3)
    assert set(np.unique(p.codes[p.codes != 0])) == {-1.0, 1.0}
    np.testing.assert_allclose(p.signals, p.codes @ p.dictionary.T)
    ds = p.dataset
    assert (len(ds), ds.dim) == (500, 16)
    np.testing.assert_array_equal(ds.take(np.arange(500), np.float64), p.signals)
    assert ds.take(np.arange(3)).dtype == np.float32
    assert ds.describe()["source"]["k"] == 3
    assert 0.0 < p.coherence < 1.0
    assert p.coherence == pytest.approx(mutual_coherence(p.dictionary))


def test_seeded_and_noise() -> None:
    a = make_sparse_coding(n=50, dim=8, atoms=10, k=2, seed=1)
    b = make_sparse_coding(n=50, dim=8, atoms=10, k=2, seed=1)
    np.testing.assert_array_equal(a.signals, b.signals)
    noisy = make_sparse_coding(n=50, dim=8, atoms=10, k=2, seed=1, noise=0.1, values="gaussian")
    np.testing.assert_array_equal(noisy.dictionary, a.dictionary)
    resid = noisy.signals - noisy.codes @ noisy.dictionary.T
    assert 0.05 < resid.std() < 0.2
    pos = make_sparse_coding(n=50, dim=8, atoms=10, k=2, values="positive")
    assert pos.codes.min() == 0.0 and pos.codes.max() <= 1.5
    test = a.sample(30, seed=9)
    np.testing.assert_array_equal(test.dictionary, a.dictionary)
    assert test.signals.shape == (30, 8)


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 11, "atoms": 10}, {"dim": 0}, {"noise": -1.0}, {"values": "binary"}, {"n": 2.5}],
)
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ParameterError):
        make_sparse_coding(**kwargs)


def test_matching_a_permuted_sign_flipped_copy_is_exact() -> None:
    p = make_sparse_coding(n=10, dim=32, atoms=50, k=3, seed=2)
    rng = np.random.default_rng(0)
    perm = rng.permutation(50)
    signs = rng.choice([-1.0, 1.0], size=50)
    est = p.dictionary[:, perm] * signs
    found, found_signs, dist = match_dictionaries(p.dictionary, est)
    np.testing.assert_allclose(dist, 0.0, atol=1e-12)
    np.testing.assert_array_equal(est[:, found] * found_signs, p.dictionary)
    np.testing.assert_array_equal(perm[found], np.arange(50))
    assert recovery_distance(p.dictionary, est) == pytest.approx(0.0, abs=1e-12)
    # scaled atoms match too (distances use unit-normalised estimates by default)
    assert recovery_distance(p.dictionary, 3.0 * est) == pytest.approx(0.0, abs=1e-12)
    assert recovery_distance(p.dictionary, 3.0 * est, normalize=False) == pytest.approx(2.0)


def test_distance_values_and_extra_atoms() -> None:
    a = np.eye(4)
    est = np.concatenate([np.eye(4)[:, ::-1], np.ones((4, 2)) / 2], axis=1)
    est[:, 0] = [1, 0, 0, 1] / np.sqrt(2)  # atom 3 is now only partly recovered
    perm, _, dist = match_dictionaries(a, est)
    assert perm.tolist()[:3] == [3, 2, 1]
    assert recovery_distance(a, est, reduce="mean") == pytest.approx(dist.mean())
    summary = recovery_summary(a, est, threshold=0.1)
    assert summary["max"] == pytest.approx(dist.max()) and 0 < summary["recovered"] < 1
    with pytest.raises(ParameterError, match="fewer"):
        match_dictionaries(a, a[:, :3])
    with pytest.raises(ParameterError, match="dimensions"):
        match_dictionaries(a, np.eye(5))
    with pytest.raises(ParameterError, match="reduce"):
        recovery_distance(a, a, reduce="median")
