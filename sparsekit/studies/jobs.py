"""Running training jobs: one in this process, or many in worker processes.

A :class:`MethodJob` is everything one training run needs (picklable): the method and its
parameters, the shared :class:`~sparsekit.studies.compare.CompareSettings`, the run directory and
the plugins to import. :func:`run_job` trains it in the current process and measures the
model (``measures.json``; ``failure.json`` when it fails, which it reports rather than
raises). :func:`run_in_processes` runs many jobs in worker processes, a few at a time, each
with its BLAS pools sized so that the workers share the CPUs (:func:`worker_threads`);
:mod:`sparsekit.executor` runs the same jobs on Dask. :func:`sparsekit.studies.compare.compare` and
:func:`sparsekit.studies.sweep.run_sweep` plan the jobs.

This module imports neither typer nor rich; importing it changes nothing process-wide.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsekit.backend.threads import usable_cpus
from sparsekit.data import load_dataset
from sparsekit.files import one_line_reason, plain_json, write_json
from sparsekit.layout import CHECKPOINT, FAILURE, MEASURES
from sparsekit.methods.registry import registry_for
from sparsekit.runs.restore import restore_trainer
from sparsekit.runs.writer import RunWriter
from sparsekit.studies.report import model_measures
from sparsekit.training.settings import TRAIN_CONFIG_SETTINGS, resolve_config
from sparsekit.training.trainer import Callback, Trainer

if TYPE_CHECKING:
    from sparsekit.studies.settings import CompareSettings

__all__ = [
    "CHECKPOINT",
    "FAILURE",
    "MEASURES",
    "PROGRESS_INTERVAL",
    "THREAD_VARS",
    "CompareEvent",
    "MethodJob",
    "MethodResult",
    "usable_cpus",
    "run_in_processes",
    "run_job",
    "worker_threads",
]

#: Seconds between two progress messages of a worker (the end of an epoch always sends one).
PROGRESS_INTERVAL = 0.2
#: Environment variables that size the thread pools of each worker: BLAS, OpenMP and
#: sparsekit's own threads (which spin briefly between parts: two processes that each took
#: every CPU would spin against each other).
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "SPARSEKIT_NUM_THREADS",
)



@dataclass(frozen=True)
class MethodJob:
    """One method to train: everything a worker process needs (picklable)."""

    method: str
    params: dict[str, Any]
    train: dict[str, Any]
    settings: CompareSettings
    run_dir: str
    plugins: tuple[str, ...] = ()
    #: Continue from ``run_dir/checkpoint.npz`` when there is one (a preset's comparison).
    resume: bool = False


@dataclass
class MethodResult:
    """How one method's run ended."""

    method: str
    run_dir: str
    status: str  # "finished" or "failed"
    reason: str | None = None
    error_type: str | None = None
    measures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "finished"


@dataclass(frozen=True)
class CompareEvent:
    """Progress of a comparison, as ``on_event`` receives it.

    ``kind`` is one of ``"queued"`` (data: ``epochs``, ``directory`` of the comparison),
    ``"started"`` (``epochs``, ``epoch``: where training begins, > 0 when resumed),
    ``"status"`` (``text``: loading data, evaluating, ...), ``"progress"`` (``epoch``
    0-based, ``step``, ``steps``, ``epochs``, ``done``, ``total``), ``"epoch"``
    (``metrics``), ``"resumed"`` (on Dask: its worker was lost and another took it over;
    ``lost``, ``worker``, ``epoch``), ``"finished"`` and ``"failed"`` (``result``: a
    :class:`MethodResult`).
    """

    kind: str
    method: str
    data: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- one job


def run_job(job: MethodJob, emit: Callable[[str, dict[str, Any]], None]) -> MethodResult:
    """Train one method into its run directory (in the current process); never raises for
    a failure of the method itself, which comes back as a failed :class:`MethodResult`."""
    start = time.perf_counter()
    run_dir = Path(job.run_dir)
    try:
        measures = _train_and_measure(job, emit)
    except BaseException as exc:  # a method may raise anything; the comparison goes on
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        else:
            reason = one_line_reason(exc)
        interrupted = isinstance(exc, KeyboardInterrupt)
        result = MethodResult(
            method=job.method,
            run_dir=str(run_dir),
            status="interrupted" if interrupted else "failed",
            reason=reason,
            error_type=type(exc).__name__,
            seconds=time.perf_counter() - start,
        )
        with contextlib.suppress(Exception):
            write_json(
                run_dir / FAILURE,
                {
                    "method": job.method,
                    "status": result.status,
                    "reason": reason,
                    "error_type": type(exc).__name__,
                    "traceback": traceback.format_exc(),
                    "seconds": result.seconds,
                },
            )
        if interrupted:
            raise
        return result
    seconds = time.perf_counter() - start
    measures["total_seconds"] = seconds
    write_json(run_dir / MEASURES, measures)
    return MethodResult(
        method=job.method,
        run_dir=str(run_dir),
        status="finished",
        measures=measures,
        seconds=seconds,
    )


def _train_and_measure(
    job: MethodJob, emit: Callable[[str, dict[str, Any]], None]
) -> dict[str, Any]:

    settings = job.settings
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    registry = registry_for(job.plugins)
    method = registry.create(job.method, **job.params)
    shared = {s.name: getattr(settings, s.name) for s in TRAIN_CONFIG_SETTINGS if not s.per_method}
    config = resolve_config(method, **shared, **job.train)
    emit("status", {"text": "loading data"})
    dataset = load_dataset(
        settings.dataset,
        settings.data,
        split="train",
        subset=settings.subset,
        download=False,
        stream_memory=settings.stream_memory,
    )
    callbacks = [
        RunWriter(
            run_dir,
            data_spec=settings.data_spec(),
            snapshot_every=settings.snapshot_every,
            max_frames=settings.gif_frames,
        ),
        _Reporter(emit),
    ]
    if job.resume and (run_dir / CHECKPOINT).is_file():

        (run_dir / FAILURE).unlink(missing_ok=True)
        trainer = restore_trainer(
            run_dir, dataset, registry, epochs=settings.epochs, callbacks=callbacks
        )
    else:
        trainer = Trainer(method, dataset, config, callbacks=callbacks)
    trainer.fit()
    emit("status", {"text": "measuring"})
    return model_measures(trainer.model, dataset, trainer.history)


class _Reporter(Callback):
    """A trainer callback that sends progress to the parent process (throttled)."""

    def __init__(self, emit: Callable[[str, dict[str, Any]], None]) -> None:
        self.emit = emit
        self.last = 0.0

    def on_train_begin(self, trainer: Any) -> None:
        # epoch: 0 for a new run, where it goes on for one resumed from its checkpoint
        self.emit("started", {"epochs": trainer.config.epochs, "epoch": trainer.epoch})

    def on_step_end(self, trainer: Any, step: int, steps: int) -> None:
        now = time.monotonic()
        if step < steps and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        epochs = trainer.config.epochs
        self.emit(
            "progress",
            {
                "epoch": trainer.epoch,
                "step": step,
                "steps": steps,
                "epochs": epochs,
                "done": trainer.epoch * steps + step,
                "total": steps * epochs,
            },
        )

    def on_epoch_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self.emit("epoch", {"metrics": plain_json(metrics)})


def _worker(job: MethodJob, events: Any) -> None:
    """Entry point of a worker process: run the job, send events and the result."""
    def emit(kind: str, data: dict[str, Any]) -> None:
        events.put((kind, job.method, data))

    try:
        result = run_job(job, emit)
    except KeyboardInterrupt:
        return
    events.put(("result", job.method, asdict(result)))


# --------------------------------------------------------------------------- worker processes


@contextlib.contextmanager
def worker_threads(n_jobs: int) -> Iterator[None]:
    """Size each worker's thread pools so that ``n_jobs`` workers share the CPUs (unless the
    user set the variables); the parent's environment is restored afterwards.

    Spawned workers inherit the environment at start, so this is how their thread pools are
    sized; use it only around starting worker processes.
    """
    threads = str(max(1, usable_cpus() // n_jobs))
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    for key in THREAD_VARS:
        if saved[key] is None:
            os.environ[key] = threads
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def run_in_processes(
    planned: Sequence[MethodJob], n_jobs: int, emit: Callable[[CompareEvent], None]
) -> dict[str, MethodResult]:
    """Run ``planned`` in worker processes (``spawn``), at most ``n_jobs`` at a time.

    Each worker runs :func:`run_job` and sends its events through a queue; ``emit`` receives
    them here as :class:`CompareEvent` objects. A worker that dies without a result is
    recorded as failed (``failure.json``); on Ctrl-C the workers record the interruption and
    the exception goes on. Returns the results by method name.
    """
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    pending = list(planned)
    running: dict[str, tuple[Any, MethodJob]] = {}
    results: dict[str, MethodResult] = {}

    def drain(timeout: float) -> bool:
        try:
            kind, method, data = events.get(timeout=timeout)
        except queue_module.Empty:
            return False
        if kind == "result":
            result = results[method] = MethodResult(**data)
            emit(CompareEvent(result.status, method, {"result": result}))
        else:
            emit(CompareEvent(kind, method, data))
        return True

    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                process = ctx.Process(
                    target=_worker, args=(job, events), name=f"sparsekit-compare-{job.method}"
                )
                with worker_threads(n_jobs):
                    process.start()
                running[job.method] = (process, job)
            drain(0.1)
            for method, (process, job) in list(running.items()):
                if process.is_alive():
                    continue
                # Its last messages may still be in the pipe: read them before judging.
                while method not in results and drain(0.2):
                    pass
                process.join()
                del running[method]
                if method not in results:
                    results[method] = _died(process.exitcode, job)
                    emit(CompareEvent("failed", method, {"result": results[method]}))
        while drain(0.05):  # progress sent just before the last result
            pass
    except BaseException as exc:
        _stop_workers(running, pending, exc)
        raise
    finally:
        events.close()
        events.join_thread()
    return results


def _died(code: int | None, job: MethodJob) -> MethodResult:
    """The result of a worker process that ended without one (recorded in failure.json)."""
    reason = (
        f"the worker process was killed by signal {-code}"
        if code is not None and code < 0
        else f"the worker process exited with code {code} without a result"
    )
    with contextlib.suppress(Exception):
        write_json(
            Path(job.run_dir) / FAILURE,
            {"method": job.method, "status": "failed", "reason": reason, "error_type": "WorkerDied"},
        )
    return MethodResult(
        method=job.method,
        run_dir=job.run_dir,
        status="failed",
        reason=reason,
        error_type="WorkerDied",
    )


def _stop_workers(
    running: dict[str, tuple[Any, MethodJob]], pending: Sequence[MethodJob], exc: BaseException
) -> None:
    """End the running workers after ``exc`` (on Ctrl-C they get 3 s to record it themselves)
    and record every job without a failure.json as interrupted or not started."""
    if isinstance(exc, KeyboardInterrupt):
        # A Ctrl-C reaches the workers too: let them record it in failure.json.
        deadline = time.monotonic() + 3.0
        for process, _ in running.values():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process, _ in running.values():
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)
    stopped = [(job, "interrupted") for _, job in running.values()]
    stopped += [(job, "not started: the comparison was interrupted") for job in pending]
    for job, reason in stopped:
        if not (Path(job.run_dir) / FAILURE).exists():
            with contextlib.suppress(Exception):
                write_json(
                    Path(job.run_dir) / FAILURE,
                    {
                        "method": job.method,
                        "status": "interrupted",
                        "reason": reason,
                        "error_type": type(exc).__name__,
                    },
                )
