"""Runs on a shard folder: every method, exact resume after kill -9, the manifest, eval on
the held-out segments, a folder changed under a run, partial_fit from a source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from shard_folders import npy_folder

import sparsekit
from sparsekit.data import load_dataset
from sparsekit.errors import DataError, ParameterError
from sparsekit.layout import MANIFEST
from sparsekit.training.checkpoint import load_checkpoint

SETTINGS = dict(hidden=16, k=4, epochs=3, batch_size=64, seed=2, stream_memory=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "acts"
    npy_folder(path, sizes=(300, 250, 310, 140), dim=12)
    return path


@pytest.fixture(scope="module")
def finished(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stream-runs")
    return sparsekit.train_run("topk", str(folder), out=out, **SETTINGS)


@pytest.mark.parametrize("name", [info.name for info in sparsekit.load_registry()])
def test_every_registered_method_trains_from_a_shard_folder(folder, name):
    ds = load_dataset(str(folder), split="train")
    model = sparsekit.train(name, ds, hidden=64, epochs=1, batch_size=128, seed=0)
    assert model.dim == 12


def test_the_run_states_what_it_read(finished, folder):
    manifest = json.loads((finished / MANIFEST).read_text())
    assert manifest["folder"] == str(folder.resolve()) and manifest["rows"] == 1000
    assert [s["rows"] for s in manifest["shards"]] == [300, 250, 310, 140]
    config = json.loads((finished / "config.json").read_text())
    assert config["data"]["stats_rows"] == 100_000 and config["data"]["split"] == "train"
    assert config["data_spec"]["stream_memory"] == 1


def test_eval_reads_the_held_out_segments(finished):
    result = sparsekit.evaluate_run(finished)
    assert 0 < result["n_test"] == result["test"]["n"] < 1000
    assert result["n_test"] + result["n_train"] == 1000


def test_kill_9_inside_an_epoch_then_resume_is_bit_for_bit(finished, folder, tmp_path):
    """A process that SIGKILLs itself at step 5 of the second epoch, then resume_run."""
    script = textwrap.dedent(f"""
        import os, signal, sparsekit
        from sparsekit.training.trainer import Callback
        class Kill(Callback):
            def on_step_end(self, trainer, step, steps):
                if trainer.epoch == 1 and step == 5:
                    os.kill(os.getpid(), signal.SIGKILL)
        trainer, run = sparsekit.start_run("topk", {str(folder)!r}, out={str(tmp_path)!r},
                                           callbacks=[Kill()], **{SETTINGS!r})
        trainer.fit()
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ))
    assert proc.returncode == -9
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert load_checkpoint(run)["meta"]["epoch"] == 1
    sparsekit.resume_run(run)
    got, want = load_checkpoint(run)["state"], load_checkpoint(finished)["state"]
    assert got["epoch"] == want["epoch"] == 3
    for name, value in want["params"].items():
        np.testing.assert_array_equal(got["params"][name], value, err_msg=name)


def test_a_folder_changed_under_a_run_is_refused_on_resume(tmp_path):
    path = tmp_path / "acts"
    rows = npy_folder(path)
    run = sparsekit.train_run("topk", str(path), out=tmp_path / "runs", **{**SETTINGS, "epochs": 1})
    np.save(path / "shard_001.npy", rows[300:550] * 2)
    with pytest.raises(DataError, match=r"shard shard_001.npy changed since the run started"):
        sparsekit.resume_run(run, epochs=2)


def test_whole_array_preprocessing_is_refused_for_a_stream(folder, tmp_path):
    with pytest.raises(ParameterError, match="--remove-mean and --zca need the data in memory"):
        sparsekit.train_run("topk", str(folder), out=tmp_path, zca=True, **SETTINGS)
    assert not any(tmp_path.iterdir())


def test_partial_fit_on_chunks_read_from_a_source(folder):
    from sparsekit.interop.sklearn import SparseCoding

    ds = load_dataset(str(folder), split="train")
    est = SparseCoding("topk", hidden=16, batch_size=64, k=4)
    for j in range(len(ds.segments)):
        est.partial_fit(ds.convert(ds.read_segment(j), np.float32))
    assert est.transform(ds.take(np.arange(10))).shape == (10, 16)


def test_compare_streams_the_folder_in_each_job(folder, tmp_path):
    from sparsekit.studies.compare import compare

    result = compare(
        ["topk"], out=tmp_path, jobs=1, report=False,
        dataset=str(folder), hidden=16, epochs=1, batch_size=64, stream_memory=2,
        params=["topk.k=4"],
    )  # fmt: skip
    assert not result.failed, result.failed
    for r in result.results:
        manifest = json.loads((Path(r.run_dir) / MANIFEST).read_text())
        assert manifest["rows"] == 1000
        config = json.loads((Path(r.run_dir) / "config.json").read_text())
        assert config["data"]["window_segments"] >= 1 and config["data_spec"]["stream_memory"] == 2


def test_a_norm_scaled_run_scales_what_it_encodes_and_evaluates(folder, tmp_path):
    run = sparsekit.train_run(
        "topk", str(folder), out=tmp_path, norm_scale=True, **{**SETTINGS, "epochs": 1}
    )
    scale = json.loads((run / "config.json").read_text())["data"]["scale"]
    assert scale != 1.0
    rows = load_dataset(str(folder)).take(np.arange(40))
    model = sparsekit.load_run(run)
    from_folder = sparsekit.encode_run(run, str(folder), subset=40)
    np.testing.assert_array_equal(from_folder, model.encode(rows * np.float32(scale)))
    np.testing.assert_array_equal(sparsekit.encode_run(run, rows), from_folder)
    assert sparsekit.evaluate_run(run)["test"]["fve"] > 0
