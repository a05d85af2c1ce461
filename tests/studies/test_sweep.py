"""``sparsekit sweep`` on a real Dask ``LocalCluster`` (worker processes) and its sweep files.

The cluster tests share one cluster of two single-threaded worker processes. The fault
tolerance test kills the worker process running a trial with SIGKILL after the trial's
first epoch; Dask gives the trial to a worker again, the trial resumes from its checkpoint,
and its final weights must equal, bit for bit, those of the same sweep run uninterrupted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import failing_plugin
import numpy as np
import pytest
from conftest import run_cli

from sparsekit.errors import MissingDependencyError, ParameterError, UnknownMethodError
from sparsekit.studies.jobs import usable_cpus
from sparsekit.studies.sweep import SweepFileError, plan_sweep, run_sweep, trial_status

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

distributed = pytest.importorskip("distributed")

PLUGIN_FILE = Path(failing_plugin.__file__).resolve()
EPOCHS = 8
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "SPARSEKIT_NUM_THREADS": "1",
}


def sweep_doc(data_dir: Path, **train) -> dict:
    """Two k-sparse trials on 600 MNIST images, long enough to be killed in the middle."""
    return {
        "name": "kill",
        "data": {"dataset": "mnist", "data": str(data_dir), "subset": 600},
        "train": {"hidden": 32, "epochs": EPOCHS, "batch_size": 50, "seed": 1, **train},
        "methods": {"ksparse": {"k": [8, 12], "k_start": 32}},
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def weights(run_dir: str | Path) -> dict[str, np.ndarray]:
    from sparsekit.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    assert ckpt["meta"]["epoch"] == EPOCHS
    return ckpt["state"]["params"]


def assert_same_weights(a: str | Path, b: str | Path) -> None:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    for key in wa:
        assert wa[key].dtype == wb[key].dtype
        assert np.array_equal(wa[key], wb[key]), f"{key} differs"


cli = partial(run_cli, env={"COLUMNS": "200"})


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the file


def test_the_grid_is_the_product_of_every_list(data_dir, tmp_path):
    path = write(
        tmp_path,
        f"""
        name = "grid"
        [data]
        dataset = "mnist"
        data = "{data_dir}"
        subset = 200
        [train]
        hidden = [16, 32]
        epochs = 1
        seed = [0, 1, 2]
        [methods.ksparse]
        k = [4, 8]
        lr = 0.01
        [[methods.kl]]
        rho = 0.05
        hidden = 8          # a method may override a shared setting
        [[methods.kl]]
        rho = 0.1
        optimizer = "sgd"
        """,
    )
    plan = plan_sweep(path, tmp_path / "out")
    by_method: dict[str, list] = {}
    for trial in plan.trials:
        by_method.setdefault(trial.method, []).append(trial)
    assert len(by_method["ksparse"]) == 2 * 2 * 3
    assert len(by_method["kl"]) == 3 + 2 * 3
    assert {(t.job.params["k"], t.job.settings.hidden) for t in by_method["ksparse"]} == {
        (4, 16), (4, 32), (8, 16), (8, 32)
    }  # fmt: skip
    assert {t.job.train["lr"] for t in by_method["ksparse"]} == {0.01}
    assert {t.job.settings.hidden for t in by_method["kl"] if t.job.params["rho"] == 0.05} == {8}
    assert all(t.job.train.get("optimizer") == "sgd" for t in by_method["kl"][3:])
    ids = [t.id for t in plan.trials]
    assert len(set(ids)) == len(ids)
    assert ids[0].startswith("ksparse-k4-hidden16-seed0-")
    assert all(Path(t.job.run_dir).parent == tmp_path / "out" / "grid" for t in plan.trials)
    # The same file planned again names every trial the same: that is how reruns find them.
    assert [t.id for t in plan_sweep(path, tmp_path / "out").trials] == ids
    assert not (tmp_path / "out").exists()  # planning writes nothing


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("[methods.ksparse\nk = 1", SweepFileError, "not valid TOML"),
        ("[methods.nosuch]\nk = 1", UnknownMethodError, "nosuch"),
        ("[methods.ksparse]\nkk = 4", ParameterError, "ksparse has no parameter 'kk'"),
        ("[methods.ksparse]\nk = []", SweepFileError, "methods.ksparse.k is an empty grid"),
        ("[train]\nseed = []\n[methods.plain]", SweepFileError, "train.seed is an empty grid"),
        ("[methods.ksparse]\nk = 999", ParameterError, "k"),
        ("[train]\nhiden = 3\n[methods.plain]", SweepFileError, "unknown key train.hiden"),
        ("[sweep]\nx = 1\n[methods.plain]", SweepFileError, "unknown key 'sweep'"),
        ("bogus = 1\n[methods.plain]", SweepFileError, "unknown key data.bogus"),
        ("[methods.ksparse]\nk = [4, 4]", SweepFileError, "lists a value twice"),
        ("[methods.ksparse]\nsubset = 3", SweepFileError, "the data is shared"),
        ("[train]\nepochs = 0\n[methods.plain]", SweepFileError, "epochs must be a positive"),
        ("[train]\nepochs = 1", SweepFileError, "no methods"),
        ("[report]\nbest_by = 'speed'\n[methods.plain]", SweepFileError, "best_by"),
    ],
)
def test_a_bad_file_is_one_error_before_anything_runs(data_dir, tmp_path, body, error, message):
    path = write(
        tmp_path,
        f'[data]\ndataset = "mnist"\ndata = "{data_dir}"\nsubset = 100\n\n' + body + "\n",
    )
    with pytest.raises(error) as info:
        plan_sweep(path, tmp_path / "out")
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(path))
    assert not (tmp_path / "out").exists()


def test_cli_errors_are_one_line_and_leave_nothing_behind(data_dir, tmp_path):
    path = write(tmp_path, "[methods.ksparse]\nk = []\n")
    result = cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("sparsekit: error: ") and "empty grid" in result.stderr
    missing = cli("sweep", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such sweep file" in missing.stderr
    good = write(
        tmp_path,
        f'[data]\ndata = "{data_dir}"\nsubset = 100\n[methods.plain]\n',
        name="good.toml",
    )
    remote_and_workers = cli(
        "sweep", str(good), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"
    )
    assert remote_and_workers.returncode == 2
    assert "an existing cluster (--scheduler) keeps its own workers" in remote_and_workers.stderr
    dry = cli("sweep", str(good), "--dry-run", "--out", str(tmp_path / "out"))
    assert dry.returncode == 0, dry.stderr
    assert "plain-" in dry.stdout and "not run" in dry.stdout
    assert not (tmp_path / "out").exists()


BLOCK_DISTRIBUTED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("distributed", "dask"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, Block())
from sparsekit.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("command", ["sweep", "compare"])
def test_without_distributed_one_line_says_how_to_install_it(data_dir, tmp_path, command):
    path = write(tmp_path, f'[data]\ndata = "{data_dir}"\nsubset = 100\n[methods.plain]\n')
    if command == "sweep":
        args = ["sweep", str(path), "--out", str(tmp_path / "out")]
    else:
        args = ["compare", "plain", "--data", str(data_dir), "--subset", "100"]
        args += ["--scheduler", "local", "--out", str(tmp_path / "out")]
    env = {**os.environ, "SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("SPARSEKIT_DEBUG", None)
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_DISTRIBUTED, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == MissingDependencyError.exit_code, result.stderr
    lines = result.stderr.strip().splitlines()
    if command == "sweep":
        assert len(lines) == 1, result.stderr
    # (compare draws its display first, as for its other errors: the error is the last line)
    assert lines[-1].startswith("sparsekit: error: ") and "Traceback" not in result.stderr
    assert "needs Dask distributed" in lines[-1]
    assert "pip install 'sparsekit[distributed]'" in lines[-1]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- on a cluster


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster: two worker processes, one thread each, one BLAS thread."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=ONE_THREAD,
        ) as local,
        Client(local) as client,
    ):
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def reference(cluster, data_dir, tmp_path_factory):
    """The two trials, never interrupted."""
    address, _ = cluster
    out = tmp_path_factory.mktemp("sweep-reference")
    sweep = run_sweep(sweep_doc(data_dir), out=out, scheduler=address, report=False)
    assert len(sweep.finished) == 2, [r.reason for r in sweep.results.values()]
    return sweep


@pytest.mark.slow
def test_a_killed_worker_costs_nothing_but_time(cluster, reference, data_dir, tmp_path):
    address, client = cluster
    pids = client.run(os.getpid)  # worker address -> process id
    target = reference.plan.trials[0].id
    killed: list[int] = []
    events: list = []

    def on_event(event):
        events.append(event)
        if killed or event.trial != target or event.kind != "epoch":
            return
        if event.data["metrics"]["epoch"] >= 1:  # its checkpoint of epoch 1 is written
            killed.append(pids[event.data["worker"]])
            os.kill(killed[0], signal.SIGKILL)

    sweep = run_sweep(sweep_doc(data_dir), out=tmp_path, scheduler=address, on_event=on_event)
    assert killed, "the trial was never seen training"
    assert sorted(sweep.finished) == sorted(t.id for t in reference.plan.trials), [
        r.reason for r in sweep.results.values()
    ]
    # It was interrupted and resumed from a checkpoint, not started again from scratch.
    mine = [e for e in events if e.trial == target]
    starts = [i for i, e in enumerate(mine) if e.kind == "started"]
    assert len(starts) == 2, [e.kind for e in mine]
    # ... and said so: one "resumed" event, just before the second start.
    resumed = [e for e in mine if e.kind == "resumed"]
    assert len(resumed) == 1 and mine[starts[1] - 1] is resumed[0]
    assert resumed[0].data["epoch"] >= 1
    after = [e for e in mine[starts[1] :] if e.kind == "progress"]
    assert after and after[0].data["epoch"] >= 1
    epochs_seen = [e.data["metrics"]["epoch"] for e in mine if e.kind == "epoch"]
    assert epochs_seen[-1] == EPOCHS and len(epochs_seen) < 2 * EPOCHS
    for trial in reference.plan.trials:
        assert_same_weights(Path(reference.directory) / trial.id, Path(sweep.directory) / trial.id)
        lines = (Path(sweep.directory) / trial.id / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))

    # The same command again: everything is there, nothing is trained (a plan made for
    # another folder is placed in ``out``).
    again: list = []
    plan = plan_sweep(sweep_doc(data_dir), tmp_path / "elsewhere")
    rerun = run_sweep(plan, out=tmp_path, scheduler=address, on_event=again.append)
    assert again[0].kind == "planned" and again[0].data["todo"] == []
    assert sorted(rerun.skipped) == sorted(sweep.finished)
    assert {e.kind for e in again} == {"planned"}

    # A trial lost, and one stopped part way (its measures gone, its checkpoint rewound to
    # epoch 2 as a Ctrl-C would leave it): only those two run, the second resumes.
    import shutil

    lost, partial = (Path(sweep.directory) / t.id for t in sweep.plan.trials)
    shutil.rmtree(lost)
    _rewind(partial, epochs=2)
    assert trial_status(partial) == "partial"
    third: list = []
    rerun = run_sweep(sweep_doc(data_dir), out=tmp_path, scheduler=address, on_event=third.append)
    assert sorted(third[0].data["todo"]) == sorted([lost.name, partial.name])
    assert len(rerun.finished) == 2
    resumed = [e for e in third if e.trial == partial.name and e.kind == "progress"]
    assert resumed[0].data["epoch"] >= 2
    for trial in reference.plan.trials:
        assert_same_weights(Path(reference.directory) / trial.id, Path(sweep.directory) / trial.id)
    rows = read_csv(sweep.results_csv)
    assert [r["status"] for r in rows] == ["finished", "finished"]


def _rewind(run_dir: Path, *, epochs: int) -> None:
    """Make ``run_dir`` look like a trial stopped after ``epochs`` epochs: train the same
    trial again, in a fresh process with one BLAS thread like the workers, to that point."""
    (run_dir / "measures.json").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    from sparsekit.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    assert ckpt["meta"]["epoch"] == EPOCHS and config["method"] == "ksparse"
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from sparsekit.methods.registry import registry_for
        from sparsekit.training.settings import TrainConfig
        from sparsekit.data import load_dataset
        from sparsekit.runs.writer import RunWriter
        from sparsekit.training.trainer import Callback, Trainer

        run_dir = Path({str(run_dir)!r})
        config = json.loads((run_dir / "config.json").read_text())
        spec = config["data_spec"]

        class Stop(Callback):
            def on_epoch_end(self, trainer, metrics):
                if trainer.epoch >= {epochs}:
                    trainer.stop_requested = True

        method = registry_for([]).create(config["method"], **config["method_params"])
        dataset = load_dataset(spec["spec"], spec["data"], split="train", subset=spec["subset"])
        trainer = Trainer(
            method,
            dataset,
            TrainConfig.from_dict(config["train"]),
            callbacks=[RunWriter(run_dir, data_spec=spec), Stop()],
        )
        trainer.fit()
        """
    )
    for name in ("checkpoint.npz", "metrics.jsonl", "summary.json"):
        (run_dir / name).unlink()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **ONE_THREAD},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run_dir)["meta"]["epoch"] == epochs


def test_failed_trials_are_listed_and_the_others_unaffected(cluster, data_dir, tmp_path):
    address, _ = cluster
    doc = {
        "name": "mixed",
        "plugins": [str(PLUGIN_FILE)],
        "data": {"dataset": "mnist", "data": str(data_dir), "subset": 300},
        "train": {"hidden": 16, "epochs": 1, "batch_size": 100},
        "methods": {"explode": {}, "ksparse": {"k": [2, 4, 8]}, "plain": {}},
        "report": {"title": "mixed <sweep>"},
    }
    events: list = []
    sweep = run_sweep(doc, out=tmp_path, scheduler=address, on_event=events.append)
    rows = {r["method"] + r["k"]: r for r in read_csv(sweep.results_csv)}
    assert rows["explode"]["status"] == "failed"
    assert failing_plugin.EXPLODE_MESSAGE in rows["explode"]["reason"]
    for key in ("ksparse2", "ksparse4", "ksparse8", "plain"):
        assert rows[key]["status"] == "finished"
        assert math.isfinite(float(rows[key]["fve"])) and float(rows[key]["seconds"]) > 0
    assert {float(rows[f"ksparse{k}"]["mean_active"]) for k in (2, 4, 8)} == {2.0, 4.0, 8.0}
    assert [e.kind for e in events][:2] == ["planned", "cluster"]
    assert sum(e.kind == "failed" for e in events) == 1

    page = sweep.report["html"].read_text(encoding="utf-8")
    assert "<h2>Variance explained against L0</h2>" in page
    assert 'id="fve-l0"><img class="plot" src="data:image/png;base64,' in page
    assert '<table class="measures" id="best">' in page
    assert '<tr data-method="ksparse"><td>ksparse</td><td>k=8</td>' in page  # most variance
    assert '<tr data-method="explode">' not in page
    assert "mixed &lt;sweep&gt;" in page and "mixed <sweep>" not in page
    assert "deliberate failure on the first step &lt;b&gt;&amp;&lt;/b&gt;" in page
    assert page.index("Variance explained") < page.index("<h2>Measures</h2>")
    markdown = sweep.report["markdown"].read_text(encoding="utf-8")
    assert "## Best setting per method (by mean fve)" in markdown


def test_compare_runs_on_the_same_executor(cluster, data_dir, tmp_path):
    from sparsekit.studies.compare import CompareSettings, compare

    address, _ = cluster
    events: list = []
    comparison = compare(
        ["plain", "ksparse"],
        settings=CompareSettings(dataset="mnist", data=str(data_dir), subset=300, hidden=16),
        params=["ksparse.k=4"],
        out=tmp_path,
        scheduler=address,
        on_event=events.append,
        report=False,
        epochs=1,
    )
    assert [r.status for r in comparison.results] == ["finished", "finished"]
    assert {e.kind for e in events} >= {"queued", "started", "epoch", "finished"}
    assert all(e.data.get("worker", "").startswith("tcp://") for e in events if e.kind == "epoch")
    with pytest.raises(ParameterError, match="keeps its own workers"):
        compare(["plain"], scheduler=address, jobs=2, data=str(data_dir), subset=100)


@pytest.mark.slow
def test_the_command_starts_its_own_cluster(data_dir, tmp_path):
    path = write(
        tmp_path,
        f"""
        [data]
        data = "{data_dir}"
        subset = 300
        [train]
        hidden = 16
        epochs = 2
        seed = [0, 1]
        [methods.ksparse]
        k = [3, 6]
        """,
        name="cmd.toml",
    )
    started = time.monotonic()
    result = cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "dashboard: " in result.stderr
    assert "2 trials at once, 1 BLAS thread each" in result.stderr or usable_cpus() != 2
    assert "4 trials, 0 already finished, 4 to train" in result.stderr
    assert "4 trials: 4 finished" in result.stderr
    assert re.search(r"trials .* 4/4 .*0 running, 0 failed", result.stderr)  # the display
    report = Path(result.stdout.strip().splitlines()[-1])
    assert report == tmp_path / "out" / "cmd" / "report.html" and report.exists()
    rows = read_csv(report.parent / "results.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert (report.parent / "sweep.toml").read_text() == path.read_text()
    plan = json.loads((report.parent / "sweep.json").read_text())
    assert [t["trial"] for t in plan["trials"]] == [r["trial"] for r in rows]
    again = cli("sweep", str(path), "--out", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert "4 trials: 4 finished (4 already)" in again.stderr
    assert "dashboard" not in again.stderr  # nothing to train: no cluster started
    assert time.monotonic() - started < 240


def test_blas_threads_share_the_cpus_once():
    from sparsekit.studies.executor import blas_threads

    assert blas_threads(1, 1, cpus=8) == 8
    assert blas_threads(2, 1, cpus=8) == 4
    assert blas_threads(2, 2, cpus=8) == 2
    assert blas_threads(3, 1, cpus=8) == 2
    assert blas_threads(16, 1, cpus=8) == 1


def test_a_local_cluster_is_sized_as_asked(monkeypatch):
    from sparsekit.studies.executor import WORKER_THREAD_VARS, DaskExecutor
    from sparsekit.studies.jobs import usable_cpus

    for key in WORKER_THREAD_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # set by the user: kept
    environ = dict(os.environ)
    with DaskExecutor(workers=1, threads_per_worker=2, dashboard=False) as executor:
        # Dask's nanny writes OMP/MKL/OPENBLAS_NUM_THREADS=1 into this process's environment
        # when it spawns a worker; the executor puts them back (else anything the host
        # program starts later would inherit one BLAS thread).
        assert dict(os.environ) == environ
        assert (executor.n_workers, executor.n_threads) == (1, 2)
        assert executor.dashboard_link is None
        (seen,) = executor.client.run(
            lambda: {k: os.environ.get(k) for k in WORKER_THREAD_VARS}
        ).values()
        (pid,) = executor.client.run(os.getpid).values()
    assert dict(os.environ) == environ
    want = str(max(1, usable_cpus() // 2))
    assert seen == {
        "OMP_NUM_THREADS": want,
        "OPENBLAS_NUM_THREADS": want,
        "MKL_NUM_THREADS": "3",
        "SPARSEKIT_NUM_THREADS": want,
    }
    assert pid != os.getpid()  # a worker process, not a thread of this one


def test_the_documented_examples_are_valid(data_dir, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    docs = Path(__file__).resolve().parents[2] / "docs"
    plan = plan_sweep(docs / "examples" / "sweep-mnist.toml", "runs")
    assert plan.name == "mnist-sparsity" and len(plan.trials) == 36
    assert plan_sweep(docs / "examples" / "sweep-scaling.toml", "runs").trials
    text = (docs / "sweeps.md").read_text(encoding="utf-8")
    example = (docs / "examples" / "sweep-mnist.toml").read_text(encoding="utf-8")
    body = "[data]" + example.split("\n[data]", 1)[1].split("\n[report]")[0]
    assert body in text  # the docs show the file as it is
