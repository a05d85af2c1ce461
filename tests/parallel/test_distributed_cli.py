"""``mpiexec -n 2 sparsekit train METHOD --distributed``: one run directory, written by rank 0,
holding the model one process trains; ``--resume --distributed`` continues it bit for bit
with the same number of ranks, and to float rounding (saying so) with another."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import sparsekit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_data_parallel import (  # noqa: E402
    assert_same_weights,
    mpirun,
    needs_mpi,
    run_weights,
    train_command,
)

ARGS = ["--hidden", "12", "--k", "4", "--k-start", "4", "--batch-size", "50", "--dtype",
        "float64", "--no-download", "--snapshot-every", "100"]  # fmt: skip


def train_cli(tmp_path: Path, out: str, *extra: str) -> Path:
    return train_command(tmp_path, out, "ksparse", "--distributed", "--check-replicas", *ARGS, *extra)


@needs_mpi
def test_the_command_trains_the_one_process_model_and_resumes_it(tmp_path):
    np.save(tmp_path / "data.npy", np.random.default_rng(3).uniform(size=(330, 16)))
    run = train_cli(tmp_path, "two", "--epochs", "2")
    single = sparsekit.train_run(
        "ksparse", str(tmp_path / "data.npy"), out=tmp_path / "one", epochs=2, hidden=12, k=4,
        k_start=4, batch_size=50, dtype="float64", download=False, snapshot_every=100,
    )  # fmt: skip
    got, want = run_weights(run), run_weights(single)
    assert_same_weights(got, want)

    # --resume with the same N: bit for bit the uninterrupted run.
    elsewhere = tmp_path / "copy"
    shutil.copytree(run, elsewhere)
    done = mpirun(2, "-m", "sparsekit.cli.main", "train", "--resume", str(run), "--epochs", "3",
                  "--distributed")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    straight = train_cli(tmp_path, "straight", "--epochs", "3")
    resumed, uninterrupted = run_weights(run), run_weights(straight)
    for key in uninterrupted:
        assert np.array_equal(resumed[key], uninterrupted[key]), key

    # With another N (here one process): it continues, says so, and is the same model.
    with pytest.warns(UserWarning, match="trained on 2 ranks, continued on 1: the same model"):
        warnings.simplefilter("always")
        model = sparsekit.resume_run(elsewhere, epochs=3)
    assert_same_weights(model.params, uninterrupted)
