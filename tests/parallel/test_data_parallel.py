"""Data-parallel training (``mpiexec -n 2``) gives the model one process gives.

Every built-in and the relu-l1 plugin: N=2 against one process with the same seed and the same
global batch, float64 to relative 1e-10 on every weight after 2 epochs (float32: 1e-5);
two runs with N=2 bit for bit equal. The shares are uneven (290 rows, batches of 45: shares of
23 and 22, and a last batch of 20); the device path (the simulated device, its simulated NCCL)
for five of them. Each ``mpiexec`` launch trains many cases, to keep the start-up of two
Python processes from dominating the suite's time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparsekit
from sparsekit.training.settings import resolve_config
from sparsekit.training.trainer import Trainer, make_method

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from train_ranks import method_of, problem  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="mpi4py or mpiexec missing (pip install 'sparsekit[mpi]')",
)

SMALL = {"hidden": 8, "epochs": 2, "batch_size": 45, "rows": 290}
# Wide and sparse enough that units die (dead_after 40 samples): AuxK runs on most steps.
SAE = {"hidden": 64, "epochs": 2, "batch_size": 45, "rows": 290, "k_aux": 4, "dead_after": 40}
CASES64 = [
    ["plain", "plain", SMALL],
    ["l2", "l2", SMALL],
    ["kl", "kl", SMALL],
    ["ksparse", "ksparse", {**SMALL, "k": 3, "k_start": 6}],
    ["arora", "arora", SMALL],
    ["relu-l1", "relu-l1", SMALL],
    ["topk", "topk", {**SAE, "k": 2}],
    ["batchtopk", "batchtopk", {**SAE, "k": 2}],
    ["matryoshka", "matryoshka", {**SAE, "k": 2}],
    ["jumprelu", "jumprelu", {**SMALL, "hidden": 16}],
    ["gated", "gated", {**SMALL, "hidden": 16}],
    ["standard", "standard", {**SMALL, "hidden": 16}],
    ["mp-sae", "mp-sae", {**SMALL, "hidden": 16, "k": 3}],
]
CASES64 = [[n, m, {**s, "dtype": "float64"}] for n, m, s in CASES64]
# float32: relative 1e-4 (measured: at most 2.2e-5, a b_dec under Adam, whose m/√v turns the
# rounding of a near-zero gradient into a step of lr). BatchTopK's selection over 2,880
# entries meets a near-tie that float32 rounding flips (float64 above: 1e-10), after which
# the model differs by more than rounding: 1e-2 there, and bit-for-bit between runs.
CASES32 = [
    ["kl32", "kl", SMALL, 1e-4],
    ["ksparse32", "ksparse", {**SMALL, "k": 3, "k_start": 6}, 1e-4],
    ["topk32", "topk", {**SAE, "k": 2}, 1e-4],
    ["batchtopk32", "batchtopk", {**SAE, "k": 2}, 1e-2],
]


def environment() -> dict[str, str]:
    paths = [str(REPO), str(REPO / "plugins" / "sparsekit-relu-l1")]
    env = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"  # one BLAS thread a rank
    env["SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def mpirun(ranks: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, *args],
        capture_output=True, text=True, env=environment(), timeout=timeout,
    )  # fmt: skip


def train_command(tmp_path: Path, out: str, method: str, *args: str) -> Path:
    """``mpiexec -n 2 sparsekit train METHOD`` on ``tmp_path/data.npy`` into ``tmp_path/out``:
    the run directory, which rank 0 alone created and printed."""
    done = mpirun(
        2, "-m", "sparsekit.cli.main", "train", method, "--dataset", str(tmp_path / "data.npy"),
        "--out", str(tmp_path / out), *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / out).iterdir()  # rank 0 alone created a run directory
    assert done.stdout.strip() == str(run)  # and rank 0 alone printed it
    return run


def run_weights(run: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in sparsekit.load_run(run).params.items()}


def assert_same_weights(got: dict, want: dict, rtol: float = 1e-10) -> None:
    """Every weight of ``want`` equals ``got``'s to ``rtol`` of its largest entry."""
    for key, value in want.items():
        other, value = np.asarray(got[key]), np.asarray(value)
        assert np.abs(other - value).max() <= rtol * np.abs(value).max(), key


def train_ranks(tmp_path: Path, cases: list, ranks: int = 2, tag: str = "") -> dict:
    out = tmp_path / f"weights{tag}.npz"
    done = mpirun(ranks, str(HERE / "train_ranks.py"), str(out), json.dumps(cases))
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as saved:
        return dict(saved)


def one_process(method: str, settings: dict) -> sparsekit.Model:
    settings = dict(settings)
    data = problem(settings)
    return sparsekit.train(method_of(method), data, **settings)


def assert_close(name: str, got: dict, model: sparsekit.Model, rtol: float) -> None:
    for key, value in model.params.items():
        value = np.asarray(value)
        error = np.abs(got[f"{name}/{key}"] - value).max() / max(np.abs(value).max(), 1e-30)
        assert error <= rtol, f"{name}: {key} differs by {error:.2e} (relative)"
    threshold = getattr(model.method, "threshold", None)
    if threshold is not None:  # BatchTopK's θ: from the global batch's selection
        assert abs(float(got[f"{name}/threshold"]) - threshold) <= rtol * abs(threshold)


# The device path too: sums through the simulated NCCL, under the simulated device's rule
# against host transfers inside a step. (BatchTopK and Matryoshka read their selection's
# candidates back to the host under --distributed: a synchronisation it refuses.)
CASES_DEVICE = [
    [f"{name}-device", method, {**settings, "simulated": True}]
    for name, method, settings in CASES64
    if name in ("kl", "ksparse", "arora", "topk", "jumprelu")
]


# Latents sharded across the ranks (sparsekit.training.sharded): 15 latents, shards of 8 and 7.
CASES_SHARDED = [
    ["ksparse-sharded", "ksparse", {**SMALL, "hidden": 15, "k": 3, "k_start": 6}],
    ["topk-sharded", "topk", {**SMALL, "hidden": 15, "k": 3, "aux_coef": 0.0}],
]
CASES_SHARDED = [[n, m, {**s, "dtype": "float64", "sharded": True}] for n, m, s in CASES_SHARDED]


@needs_mpi
def test_two_ranks_train_the_one_process_model_in_float64(tmp_path):
    cases = CASES64 + CASES_DEVICE + CASES_SHARDED
    got = train_ranks(tmp_path, cases)
    for name, method, settings in cases:
        one = {k: v for k, v in settings.items() if k not in ("simulated", "sharded")}
        assert_close(name, got, one_process(method, one), 1e-10)


@needs_mpi
def test_float32_matches_and_two_runs_are_bit_for_bit_equal(tmp_path):
    cases = [case[:3] for case in CASES32]
    first = train_ranks(tmp_path, cases, tag="a")
    second = train_ranks(tmp_path, cases, tag="b")
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    for name, method, settings, rtol in CASES32:
        assert_close(name, first, one_process(method, settings), rtol)


@needs_mpi
def test_a_streamed_shard_folder_trains_the_one_process_model(tmp_path):
    """Each rank keeps its share of every global batch of a streamed folder (the same
    windows on every rank): the one-process model, float64 to 1e-10."""
    from shard_folders import npy_folder

    folder = tmp_path / "shards"
    npy_folder(folder, sizes=(300, 250, 310, 140), dim=12)
    cases = [
        ["topk-stream", "topk", {**SAE, "k": 2, "dtype": "float64", "folder": str(folder)}],
        ["kl-stream", "kl", {**SMALL, "dtype": "float64", "folder": str(folder)}],
        # --center: the folder's mean estimated from 200 rows, for N ranks as for one process
        ["plain-centred", "plain", {**SMALL, "dtype": "float64", "folder": str(folder),
                                    "center": True, "stats_rows": 200}],
    ]
    got = train_ranks(tmp_path, cases)
    for name, method, settings in cases:
        assert_close(name, got, one_process(method, settings), 1e-10)


def test_the_auxk_cases_do_have_dead_units():
    """The SAE cases above are only a test of AuxK's global statistics if units die."""
    settings = {**SAE, "k": 2, "dtype": "float64"}
    data = problem(settings)
    method = make_method("topk", k=2, k_aux=4, dead_after=40)
    config = resolve_config(method, **{k: settings[k] for k in ("hidden", "epochs", "batch_size")})
    trainer = Trainer(method, data, config)
    trainer.train_epoch()
    assert bool((trainer.upkeep.since_fired >= trainer.upkeep.upkeep.dead_after).any())
