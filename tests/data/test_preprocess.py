"""Preprocessing wrappers: subsets, seeded splits, mean removal, ZCA (and its parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.data import (
    ZCA,
    ArrayDataset,
    Preprocessed,
    SubsetDataset,
    preprocess,
    subset,
    train_test_split,
)
from sparsekit.errors import DataError, ParameterError


@pytest.fixture
def data() -> ArrayDataset:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((6, 6)) + 3 * np.eye(6)
    x = rng.standard_normal((4000, 6)) @ mix + 5.0
    return ArrayDataset(x, name="toy", labels=np.arange(4000) % 3)


def test_subset(data: ArrayDataset) -> None:
    first = subset(data, 10)
    np.testing.assert_array_equal(first.to_array(np.float64), data.to_array(np.float64)[:10])
    np.testing.assert_array_equal(first.labels, data.labels[:10])
    rand = subset(data, 10, seed=1)
    assert isinstance(rand, SubsetDataset)
    assert np.all(np.diff(rand.indices) > 0)
    np.testing.assert_array_equal(rand.indices, subset(data, 10, seed=1).indices)
    assert subset(data, len(data)) is data
    assert rand.describe()["subset_of"]["name"] == "toy"
    with pytest.raises(ParameterError):
        subset(data, 0)
    with pytest.raises(ParameterError, match="larger than"):
        subset(data, 4001)


def test_train_test_split(data: ArrayDataset) -> None:
    train, test = train_test_split(data, 0.25, seed=7)
    assert (len(train), len(test)) == (3000, 1000)
    assert set(train.indices).isdisjoint(test.indices)
    assert len(set(train.indices) | set(test.indices)) == 4000
    train2, _ = train_test_split(data, 0.25, seed=7)
    np.testing.assert_array_equal(train.indices, train2.indices)
    train3, _ = train_test_split(data, 0.25, seed=8)
    assert not np.array_equal(train.indices, train3.indices)
    np.testing.assert_array_equal(test.take(np.array([0])), data.take(test.indices[:1]))
    assert train.name == "toy-train"
    with pytest.raises(ParameterError):
        train_test_split(data, 1.0)


def test_mean_removal(data: ArrayDataset) -> None:
    ds = Preprocessed(data, remove_mean=True)
    rows = ds.take(np.arange(100), np.float64)
    np.testing.assert_allclose(rows.mean(axis=1), 0.0, atol=1e-12)
    assert ds.take(np.arange(3)).dtype == np.float32
    assert ds.labels is data.labels


def test_zca_whitens_and_roundtrips(data: ArrayDataset) -> None:
    zca = ZCA.fit(data, epsilon=1e-6, n_samples=4000)
    white = Preprocessed(data, zca=zca).to_array(np.float64)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(zca.matrix, zca.matrix.T)  # ZCA, not just any whitening
    params = zca.to_dict()
    assert set(params) == {"mean", "matrix", "epsilon"}
    assert isinstance(params["mean"], np.ndarray) and isinstance(params["matrix"], np.ndarray)
    again = Preprocessed.from_dict(data, Preprocessed(data, zca=zca).to_dict())
    np.testing.assert_allclose(again.take(np.arange(50), np.float64), white[:50])
    f32 = Preprocessed(data, zca=zca).take(np.arange(50))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, white[:50], atol=1e-3)


def test_zca_on_a_sample_with_mean_removal(data: ArrayDataset) -> None:
    ds = preprocess(data, subset_n=3000, remove_mean=True, zca=True, zca_samples=500, seed=2)
    assert isinstance(ds, Preprocessed) and len(ds) == 3000
    assert ds.zca is not None and ds.remove_mean
    desc = ds.describe()
    assert desc["preprocessing"] == {"remove_mean": True, "zca": {"epsilon": 1e-2}}
    assert preprocess(data) is data


def test_zca_bad_parameters(data: ArrayDataset) -> None:
    with pytest.raises(DataError, match="do not fit"):
        ZCA.from_dict({"mean": np.zeros(3), "matrix": np.eye(4), "epsilon": 0.1})
    with pytest.raises(DataError, match="invalid ZCA"):
        ZCA.from_dict({"mean": np.zeros(3)})
    with pytest.raises(DataError, match="features"):
        Preprocessed(data, zca=ZCA(np.zeros(3), np.eye(3), 0.1))
    with pytest.raises(ParameterError):
        ZCA.fit(data, epsilon=0.0)
