"""Training jobs (sparsekit/studies/jobs.py): one job in this process, what a failed or
interrupted job leaves behind, a worker that dies, and the workers' thread counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import failing_plugin
import pytest

from sparsekit.layout import CHECKPOINT, FAILURE, MEASURES
from sparsekit.studies import jobs
from sparsekit.studies.jobs import (
    THREAD_VARS,
    MethodJob,
    MethodResult,
    run_in_processes,
    run_job,
    worker_threads,
)
from sparsekit.studies.settings import CompareSettings

#: A small synthetic-SAE world: no files to read, a second of training.
SETTINGS = CompareSettings(
    dataset="synthetic-sae:features=96,dim=8,n=256,roots=4,depth=2",
    hidden=16,
    epochs=1,
    batch_size=64,
)
PLUGIN = str(Path(failing_plugin.__file__).resolve())


def job(tmp_path: Path, method: str = "plain", **kwargs) -> MethodJob:
    return MethodJob(method, {}, {}, SETTINGS, str(tmp_path / method), **kwargs)


def test_one_job_trains_measures_and_reports_its_progress(tmp_path):
    events: list[tuple[str, dict]] = []
    result = run_job(job(tmp_path), lambda kind, data: events.append((kind, data)))
    assert result.ok and result.status == "finished" and result.reason is None
    run_dir = Path(result.run_dir)
    assert (run_dir / CHECKPOINT).is_file() and not (run_dir / FAILURE).exists()
    measures = json.loads((run_dir / MEASURES).read_text())
    assert measures == pytest.approx(result.measures)
    assert {"loss", "mse", "fve", "mcc", "total_seconds"} <= set(measures)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["status", "started"] and kinds[-2:] == ["epoch", "status"]
    assert events[0][1] == {"text": "loading data"} and events[-1][1] == {"text": "measuring"}
    last = [data for kind, data in events if kind == "progress"][-1]
    assert last["done"] == last["total"] and last["epochs"] == 1


def test_a_failing_method_is_a_failed_result_and_a_failure_record(tmp_path):
    result = run_job(job(tmp_path, "explode", plugins=(PLUGIN,)), lambda kind, data: None)
    assert not result.ok and result.status == "failed"
    assert result.error_type == "RuntimeError"
    assert failing_plugin.EXPLODE_MESSAGE in result.reason
    record = json.loads((Path(result.run_dir) / FAILURE).read_text())
    assert record["status"] == "failed" and record["error_type"] == "RuntimeError"
    assert record["reason"] == result.reason and "Traceback" in record["traceback"]
    assert not (Path(result.run_dir) / MEASURES).exists()


def test_an_unknown_method_fails_without_raising(tmp_path):
    result = run_job(job(tmp_path, "no-such-method"), lambda kind, data: None)
    assert result.status == "failed" and result.error_type == "UnknownMethodError"
    assert (Path(result.run_dir) / FAILURE).is_file()


def test_an_interrupted_job_records_it_and_raises(tmp_path):
    def emit(kind: str, data: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(job(tmp_path), emit)
    record = json.loads((tmp_path / "plain" / FAILURE).read_text())
    assert record["status"] == "interrupted" and record["reason"] == "interrupted (Ctrl-C)"


def test_worker_processes_report_results_and_a_worker_that_dies(tmp_path):
    events = []
    planned = [job(tmp_path, "crash", plugins=(PLUGIN,)), job(tmp_path, "no-such-method")]
    results = run_in_processes(planned, 2, events.append)
    assert set(results) == {"crash", "no-such-method"}
    crash = results["crash"]
    assert isinstance(crash, MethodResult) and crash.error_type == "WorkerDied"
    assert "exited with code 3 without a result" in crash.reason
    assert json.loads((tmp_path / "crash" / FAILURE).read_text())["error_type"] == "WorkerDied"
    assert results["no-such-method"].error_type == "UnknownMethodError"
    assert {(e.kind, e.method) for e in events} >= {
        ("failed", "crash"),
        ("failed", "no-such-method"),
    }


def test_worker_threads_share_the_cpus_and_restore_the_environment(monkeypatch):
    for key in THREAD_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")  # set by the user: kept
    monkeypatch.setattr(jobs, "usable_cpus", lambda: 8)
    with worker_threads(3):
        assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "2"
        assert os.environ["SPARSEKIT_NUM_THREADS"] == "2"  # sparsekit's own threads too
        assert os.environ["MKL_NUM_THREADS"] == "7"
    assert "OMP_NUM_THREADS" not in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ
    assert os.environ["MKL_NUM_THREADS"] == "7"
    with worker_threads(16):  # more workers than CPUs: one thread each, never zero
        assert os.environ["OMP_NUM_THREADS"] == "1"
