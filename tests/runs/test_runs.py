"""The library side of ``train``, ``eval``, ``encode`` and ``train --resume``:
:mod:`sparsekit.runs`.

A Python user does with a run directory what the commands do, preprocessing included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sparsekit
from sparsekit.data import load_dataset, preprocess
from sparsekit.errors import CheckpointError, DataError, ParameterError
from sparsekit.runs.writer import RunWriter, create_run_dir
from sparsekit.testing import mnist_data_dir
from sparsekit.training.settings import resolve_config

DATA_DIR = mnist_data_dir()
SPEC = {
    "spec": "mnist",
    "data": str(DATA_DIR),
    "split": "train",
    "subset": 300,
    "test_fraction": 0.1,
    "download": False,
    "remove_mean": True,
    "zca": False,
    "seed": 0,
}
SETTINGS = {"hidden": 16, "batch_size": 50, "seed": 0}


def _train_run(out: Path, epochs: int) -> Path:
    """A k-sparse run of ``epochs`` on 300 mean-removed MNIST images (``sparsekit train``)."""
    return sparsekit.train_run(
        "ksparse", "mnist", out=out, data=DATA_DIR, download=False, subset=300,
        remove_mean=True, epochs=epochs, snapshot_every=epochs, k=5, k_start=5, **SETTINGS,
    )  # fmt: skip


def _assembled_run(out: Path, epochs: int) -> Path:
    """The same run put together by hand from the parts ``train_run`` is made of."""
    train_set = preprocess(
        load_dataset("mnist", DATA_DIR, split="train", subset=300, download=False),
        remove_mean=True,
    )
    method = sparsekit.make_method("ksparse", k=5, k_start=5)
    config = resolve_config(method, epochs=epochs, **SETTINGS)
    run_dir = create_run_dir(out, method.name)
    sparsekit.save_preprocessing(run_dir, train_set)
    writer = RunWriter(run_dir, data_spec=SPEC, snapshot_every=epochs)
    sparsekit.Trainer(method, train_set, config, callbacks=[writer]).fit()
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(f"MNIST not found in {DATA_DIR}/mnist (set SPARSEKIT_TEST_DATA)")
    return _train_run(tmp_path_factory.mktemp("runs"), epochs=2)


def _test_images(n: int) -> np.ndarray:
    return load_dataset("mnist", DATA_DIR, split="test", subset=n).to_array(np.float32)


def test_train_run_writes_what_the_parts_write(run_dir, tmp_path):
    by_hand = _assembled_run(tmp_path, epochs=2)
    ours, theirs = (json.loads((d / "config.json").read_text()) for d in (run_dir, by_hand))
    assert ours.pop("data_spec") == {**theirs.pop("data_spec"), "data": str(DATA_DIR.resolve())}
    assert ours == theirs
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, by_hand))
    ours.pop("total_seconds"), theirs.pop("total_seconds")
    assert ours == theirs
    model, assembled = sparsekit.load_run(run_dir), sparsekit.load_run(by_hand)
    np.testing.assert_array_equal(model.encoder_weights, assembled.encoder_weights)
    stored = sparsekit.read_preprocessing(run_dir)
    assert stored is not None and stored["remove_mean"] is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"subset": 0}, "--subset must be a positive integer, got 0"),
        ({"snapshot_every": 0}, "--snapshot-every must be a positive"),
        ({"checkpoint_every": -1}, "--checkpoint-every must be a positive"),
        ({"hidden": 3}, "k"),  # k = 5 of 3 units: refused before any data is read
        ({"data": "/nonexistent/sparsekit-data"}, "mnist"),
    ],
)
def test_start_run_refuses_bad_settings_before_creating_a_run(settings, message, tmp_path):
    kwargs = {"out": tmp_path / "runs", "data": DATA_DIR, "download": False, "k": 5, **settings}
    with pytest.raises(sparsekit.SparsekitError, match=message):
        sparsekit.start_run("ksparse", "mnist", **kwargs)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_start_run_hands_back_a_trainer_with_the_writer_first(tmp_path):
    seen = []

    class Epochs(sparsekit.Callback):
        def on_epoch_end(self, trainer, metrics):
            seen.append((metrics["epoch"], (run_dir / "metrics.jsonl").exists()))

    trainer, run_dir = sparsekit.start_run(
        "ksparse", "mnist", out=tmp_path, data=DATA_DIR, download=False, subset=100,
        epochs=1, hidden=8, k=3, callbacks=[Epochs()],
    )  # fmt: skip
    assert run_dir.parent == tmp_path and run_dir.name.startswith("ksparse-")
    assert isinstance(trainer.callbacks[0], RunWriter) and trainer.epoch == 0
    trainer.fit()
    assert seen == [(1, True)]  # the run's files are written before the user's callback runs


def test_preprocessing_is_stored_and_read_back(run_dir, tmp_path):
    assert sparsekit.read_preprocessing(run_dir) == {"remove_mean": True, "zca": None}
    assert sparsekit.read_preprocessing(run_dir / "preprocessing.npz")["remove_mean"] is True
    assert sparsekit.read_preprocessing(tmp_path) is None  # a run without preprocessing
    (tmp_path / "preprocessing.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="unreadable preprocessing parameters"):
        sparsekit.read_preprocessing(tmp_path)


def test_encode_run_applies_the_runs_preprocessing(run_dir, tmp_path):
    images = _test_images(50)
    model = sparsekit.load_run(run_dir)
    by_hand = model.encode(images - images.mean(axis=1, keepdims=True))
    out = tmp_path / "sub" / "codes.npy"
    codes = sparsekit.encode_run(
        run_dir, "mnist", data_dir=DATA_DIR, split="test", subset=50, output=out
    )
    assert codes.shape == (50, 16)
    np.testing.assert_array_equal(codes, by_hand)
    np.testing.assert_array_equal(np.load(out, allow_pickle=False), codes)
    # An array goes through the same preprocessing; without it the codes would differ.
    np.testing.assert_array_equal(sparsekit.encode_run(run_dir, images), by_hand)
    assert not np.array_equal(model.encode(images), by_hand)


def test_encode_run_refuses_bad_input_with_one_line(run_dir, tmp_path):
    with pytest.raises(DataError, match="samples have 10 features, the model of .* expects 784"):
        sparsekit.encode_run(run_dir, np.zeros((3, 10), np.float32))
    with pytest.raises(ParameterError, match=r"\.npy"):
        sparsekit.encode_run(run_dir, _test_images(2), output=tmp_path / "codes.txt")
    with pytest.raises(CheckpointError, match="no such run directory"):
        sparsekit.encode_run(tmp_path / "none", _test_images(2))


def test_evaluate_run_measures_the_preprocessed_test_split(run_dir, tmp_path):
    from sparsekit.evaluation.measures import evaluate

    out = tmp_path / "eval.json"
    result = sparsekit.evaluate_run(
        run_dir, subset=300, test_subset=100, raw=False, max_iter=50, output=out
    )
    assert result["method"] == "ksparse" and result["n_train"] == 300
    assert result["n_test"] == 100
    assert result["probe"]["code"] == "encoding" and "raw_pixels_error" not in result["probe"]
    assert 0.0 <= result["probe"]["codes_error"] < 0.9
    assert json.loads(out.read_text()) == result
    # The same numbers as measuring the mean-removed test images by hand.
    model = sparsekit.load_run(run_dir)
    test = load_dataset("mnist", DATA_DIR, split="test", subset=100)
    expected = evaluate(model, preprocess(test, remove_mean=True))
    assert result["test"] == json.loads(json.dumps(expected))
    with pytest.raises(ParameterError, match="--C must be a finite number > 0"):
        sparsekit.evaluate_run(run_dir, C=0)


def test_resume_run_continues_bit_for_bit(run_dir, tmp_path):
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed_dir)
    model = sparsekit.resume_run(resumed_dir, epochs=3)
    metrics = (resumed_dir / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 3
    assert sparsekit.load_checkpoint(resumed_dir)["meta"]["epoch"] == 3
    straight = sparsekit.load_run(_assembled_run(tmp_path / "straight", epochs=3))
    np.testing.assert_array_equal(model.encoder_weights, straight.encoder_weights)
    # A run that has all its epochs comes back as it is, untrained.
    again = sparsekit.resume_run(resumed_dir)
    np.testing.assert_array_equal(again.encoder_weights, model.encoder_weights)
    assert len((resumed_dir / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ParameterError, match="fewer"):
        sparsekit.resume_trainer(resumed_dir, epochs=2)


def test_run_summary_is_what_show_prints(run_dir, tmp_path):
    info, meta = sparsekit.run_summary(run_dir)
    assert info["method"] == "ksparse" and info["method_params"]["k"] == 5
    assert info["epochs"] == 2 and meta["epoch"] == 2
    assert info["final"]["mse"] == pytest.approx(meta["history"][-1]["mse"])
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json is incomplete"):
        sparsekit.run_summary(tmp_path)


def test_evaluate_run_reports_its_phases_and_states_the_probe(run_dir, tmp_path, monkeypatch):
    # Issue 27: eval printed nothing for minutes, fitted on every training sample and did not
    # say which code its L0 was. Now: phases reported, a stated subsample, both L0s.
    from sparsekit.runs.api import EVAL_PHASES

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("sparsekit.runs.api.PROBE_SAMPLES", 200)
    phases: list[tuple[str, str]] = []
    result = sparsekit.evaluate_run(
        run_dir, test_subset=100, max_iter=50, progress=lambda p, d: phases.append((p, d))
    )
    assert [p for p, _ in phases] == list(EVAL_PHASES)
    probe = result["probe"]
    assert result["n_train"] == probe["train_samples"] == 200
    assert probe["train_samples_available"] == 60000  # the whole training split
    assert result["images"] is True
    assert result["test"]["mean_active"] == pytest.approx(5.0)  # training code: k
    assert result["encoding_mean_active"] == pytest.approx(15.0)  # encoding code: alpha*k
    # --full-probe: every training sample (16 units and no pixel probe keep this quick).
    full = sparsekit.evaluate_run(run_dir, test_subset=100, max_iter=20, raw=False, full_probe=True)
    assert full["n_train"] == full["probe"]["train_samples"] == 60000


def test_evaluate_run_caches_the_raw_pixel_probe(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kwargs = {"subset": 200, "test_subset": 100, "max_iter": 50}
    first = sparsekit.evaluate_run(run_dir, **kwargs)["probe"]
    second = sparsekit.evaluate_run(run_dir, **kwargs)["probe"]
    assert first["raw_pixels_cached"] is False and second["raw_pixels_cached"] is True
    assert second["raw_pixels_error"] == first["raw_pixels_error"]
    assert list((tmp_path / "cache").rglob("probe-cache/*.json"))  # the user cache, not the run
    other = sparsekit.evaluate_run(run_dir, **{**kwargs, "C": 0.1})["probe"]
    assert other["raw_pixels_cached"] is False  # other settings, another entry
    fresh = sparsekit.evaluate_run(run_dir, **kwargs, cache=False)["probe"]
    assert fresh["raw_pixels_cached"] is False
    assert fresh["raw_pixels_error"] == first["raw_pixels_error"]
