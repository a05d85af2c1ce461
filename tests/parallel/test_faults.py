"""Data-parallel faults: a rank that raises or dies ends the whole job within seconds, with
one line naming the rank and the cause; ranks that disagree are refused at start; a method
that does not declare how its step reads the batch is refused; one process never loads
mpi4py."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sparsekit.core.contract import Method
from sparsekit.errors import ParameterError
from sparsekit.parallel import LocalCommunicator
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer, make_method

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_data_parallel import environment, mpirun, needs_mpi  # noqa: E402

PARAMETER_EXIT = ParameterError.exit_code


def run_mode(mode: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = mpirun(2, str(HERE / "fault_ranks.py"), mode, timeout=60)
    return done, time.perf_counter() - start


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("sparsekit: error:")]


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_one_line_naming_it():
    done, seconds = run_mode("raise")
    assert done.returncode != 0
    assert error_lines(done) == ["sparsekit: error: rank 1 of 2: RuntimeError: boom at step 3"]
    assert seconds < 30  # 50 epochs would take far longer: the other rank was ended


@needs_mpi
def test_a_rank_killed_with_sigkill_ends_the_job_within_seconds():
    done, seconds = run_mode("kill")
    assert done.returncode != 0
    assert seconds < 30


@needs_mpi
@pytest.mark.parametrize(
    ("mode", "what"), [("data", "data checksum"), ("settings", "settings")]
)
def test_ranks_that_disagree_are_refused_at_start_with_one_line(mode, what):
    done, _ = run_mode(mode)
    assert done.returncode == PARAMETER_EXIT, done.stderr[-2000:]
    assert error_lines(done) == [
        f"sparsekit: error: --distributed: rank 1's {what} differs from rank 0's; every rank "
        "must run the same sparsekit on the same data with the same settings"
    ]


class Undeclared(Method):
    name = "undeclared"  # no batch_reduction: data parallelism cannot know it is exact


def test_an_undeclared_method_is_refused_with_one_line():
    data = np.random.default_rng(0).uniform(size=(40, 6))
    method = Undeclared()
    config = resolve_config(method, hidden=4, epochs=1, batch_size=10)
    with pytest.raises(ParameterError, match="^undeclared cannot train with --distributed: it "
                       "does not declare how its step reads the batch"):  # fmt: skip
        Trainer(method, data, config, comm=LocalCommunicator())
    Trainer(method, data, config)  # one process: as ever


def test_resampling_is_refused_under_data_parallelism():
    data = np.random.default_rng(0).uniform(size=(40, 6))
    method = make_method("topk", k=2, dead_after=10, resample_every=5)
    config = resolve_config(method, hidden=8, epochs=1, batch_size=10)
    with pytest.raises(ParameterError, match="while resampling dead units"):
        Trainer(method, data, config, comm=LocalCommunicator())


def test_a_batch_that_leaves_a_rank_without_rows_is_refused():
    class TwoRanks(LocalCommunicator):
        size = 2  # check_batches comes before any collective

    data = np.random.default_rng(0).uniform(size=(41, 6))
    method = make_method("plain")
    config = resolve_config(method, hidden=4, epochs=1, batch_size=10)  # last batch: 1 row
    with pytest.raises(ParameterError, match="a batch of 1 rows .* leaves a rank without rows"):
        Trainer(method, data, config, comm=TwoRanks())


def test_one_process_never_imports_mpi4py(tmp_path):
    code = (
        "import sys, numpy as np, sparsekit, sparsekit.cli.main\n"
        "sparsekit.train('plain', np.random.default_rng(0).uniform(size=(40, 6)), hidden=4,"
        " epochs=1, batch_size=10)\n"
        "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment()
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("method", "params", "says"),
    [
        ("kl", {}, "kl cannot train with its latents sharded: only ksparse, topk can"),
        ("topk", {"k": 2}, "topk with sharded latents needs --aux-coef 0 and no resampling"),
    ],
)
def test_latent_sharding_refuses_what_it_does_not_compute(method, params, says):
    from sparsekit.training.sharded import train_sharded

    data = np.random.default_rng(0).uniform(size=(40, 6))
    with pytest.raises(ParameterError, match=re.escape(says)):
        train_sharded(method, data, comm=LocalCommunicator(), hidden=8, epochs=1, **params)
