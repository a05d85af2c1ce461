"""The Dask executor (sparsekit/studies/executor.py) without a cluster: its settings checks,
thread arithmetic, the error without ``distributed``, an unreachable scheduler, how a task's
end becomes a result, and the environment it puts back. tests/studies/test_sweep.py runs a
real LocalCluster."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

import pytest

from sparsekit.errors import ClusterError, MissingDependencyError, ParameterError
from sparsekit.layout import FAILURE
from sparsekit.studies import executor
from sparsekit.studies.executor import (
    INSTALL_HINT,
    DaskExecutor,
    blas_threads,
    check_scheduler,
    require_distributed,
)
from sparsekit.studies.jobs import MethodJob, MethodResult
from sparsekit.studies.settings import CompareSettings


def test_blas_threads_split_the_cpus_between_the_jobs():
    assert blas_threads(2, 1, cpus=8) == 4
    assert blas_threads(2, 2, cpus=8) == 2
    assert blas_threads(3, 1, cpus=8) == 2
    assert blas_threads(16, 1, cpus=8) == 1  # never zero
    assert blas_threads(0, 0, cpus=4) == 4  # unset counts as one


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_workers_and_threads_must_be_positive_integers(value):
    with pytest.raises(ParameterError, match="workers must be a positive integer"):
        DaskExecutor(workers=value)
    with pytest.raises(ParameterError, match="--threads-per-worker must be a positive integer"):
        DaskExecutor(threads_per_worker=value)


def test_scheduler_is_local_or_an_address():
    assert DaskExecutor().scheduler is None
    assert DaskExecutor("local", workers=2).workers == 2
    assert DaskExecutor("tcp://host:8786").scheduler == "tcp://host:8786"
    with pytest.raises(ParameterError, match="scheduler must be 'local' or an address"):
        DaskExecutor("host:8786")
    with pytest.raises(ParameterError, match="an existing cluster .--scheduler. keeps its own"):
        DaskExecutor("tcp://host:8786", workers=2)
    with pytest.raises(ParameterError, match="keeps its own workers"):
        check_scheduler("tcp://host:8786", threads_per_worker=1)


def test_without_distributed_one_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingDependencyError, match="sparsekit sweep needs Dask distributed"):
        require_distributed("sparsekit sweep")
    with pytest.raises(MissingDependencyError) as info:
        with DaskExecutor(feature="compare --scheduler"):
            pass
    assert INSTALL_HINT in str(info.value) and "compare --scheduler" in str(info.value)
    with pytest.raises(MissingDependencyError):
        check_scheduler("local", workers=2, feature="sweep")


def test_an_unreachable_scheduler_is_a_cluster_error(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(executor, "CONNECT_TIMEOUT", 1)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with DaskExecutor("tcp://127.0.0.1:9"):
            pass


def test_outside_its_with_block_it_has_no_client():
    idle = DaskExecutor()
    assert idle.dashboard_link is None and idle.scheduler_address is None
    assert idle.n_workers == 0 and idle.n_threads == 0
    with pytest.raises(RuntimeError, match="outside its 'with' block"):
        idle.run({})
    idle.close()  # closing what was never started is fine


class FakeFuture:
    """What DaskExecutor._result reads of a distributed future."""

    def __init__(self, status: str, result=None, error: BaseException | None = None) -> None:
        self.status, self._result, self._error = status, result, error

    def result(self):
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result

    def exception(self):
        return self._error


class KilledWorker(Exception):
    """Named as distributed's: the name is what the executor recognises."""


def a_job(tmp_path) -> MethodJob:
    return MethodJob("plain", {}, {}, CompareSettings(), str(tmp_path))


def test_a_finished_task_gives_back_its_result(tmp_path):
    sent = MethodResult("plain", str(tmp_path), "finished", measures={"mse": 0.5}, seconds=2.0)
    got = DaskExecutor._result(FakeFuture("finished", asdict(sent)), a_job(tmp_path))
    assert got == sent
    assert not (tmp_path / FAILURE).exists()


@pytest.mark.parametrize(
    "future, error, words",
    [
        (FakeFuture("error", error=KilledWorker("w")), "KilledWorker", "its worker died every"),
        (FakeFuture("error", error=ValueError("bad")), "ValueError", "bad"),
        (FakeFuture("finished", result=OSError("lost")), "OSError", "lost"),
    ],
)
def test_a_task_that_did_not_finish_is_a_failed_result_with_a_record(
    tmp_path, future, error, words
):
    result = DaskExecutor._result(future, a_job(tmp_path))
    assert result.status == "failed" and result.error_type == error and words in result.reason
    record = json.loads((tmp_path / FAILURE).read_text())
    assert record == {
        "method": "plain", "status": "failed", "reason": result.reason, "error_type": error,
    }  # fmt: skip


def test_restore_environ_puts_back_what_the_nanny_changed(monkeypatch):
    monkeypatch.setenv("SPARSEKIT_TEST_KEPT", "a")
    monkeypatch.delenv("SPARSEKIT_TEST_ADDED", raising=False)
    saved = dict(os.environ)
    monkeypatch.setenv("SPARSEKIT_TEST_KEPT", "changed")
    monkeypatch.setenv("SPARSEKIT_TEST_ADDED", "1")
    executor._restore_environ(saved)
    assert os.environ["SPARSEKIT_TEST_KEPT"] == "a" and "SPARSEKIT_TEST_ADDED" not in os.environ
    assert dict(os.environ) == saved
