"""Centred training (``center``): the data's mean image is part of the model.

k-sparse centres by default; every other built-in does not (sigmoid outputs model pixels in
[0, 1]). The mean is subtracted before every step, stored in checkpoints, subtracted again by
``encode``/``eval`` and added back by ``decode``/``reconstruct``.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparsekit
from sparsekit.evaluation.measures import evaluate
from sparsekit.methods.registry import load_registry
from sparsekit.runs.restore import load_run, restore_trainer
from sparsekit.runs.writer import RunWriter
from sparsekit.training.model import Model
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer, make_method

SMALL = {"hidden": 36, "epochs": 2, "k": 10, "k_start": 10}


@pytest.mark.parametrize(
    ("method", "centred"),
    [("ksparse", True), ("plain", False), ("l2", False), ("kl", False), ("arora", False)],
)
def test_which_builtins_centre_by_default(method, centred):
    registry = load_registry()
    assert resolve_config(registry.create(method)).center is centred


def test_the_model_holds_the_training_mean_and_applies_it(mnist_2000):
    x = mnist_2000[:500]
    model = sparsekit.train("ksparse", x, **SMALL)
    expected = x.astype(np.float64).mean(axis=0).astype(np.float32)
    assert model.input_mean is not None and model.input_mean.dtype == np.float32
    np.testing.assert_array_equal(model.input_mean, expected)

    # The same weights without the mean, fed centred samples: the same codes, bit for bit.
    bare = Model(model.method, model.params, model.backend, image_shape=model.image_shape)
    centred = x - model.input_mean
    np.testing.assert_array_equal(model.encode(x), bare.encode(centred))
    np.testing.assert_array_equal(model.reconstruct(x), bare.reconstruct(centred) + expected)
    codes = model.encode(x)
    np.testing.assert_array_equal(model.decode(codes), bare.decode(codes) + expected)
    # Reconstructions are in the data's own space: close to the images, not to centred ones.
    recon = model.reconstruct(x)
    assert np.mean((recon - x) ** 2) < 0.8 * np.mean((recon - centred) ** 2)


def test_uncentred_training_changes_the_result(mnist_2000):
    x = mnist_2000[:500]
    centred = sparsekit.train("ksparse", x, **SMALL)
    raw = sparsekit.train("ksparse", x, center=False, **SMALL)
    assert raw.input_mean is None
    assert not np.array_equal(centred.encoder_weights, raw.encoder_weights)
    # Centring the data by hand and training without it gives the centred model's weights.
    by_hand = sparsekit.train("ksparse", x - centred.input_mean, center=False, **SMALL)
    np.testing.assert_array_equal(by_hand.encoder_weights, centred.encoder_weights)


def test_evaluate_measures_the_centred_model_on_raw_data(mnist_2000):
    x = mnist_2000[:500]
    model = sparsekit.train("ksparse", x, **SMALL)
    measured = evaluate(model, x)
    direct = np.mean((model.reconstruct(x) - x) ** 2)
    assert measured["mse"] == pytest.approx(direct, rel=1e-4)  # float32 sums


def test_the_mean_survives_a_checkpoint_and_resume_is_exact(mnist_2000, tmp_path):
    x = mnist_2000[:500]
    method = make_method("ksparse", k=10, k_start=10)
    config = resolve_config(method, hidden=36, epochs=3)
    full = Trainer(method, x, config, callbacks=[RunWriter(_mkdir(tmp_path / "full"))])
    full.fit()

    stopped = _mkdir(tmp_path / "stopped")
    first = Trainer(
        make_method("ksparse", k=10, k_start=10),
        x,
        resolve_config(method, hidden=36, epochs=1),
        callbacks=[RunWriter(stopped)],
    )
    first.fit()
    resumed = restore_trainer(stopped, x, epochs=3, callbacks=[RunWriter(stopped)])
    np.testing.assert_array_equal(resumed.backend.to_numpy(resumed.input_mean), full.input_mean)
    resumed.fit()
    for key, value in full.params.items():
        np.testing.assert_array_equal(resumed.params[key], value, err_msg=key)

    loaded = load_run(tmp_path / "full")
    np.testing.assert_array_equal(loaded.input_mean, full.input_mean)
    np.testing.assert_array_equal(loaded.encode(x), full.model.encode(x))


def test_a_centred_checkpoint_without_its_mean_is_refused(mnist_2000, tmp_path):
    from sparsekit.errors import CheckpointError

    x = mnist_2000[:300]
    method = make_method("ksparse", k=10, k_start=10)
    Trainer(
        method, x, resolve_config(method, hidden=36, epochs=1), callbacks=[RunWriter(tmp_path)]
    ).fit()
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as archive:
        members = {k: archive[k] for k in archive.files if k != "input/mean"}
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match="input/mean"):
        load_run(tmp_path)


def _mkdir(path):
    path.mkdir()
    return path
