"""Run training jobs on Dask distributed: a local cluster sized to the machine, or one you have.

:class:`DaskExecutor` is what ``sparsekit sweep`` (and ``sparsekit compare --scheduler``)
train on. Used as a context manager, it either starts a :class:`distributed.LocalCluster`
(worker *processes*, not threads) or connects to the scheduler of an existing cluster
(``tcp://host:8786``: one started by hand with ``dask scheduler`` / ``dask worker``, by
``dask-jobqueue`` on Slurm or PBS, by ``dask-cuda`` with one worker per GPU).
:meth:`DaskExecutor.run` submits one Dask task per :class:`~sparsekit.studies.jobs.MethodJob`;
each task is :func:`sparsekit.studies.jobs.run_job`, which trains into the job's run directory,
checkpointing every epoch.

Fault tolerance is Dask's plus exact resume: when a worker process dies in the middle of a
job, the scheduler gives the task to another worker (up to
``distributed.scheduler.allowed-failures`` times, 3 by default, then the job is recorded as
failed with ``KilledWorker``), and the job, finding the checkpoint its first attempt left in
the run directory, continues from it; on the CPU the final weights are bit for bit those of
an uninterrupted run. Every worker must see the run directories at the same path (one
machine, or a shared file system on a cluster).

Progress travels as Dask structured events (``Worker.log_event`` on the worker,
``Client.subscribe_topic`` here) and reaches ``on_event`` in the calling thread.

``distributed`` is an optional dependency (``pip install 'sparsekit[distributed]'``); this
module imports it only when an executor is started, and :func:`require_distributed` turns
its absence into one clear error. Importing this module changes nothing process-wide.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from sparsekit.errors import ClusterError, MissingDependencyError, ParameterError
from sparsekit.files import one_line_reason, write_json
from sparsekit.layout import FAILURE
from sparsekit.studies.jobs import (
    THREAD_VARS,
    CompareEvent,
    MethodJob,
    MethodResult,
    run_job,
    usable_cpus,
)
from sparsekit.training.settings import POSITIVE_INT, check_value

__all__ = [
    "INSTALL_HINT",
    "ClusterError",
    "DaskExecutor",
    "MissingDependencyError",
    "blas_threads",
    "require_distributed",
]

INSTALL_HINT = "pip install 'sparsekit[distributed]'"
#: Thread-pool variables set for each worker of a local cluster, unless the user set them.
WORKER_THREAD_VARS = THREAD_VARS
#: Seconds to wait for the scheduler of an existing cluster.
CONNECT_TIMEOUT = 20


def require_distributed(feature: str = "this") -> None:
    """Raise :class:`MissingDependencyError` (with the install command) without ``distributed``."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs Dask distributed, which is not installed: {INSTALL_HINT}"
        ) from None


def blas_threads(workers: int, threads_per_worker: int, cpus: int | None = None) -> int:
    """BLAS threads per job so that ``workers × threads_per_worker`` jobs use the CPUs once."""
    cpus = cpus if cpus is not None else usable_cpus()
    return max(1, cpus // max(1, workers * threads_per_worker))


def _is_local(scheduler: str | None) -> bool:
    return scheduler is None or scheduler == "local"


def _run_task(job: MethodJob, key: str, topic: str) -> dict[str, Any]:
    """The Dask task: train one job on this worker, sending progress as structured events."""
    from distributed import get_worker


    worker = get_worker()
    address = worker.address

    def emit(kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # progress must never fail a job
            worker.log_event(topic, {"kind": kind, "key": key, "worker": address, "data": data})

    return asdict(run_job(job, emit))


def _restore_environ(saved: Mapping[str, str]) -> None:
    """Put back the variables of ``os.environ`` that differ from ``saved``."""
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


class DaskExecutor:
    """A Dask client on a local cluster (``scheduler`` None or ``"local"``) or an existing one.

    For a local cluster, ``workers`` worker processes (default: one per CPU, at most
    ``max_workers``) each run ``threads_per_worker`` jobs at a time (default 1), and every
    job's BLAS/OpenMP pools get CPUs ÷ (workers × threads) threads (:func:`blas_threads`;
    variables you set yourself are kept). For an existing cluster the workers are what they
    are: ``workers`` and ``threads_per_worker`` are refused. ``dashboard`` serves the Dask
    dashboard of a local cluster (needs ``bokeh``, part of the ``distributed`` extra) on port
    8787, or another free port when that one is taken.
    """

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        max_workers: int | None = None,
        dashboard: bool = True,
        feature: str = "sparsekit sweep",
    ) -> None:
        for flag, value in (("--workers", workers), ("--threads-per-worker", threads_per_worker)):
            if value is not None:
                check_value(flag, value, POSITIVE_INT)
        if not _is_local(scheduler):
            if not isinstance(scheduler, str) or "://" not in scheduler:
                raise ParameterError(
                    f"scheduler must be 'local' or an address such as tcp://host:8786, got "
                    f"{scheduler!r}"
                )
            if workers is not None or threads_per_worker is not None:
                raise ParameterError(
                    "--workers, --threads-per-worker and --jobs size a local cluster; an existing "
                    "cluster (--scheduler) keeps its own workers"
                )
        self.scheduler = scheduler
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.max_workers = max_workers
        self.dashboard = dashboard
        self.feature = feature
        self.client: Any = None
        self.cluster: Any = None
        self.worker_env: dict[str, str] = {}
        self._dashboard = False
        self._environ: dict[str, str] | None = None

    # -- lifetime --------------------------------------------------------------------------

    def __enter__(self) -> DaskExecutor:
        require_distributed(self.feature)
        from distributed import Client

        if _is_local(self.scheduler):
            from distributed import LocalCluster

            cpus = usable_cpus()
            workers = self.workers or max(1, min(cpus, self.max_workers or cpus))
            threads = self.threads_per_worker or 1
            per_job = str(blas_threads(workers, threads, cpus))
            self.worker_env = {k: os.environ.get(k, per_job) for k in WORKER_THREAD_VARS}
            dashboard: str | None = None
            if self.dashboard:
                try:
                    import bokeh  # noqa: F401

                    dashboard = ":8787"
                except ImportError:
                    dashboard = None
            self._dashboard = dashboard is not None
            # Dask's nanny writes its pre-spawn variables (OMP/MKL/OPENBLAS_NUM_THREADS=1,
            # MALLOC_TRIM_THRESHOLD_) into this process's environment before it spawns a
            # worker and leaves them there: everything started later by the host program
            # would inherit single-threaded BLAS. They are put back after the cluster starts
            # (and again when it closes: a worker restarted meanwhile writes them again).
            self._environ = dict(os.environ)
            try:
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=dashboard,
                    env=self.worker_env,
                )
                self.client = Client(self.cluster)
            except Exception as exc:
                self.close()
                raise ClusterError(f"cannot start a local Dask cluster: {exc}") from None
            _restore_environ(self._environ)
        else:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {exc}"
                ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client, and the cluster when this executor started it."""
        for thing in (self.client, self.cluster):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self.client = self.cluster = None
        if self._environ is not None:
            _restore_environ(self._environ)
            self._environ = None

    # -- facts -----------------------------------------------------------------------------

    @property
    def dashboard_link(self) -> str | None:
        """The address of the Dask dashboard, or None when none is served."""
        if self.client is None or (self.cluster is not None and not self._dashboard):
            return None
        try:
            return str(self.client.dashboard_link)
        except Exception:
            return None

    @property
    def scheduler_address(self) -> str | None:
        return None if self.client is None else self.client.scheduler.address

    @property
    def n_workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self._workers())

    @property
    def n_threads(self) -> int:
        """Jobs the cluster runs at once (the workers' threads, all together)."""
        return sum(int(w.get("nthreads", 0)) for w in self._workers().values())

    def _workers(self) -> dict[str, Any]:
        if self.client is None:
            return {}
        try:
            return dict(self.client.scheduler_info().get("workers", {}))
        except Exception:
            return {}

    # -- running ---------------------------------------------------------------------------

    def run(
        self,
        jobs: Mapping[str, MethodJob],
        *,
        on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
        resources: Mapping[str, float] | None = None,
    ) -> dict[str, MethodResult]:
        """Train every job (keyed by a name) on the cluster; the result of each.

        ``on_event(kind, key, data)`` receives the progress the jobs send (the kinds of
        :class:`~sparsekit.studies.jobs.CompareEvent`; ``data["worker"]`` is the worker's address)
        and ``"finished"``/``"failed"`` with ``data["result"]``, in the calling thread.
        ``resources`` are Dask worker resources every job needs (``{"GPU": 1}`` on workers
        started with ``--resources GPU=1``). A job whose worker died more often than Dask
        allows, or that could not run at all, comes back failed with the reason.
        """
        if self.client is None:
            raise RuntimeError("DaskExecutor.run outside its 'with' block")
        from distributed import as_completed

        client = self.client
        emit = on_event or (lambda kind, key, data: None)
        topic = f"sparsekit-{uuid.uuid4().hex}"
        events: queue_module.Queue[Any] = queue_module.Queue()
        client.subscribe_topic(topic, events.put)
        token = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                _run_task,
                job,
                key,
                topic,
                key=f"sparsekit-{key}-{token}",
                pure=False,
                resources=dict(resources) if resources else None,
            ): key
            for key, job in jobs.items()
        }
        results: dict[str, MethodResult] = {}
        drain = partial(_drain, events, results, emit, {})
        try:
            pending = as_completed(list(futures))
            while not pending.is_empty():
                drain(0.1)
                for future in pending.next_batch(block=False):
                    key = futures[future]
                    result = self._result(future, jobs[key])
                    drain(0.0)  # progress sent just before the result
                    results[key] = result
                    emit(result.status, key, {"result": result})
            drain(0.05)
        except BaseException:
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
            _record_interrupted(jobs, results)
            raise
        finally:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)
        return results

    @staticmethod
    def _result(future: Any, job: MethodJob) -> MethodResult:
        if future.status == "finished":
            try:
                return MethodResult(**future.result())
            except Exception as exc:  # the result could not travel back
                reason = one_line_reason(exc, name=True)
                error = type(exc).__name__
        else:
            try:
                exc = future.exception()
            except Exception as cancelled:  # CancelledError
                exc = cancelled
            error = type(exc).__name__
            if error == "KilledWorker":
                reason = (
                    "its worker died every time it ran (KilledWorker: Dask stops after "
                    "distributed.scheduler.allowed-failures deaths)"
                )
            else:
                reason = one_line_reason(exc, name=True)
        with contextlib.suppress(Exception):
            write_json(
                Path(job.run_dir) / FAILURE,
                {"method": job.method, "status": "failed", "reason": reason, "error_type": error},
            )
        return MethodResult(
            method=job.method,
            run_dir=job.run_dir,
            status="failed",
            reason=reason,
            error_type=error,
        )


def _drain(
    events: queue_module.Queue[Any],
    results: Mapping[str, MethodResult],
    emit: Callable[[str, str, dict[str, Any]], None],
    workers: dict[str, tuple[list[Any], bool]],
    timeout: float,
) -> None:
    """Pass on the progress events that arrived (waiting up to ``timeout`` for the first),
    but those of jobs whose result is already in.

    ``workers`` remembers the worker each job last reported from: a job that starts again
    (Dask gave it to another worker after its worker died) is announced by a ``"resumed"``
    event first, since Dask itself says nothing to the caller about a retried task.
    """
    try:
        item = events.get(timeout=timeout)
    except queue_module.Empty:
        return
    while True:
        message = item[1] if isinstance(item, tuple) else item
        if isinstance(message, dict) and message.get("key") not in results:
            key, kind = str(message.get("key")), str(message.get("kind"))
            data = dict(message.get("data") or {})
            data["worker"] = message.get("worker")
            _note_lost_worker(key, kind, data, workers, emit)
            emit(kind, key, data)
        try:
            item = events.get_nowait()
        except queue_module.Empty:
            return


def _note_lost_worker(
    key: str,
    kind: str,
    data: Mapping[str, Any],
    workers: dict[str, tuple[list[Any], bool]],
    emit: Callable[[str, str, dict[str, Any]], None],
) -> None:
    """Emit ``"resumed"`` (``lost``: the worker that died, ``worker``: the new one,
    ``epoch``: the epoch training goes on from) when ``key`` starts training a second time,
    or after events from another worker (one that died while loading the data).

    ``workers[key]``: the addresses ``key`` reported from since it last started, and
    whether it has started."""
    address = data["worker"]
    seen, started = workers.get(key, ([], False))
    if kind != "started":
        workers[key] = (seen if address in seen else [*seen, address], started)
        return
    others = [a for a in seen if a != address]
    if started or others:
        lost = others[-1] if others else address
        emit("resumed", key, {"lost": lost, "worker": address, "epoch": data.get("epoch")})
    workers[key] = ([address], True)


def _record_interrupted(
    jobs: Mapping[str, MethodJob], results: Mapping[str, MethodResult]
) -> None:
    """A failure.json saying "interrupted" for each job without a result (or its own)."""
    for key, job in jobs.items():
        if key not in results and not (Path(job.run_dir) / FAILURE).exists():
            with contextlib.suppress(Exception):
                write_json(
                    Path(job.run_dir) / FAILURE,
                    {
                        "method": job.method,
                        "status": "interrupted",
                        "reason": "interrupted",
                        "error_type": "KeyboardInterrupt",
                    },
                )


def check_scheduler(
    scheduler: str | None,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    feature: str = "this",
) -> None:
    """Check an executor's settings (and that ``distributed`` is installed) before any work."""
    DaskExecutor(scheduler, workers=workers, threads_per_worker=threads_per_worker)
    require_distributed(feature)


def run_compare_jobs(
    planned: Sequence[MethodJob],
    scheduler: str,
    jobs: int | None,
    emit: Callable[[Any], None],
) -> dict[str, MethodResult]:
    """:func:`sparsekit.studies.compare.compare`'s methods as Dask tasks (one per method)."""
    local = _is_local(scheduler)
    with DaskExecutor(
        scheduler,
        workers=jobs if local else None,
        max_workers=len(planned),
        feature="compare --scheduler",
    ) as executor:
        return executor.run(
            # resume: a job given to another worker continues from its checkpoint
            {job.method: replace(job, resume=True) for job in planned},
            on_event=lambda kind, key, data: emit(CompareEvent(kind, key, data)),
        )
