"""``mpiexec -n 2 sparsekit train METHOD --distributed --shard-latents``: each rank holds H/N
latents, rank 0 writes one ordinary run directory holding the model one process trains
(float64, relative 1e-10), which ``sparsekit eval`` reads; ``--resume --distributed``
continues it sharded, bit for bit with the same number of ranks. What it does not compute
is refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sparsekit
from sparsekit.cli.main import app, main
from sparsekit.errors import ParameterError
from sparsekit.parallel import LocalCommunicator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_data_parallel import (  # noqa: E402
    assert_same_weights,
    environment,
    mpirun,
    needs_mpi,
    run_weights,
    train_command,
)

ARGS = ["--hidden", "15", "--k", "3", "--aux-coef", "0", "--batch-size", "50", "--dtype",
        "float64", "--no-download", "--snapshot-every", "100"]  # fmt: skip
PARAMETER_EXIT = ParameterError.exit_code


def train_cli(tmp_path: Path, out: str, *extra: str) -> Path:
    return train_command(tmp_path, out, "topk", "--distributed", "--shard-latents", *ARGS, *extra)


@needs_mpi
def test_sharded_training_writes_the_one_process_run_and_resumes_it(tmp_path):
    np.save(tmp_path / "data.npy", np.random.default_rng(5).uniform(size=(330, 16)))
    run = train_cli(tmp_path, "two", "--epochs", "2")
    single = sparsekit.train_run(
        "topk", str(tmp_path / "data.npy"), out=tmp_path / "one", epochs=2, hidden=15, k=3,
        aux_coef=0.0, batch_size=50, dtype="float64", download=False, snapshot_every=100,
    )  # fmt: skip
    got, want = run_weights(run), run_weights(single)
    assert got["W_enc"].shape == (15, 16)  # the whole model: shards of 8 and 7, gathered
    assert_same_weights(got, want)
    config = json.loads((run / "config.json").read_text())
    assert config["shard_latents"] is True and config["ranks"] == 2
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    ones = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    for m, o in zip(metrics, ones, strict=True):
        for key in ("loss", "mse", "mean_active", "dead_units", "fve", "coherence"):
            assert m[key] == pytest.approx(o[key], rel=1e-9), key

    # An ordinary run: sparsekit eval reads it.
    result = CliRunner().invoke(app, ["eval", str(run), "--no-raw"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "eval.json").read_text())["method"] == "topk"

    # --resume with the same N continues it sharded: bit for bit the uninterrupted run.
    done = mpirun(2, "-m", "sparsekit.cli.main", "train", "--resume", str(run), "--epochs", "3",
                  "--distributed")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    straight = train_cli(tmp_path, "straight", "--epochs", "3")
    resumed, uninterrupted = run_weights(run), run_weights(straight)
    for key in uninterrupted:
        assert np.array_equal(resumed[key], uninterrupted[key]), key
    assert json.loads((run / "config.json").read_text())["shard_latents"] is True


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("sparsekit: error:")]


def test_shard_latents_without_distributed_is_refused_with_one_line(tmp_path, capsys):
    np.save(tmp_path / "data.npy", np.zeros((20, 4)))
    with pytest.raises(SystemExit) as stop:
        main(["train", "topk", "--shard-latents", "--dataset", str(tmp_path / "data.npy"),
              "--out", str(tmp_path / "runs")])  # fmt: skip
    assert stop.value.code == PARAMETER_EXIT
    assert capsys.readouterr().err.splitlines() == [
        "sparsekit: error: --shard-latents shards the latents over the ranks of --distributed: "
        "add it"
    ]
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ParameterError, match="add it"):
        sparsekit.train_run("topk", str(tmp_path / "data.npy"), shard_latents=True)


@pytest.mark.parametrize(
    ("method", "params", "says"),
    [
        ("kl", {}, "kl cannot train with its latents sharded: only ksparse, topk can"),
        ("topk", {"k": 2}, "topk with sharded latents needs --aux-coef 0 and no resampling"),
    ],
)
def test_train_run_refuses_what_sharding_does_not_compute(method, params, says, tmp_path):
    np.save(tmp_path / "data.npy", np.zeros((20, 4)))
    with pytest.raises(ParameterError, match=says):
        sparsekit.train_run(
            method, str(tmp_path / "data.npy"), out=tmp_path / "runs", hidden=4,
            distributed=LocalCommunicator(), shard_latents=True, **params,
        )  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_ksparse_trains_sharded_into_a_run(tmp_path):
    np.save(tmp_path / "data.npy", np.random.default_rng(1).uniform(size=(60, 8)))
    settings = dict(out=tmp_path / "runs", epochs=1, hidden=6, k=2, k_start=2, batch_size=20,
                    dtype="float64", download=False, snapshot_every=100)  # fmt: skip
    run = sparsekit.train_run(
        "ksparse", str(tmp_path / "data.npy"), distributed=LocalCommunicator(),
        shard_latents=True, **settings,
    )  # fmt: skip
    single = sparsekit.train_run("ksparse", str(tmp_path / "data.npy"), **settings)
    got, want = run_weights(run), run_weights(single)
    assert_same_weights(got, want)  # (tied: the two gradients of W summed in another order)


@needs_mpi
def test_the_command_refuses_a_method_sharding_does_not_compute_with_one_line(tmp_path):
    np.save(tmp_path / "data.npy", np.zeros((20, 4)))
    done = subprocess.run(
        [sys.executable, "-m", "sparsekit.cli.main", "train", "kl", "--distributed",
         "--shard-latents", "--dataset", str(tmp_path / "data.npy"), "--out",
         str(tmp_path / "runs")],
        capture_output=True, text=True, env=environment(), timeout=120,
    )  # fmt: skip
    assert done.returncode == PARAMETER_EXIT, done.stderr[-2000:]
    assert error_lines(done) == [
        "sparsekit: error: kl cannot train with its latents sharded: only ksparse, topk can"
    ]
    assert not (tmp_path / "runs").exists()
