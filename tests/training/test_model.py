"""A trained model (sparsekit/training/model.py): encode, decode and reconstruct against the
formulas, their shapes and batching, centred models, and the error for a wrong input width."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.backend import get_backend
from sparsekit.data.dataset import ArrayDataset
from sparsekit.errors import DataError
from sparsekit.methods.ksparse import KSparse
from sparsekit.methods.plain import Plain
from sparsekit.training.model import Model

BACKEND = get_backend(dtype="float64")
HIDDEN, DIM = 6, 4


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def make_params(tied: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    return Plain().init_params(np.random.default_rng(seed), DIM, HIDDEN, tied, np.zeros((1, DIM)))


def data(n: int = 7, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM))


def test_encode_decode_reconstruct_follow_the_sigmoid_autoencoder():
    p = make_params()
    p["b_enc"] = np.linspace(-1, 1, HIDDEN)
    p["b_dec"] = np.linspace(-0.5, 0.5, DIM)
    model = Model(Plain(), p, BACKEND)
    x = data()
    codes = model.encode(x)
    np.testing.assert_allclose(codes, sigmoid(x @ p["W_enc"].T + p["b_enc"]), rtol=1e-12)
    np.testing.assert_allclose(
        model.decode(codes), sigmoid(codes @ p["W_dec"] + p["b_dec"]), rtol=1e-12
    )
    np.testing.assert_allclose(model.reconstruct(x), model.decode(codes), rtol=1e-12)


def test_shapes_weights_and_description():
    model = Model(Plain(), make_params(), BACKEND)
    x = data(5)
    assert model.encode(x).shape == (5, HIDDEN)
    assert model.decode(np.zeros((3, HIDDEN))).shape == (3, DIM)
    assert model.reconstruct(x).shape == (5, DIM)
    assert (model.hidden, model.dim, model.tied) == (HIDDEN, DIM, False)
    assert model.encoder_weights.shape == model.decoder_weights.shape == (HIDDEN, DIM)
    assert set(model.numpy_params()) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    assert "hidden=6, dim=4, untied, numpy" in repr(model)


def test_a_tied_model_decodes_with_the_encoder_weights():
    p = make_params(tied=True)
    model = Model(Plain(), p, BACKEND)
    assert model.tied and "tied" in repr(model)
    assert np.array_equal(model.decoder_weights, p["W_enc"])
    h = np.random.default_rng(2).random((3, HIDDEN))
    np.testing.assert_allclose(model.decode(h), sigmoid(h @ p["W_enc"] + p["b_dec"]), rtol=1e-12)


def test_batches_do_not_change_the_result():
    model = Model(Plain(), make_params(), BACKEND)
    x = data(11)
    whole = model.encode(x)
    assert np.array_equal(model.encode(x, batch_size=3), whole)
    assert np.array_equal(model.decode(whole, batch_size=4), model.decode(whole))
    assert np.array_equal(model.reconstruct(x, batch_size=2), model.reconstruct(x))
    assert [b.shape[0] for b in model.batches(x, 4)] == [4, 4, 3]


def test_a_dataset_is_taken_as_well_as_an_array():
    model = Model(Plain(), make_params(), BACKEND)
    x = data()
    assert np.array_equal(model.encode(ArrayDataset(x, name="rows")), model.encode(x))


def test_a_centred_model_subtracts_the_mean_and_adds_it_back():
    p = make_params()
    mean = np.array([0.1, 0.2, 0.3, 0.4])
    centred = Model(Plain(), p, BACKEND, input_mean=mean)
    plain = Model(Plain(), p, BACKEND)
    x = data()
    np.testing.assert_allclose(centred.encode(x), plain.encode(x - mean), rtol=1e-12)
    codes = centred.encode(x)
    np.testing.assert_allclose(centred.decode(codes), plain.decode(codes) + mean, rtol=1e-12)
    np.testing.assert_allclose(centred.reconstruct(x), plain.reconstruct(x - mean) + mean)
    assert np.array_equal(x, data())  # the caller's array is not modified


def test_wrong_number_of_features_is_one_data_error():
    model = Model(Plain(), make_params(), BACKEND)
    with pytest.raises(DataError, match="input: samples have 5 features, the model expects 4"):
        model.encode(np.zeros((2, 5)))
    with pytest.raises(DataError, match="rows: samples have 3 features"):
        model.reconstruct(ArrayDataset(np.zeros((2, 3)), name="rows"))


def test_active_units_of_a_top_k_code():
    method = KSparse(k=2, alpha=1.5)
    method.validate(HIDDEN, DIM)
    model = Model(method, make_params(), BACKEND)
    x = data()
    assert model.active_units(x).tolist() == [2] * len(x)
    assert model.active_units(x, training=False).tolist() == [3] * len(x)  # alpha·k at encoding
    assert ((model.encode(x) != 0).sum(axis=1) == 3).all()
    # A dense code counts its nonzeros.
    dense = Model(Plain(), make_params(), BACKEND)
    assert dense.active_units(x).tolist() == [HIDDEN] * len(x)
