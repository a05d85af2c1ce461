"""Compare sparsity methods: train each under identical settings, side by side, then report.

:func:`compare` trains every named method (all registered methods by default) on the same
data with the same seed, hidden size, epochs and batch size, each in its own worker process
(at most ``jobs`` at a time), and writes one comparison directory::

    compare-<date>-<time>/
        comparison.json      the settings, the methods, their parameters and results
        <method>/            a run directory per method (see :mod:`sparsekit.run`), plus
            measures.json    the final measures of the trained model (see below)
            failure.json     only for a method that failed: the reason and the traceback
        report.html          one self-contained page (see :mod:`sparsekit.report`)
        report.csv           the measures table
        report.md            the same table in Markdown

A method that fails (it diverges, raises, or its worker process dies) is recorded as failed
with the reason; the others still run and the report is still written. Workers send their
progress through a queue; ``on_event`` receives every :class:`CompareEvent` in the calling
process, which is how the command line draws one progress display for the whole comparison.

Per-method settings come as ``"method.name=value"`` strings (:func:`parse_param_specs`):
``name`` is one of the method's own parameters or a training setting that may differ
between methods (``lr``, ``optimizer``, ``momentum``, ``tied``, ``center``). Extra plugins are given as
import specs (``"package.module"``, ``"package.module:attr"`` or ``"path/to/file.py"``)
so that every worker process can import them again.

This module imports neither typer nor rich.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import multiprocessing
import os
import queue as queue_module
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sparsekit.errors import ComparisonError, ParameterError, PluginError
from sparsekit.files import one_line_reason, plain_json, write_json
from sparsekit.train import Callback

__all__ = [
    "COMPARE_DEFAULTS",
    "PER_METHOD_SETTINGS",
    "CompareEvent",
    "CompareSettings",
    "Comparison",
    "ComparisonError",
    "MethodJob",
    "MethodResult",
    "PRESETS",
    "Preset",
    "compare",
    "default_jobs",
    "load_plugin",
    "parse_param_specs",
    "plan_jobs",
    "run_job",
    "summary_line",
]

#: Shared sizes used when the caller leaves them unset (methods' own defaults differ, and a
#: comparison needs one value for all).
COMPARE_DEFAULTS = {"hidden": 196, "epochs": 10, "batch_size": 128}
#: Training settings that may be set per method with ``method.name=value``.
PER_METHOD_SETTINGS = ("lr", "optimizer", "momentum", "tied", "center")
#: Settings every method shares; ``method.name=value`` may not change them.
SHARED_SETTINGS = ("hidden", "epochs", "batch_size", "seed", "dtype", "gpu")


@dataclass(frozen=True)
class Preset:
    """A named comparison: its methods, shared settings and per-method parameters.

    A preset's comparison lives in a fixed directory, ``OUT/<name>``, so that running the
    same command again continues it: finished methods are kept, interrupted ones resume
    from their checkpoints (bit for bit as if never stopped), the rest start.
    """

    name: str
    description: str
    methods: tuple[str, ...]
    settings: Mapping[str, Any]
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    title: str = ""


#: The comparisons that ``compare --preset NAME`` runs (docs/study.md explains the choices).
PRESETS: dict[str, Preset] = {
    "seed-study": Preset(
        name="seed-study",
        description=(
            "the original write-up's study: plain, l2, kl, arora and ksparse on the 60,000 "
            "MNIST training images, 196 hidden units, batch 128, 500 epochs, same seed"
        ),
        methods=("plain", "l2", "kl", "arora", "ksparse"),
        # The write-up used the same hyperparameters for every case and 500 epochs; 196
        # units (a 14x14 grid) as in CS294A's MNIST exercise, which case c follows. A frame
        # every 5 epochs (101 kept), of which the GIF shows 25: a few MB, not tens.
        settings={
            "hidden": 196,
            "epochs": 500,
            "batch_size": 128,
            "snapshot_every": 5,
            "gif_frames": 25,
        },
        # Every method sees the same raw pixels in [0, 1], as in the write-up (k-sparse
        # would otherwise centre them, its default since this study was planned).
        params={"ksparse": {"center": False}},
        title="The seed study: five ways to learn sparse codes on MNIST, 500 epochs",
    ),
}

#: Seconds between two progress messages of a worker (the end of an epoch always sends one).
PROGRESS_INTERVAL = 0.2
#: Environment variables that size the BLAS/OpenMP thread pools of each worker.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

MEASURES = "measures.json"
FAILURE = "failure.json"
CHECKPOINT = "checkpoint.npz"
COMPARISON = "comparison.json"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CompareSettings:
    """What every method of a comparison shares."""

    dataset: str = "mnist"
    data: str | None = None
    download: bool = False
    subset: int | None = None
    seed: int = 0
    hidden: int = COMPARE_DEFAULTS["hidden"]
    epochs: int = COMPARE_DEFAULTS["epochs"]
    batch_size: int = COMPARE_DEFAULTS["batch_size"]
    dtype: str = "float32"
    gpu: bool = False
    snapshot_every: int = 1
    #: Frames each progression.gif shows at most, evenly spread over the snapshots taken.
    gif_frames: int = 60

    def validate(self) -> CompareSettings:
        frames = self.gif_frames
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
            raise ParameterError(f"gif frames must be an integer >= 2, got {frames!r}")
        for name in ("hidden", "epochs", "batch_size", "snapshot_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(
                    f"{name.replace('_', ' ')} must be a positive integer, got {value!r}"
                )
        if self.subset is not None and (
            isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset < 1
        ):
            raise ParameterError(
                f"subset must be a positive number of samples, got {self.subset!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {self.seed!r}")
        return self

    def data_spec(self) -> dict[str, Any]:
        """How a run reloads its data (stored in the run's config and checkpoint)."""
        spec = self.dataset
        if Path(spec).exists():
            spec = str(Path(spec).resolve())
        return {
            "spec": spec,
            "data": str(Path(self.data).resolve()) if self.data is not None else None,
            "split": "train",
            "subset": self.subset,
            "download": False,
            "remove_mean": False,
            "zca": False,
            "seed": self.seed,
        }


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

    ``kind`` is one of ``"queued"`` (data: ``epochs``, ``directory`` of the comparison), ``"started"`` (``epochs``),
    ``"status"`` (``text``: loading data, evaluating, ...), ``"progress"`` (``epoch``
    0-based, ``step``, ``steps``, ``epochs``, ``done``, ``total``), ``"epoch"``
    (``metrics``), ``"finished"`` and ``"failed"`` (``result``: a :class:`MethodResult`).
    """

    kind: str
    method: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """The outcome of :func:`compare`."""

    directory: Path
    results: list[MethodResult]
    report: dict[str, Path] = field(default_factory=dict)

    @property
    def succeeded(self) -> list[MethodResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[MethodResult]:
        return [r for r in self.results if not r.ok]


# --------------------------------------------------------------------------- plugins


def _plugin_spec(plugin: Any) -> str:
    """An import spec for ``plugin`` (a spec string or an importable module)."""
    if isinstance(plugin, (str, os.PathLike)):
        spec = os.fspath(plugin)
        target, colon, attr = spec.partition(":")
        if target.endswith(".py") or "/" in target or os.sep in target:
            # A file: absolute, so that workers and later readers find it from anywhere.
            return str(Path(target).resolve()) + colon + attr
        return spec
    if isinstance(plugin, types.ModuleType):
        name = plugin.__name__
        if name != "__main__" and importlib.util.find_spec(name) is not None:
            return name
        if getattr(plugin, "__file__", None):
            return str(Path(plugin.__file__).resolve())
    raise PluginError(
        f"cannot pass plugin {plugin!r} to worker processes: give an importable module or an "
        "import spec ('package.module', 'package.module:attr' or 'path/to/file.py')"
    )


def load_plugin(spec: str) -> Any:
    """The plugin object named by ``spec``: ``module``, ``module:attr``, ``file.py[:attr]``."""
    target, _, attr = spec.partition(":") if not _is_windows_drive(spec) else (spec, "", "")
    try:
        if target.endswith(".py") or os.sep in target or "/" in target:
            path = Path(target).resolve()
            if not path.is_file():
                raise PluginError(f"plugin {spec!r}: no such file {path}")
            name = f"sparsekit_compare_plugin_{path.stem}"
            module = sys.modules.get(name)
            if module is None or getattr(module, "__file__", None) != str(path):
                loader_spec = importlib.util.spec_from_file_location(name, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise PluginError(f"plugin {spec!r}: cannot import {path}")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, attr) if attr else module
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"cannot load plugin {spec!r}: {type(exc).__name__}: {exc}") from None


def _is_windows_drive(spec: str) -> bool:
    return len(spec) > 2 and spec[1] == ":" and spec[2] in "\\/"


def _registry(plugins: Sequence[str]) -> Any:
    from sparsekit.registry import load_registry, make_plugin_manager

    return load_registry(make_plugin_manager([load_plugin(p) for p in plugins]))


# --------------------------------------------------------------------------- planning


def parse_param_specs(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["ksparse.k=40", "kl.rho=0.05"]`` -> ``{"ksparse": {"k": "40"}, "kl": {"rho": ...}}``."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        method, dot, name = key.strip().rpartition(".")
        if not eq or not dot or not method or not name:
            raise ParameterError(f"--param {spec!r}: expected METHOD.NAME=VALUE, e.g. ksparse.k=40")
        out.setdefault(method, {})[name.strip().replace("-", "_")] = value.strip()
    return out


def _cpus() -> int:
    """CPUs this process may run on (its affinity where known, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_jobs(n_methods: int) -> int:
    """Worker processes by default: one per method, at most one per CPU."""
    return max(1, min(n_methods, _cpus()))


def plan_jobs(
    methods: Sequence[str] | None,
    settings: CompareSettings,
    params: Mapping[str, Mapping[str, Any]] | Sequence[str] | None,
    plugins: Sequence[str],
    directory: Path,
    *,
    dim: int | None = None,
) -> list[MethodJob]:
    """Check every method and its settings before anything is trained; one job each."""
    from sparsekit.config import resolve_config

    registry = _registry(plugins)
    names = list(methods) if methods else list(registry.methods)
    if not names:
        raise PluginError("no methods are registered")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ParameterError(f"method {name!r} is named twice")
        seen.add(name)
        registry.get(name)  # UnknownMethodError lists the known ones
    if params is None:
        params = {}
    elif not isinstance(params, Mapping):
        params = parse_param_specs(list(params))
    for method in params:
        if method not in seen:
            raise ParameterError(
                f"--param for {method!r}, which is not compared (compared: {', '.join(names)})"
            )
    jobs = []
    for name in names:
        cls = registry.get(name)
        declared = {p.name: p for p in cls.params}
        method_values: dict[str, Any] = {}
        train_values: dict[str, Any] = {}
        for key, value in params.get(name, {}).items():
            if key in declared:
                method_values[key] = declared[key].convert(value)
            elif key in PER_METHOD_SETTINGS:
                train_values[key] = _convert_setting(key, value)
            elif key in SHARED_SETTINGS:
                raise ParameterError(
                    f"{name}.{key}: {key.replace('_', ' ')} is shared by every method of a "
                    f"comparison; set it with --{key.replace('_', '-')}"
                )
            else:
                options = ", ".join([*declared, *PER_METHOD_SETTINGS])
                raise ParameterError(f"{name} has no parameter {key!r} (its parameters: {options})")
        instance = cls(**method_values)
        resolve_config(
            instance,
            hidden=settings.hidden,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            seed=settings.seed,
            dtype=settings.dtype,
            gpu=settings.gpu,
            **train_values,
        )
        instance.validate(settings.hidden, dim)
        jobs.append(
            MethodJob(
                method=name,
                params=instance.get_params(),
                train=train_values,
                settings=settings,
                run_dir=str(directory / _dir_name(name)),
                plugins=tuple(plugins),
            )
        )
    return jobs


def _convert_setting(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if key in ("lr", "momentum"):
            return float(value)
        if key in ("tied", "center"):
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on", "tied"):
                return True
            if lowered in ("0", "false", "no", "off", "untied"):
                return False
            raise ValueError(value)
    except ValueError:
        raise ParameterError(f"{key}: cannot use {value!r}") from None
    return value


def _dir_name(method: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in method).strip(".")
    return safe or "method"


# --------------------------------------------------------------------------- one method


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
    from sparsekit.config import resolve_config
    from sparsekit.data import load_dataset
    from sparsekit.report import model_measures
    from sparsekit.run import RunWriter
    from sparsekit.train import Trainer

    settings = job.settings
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    registry = _registry(job.plugins)
    method = registry.create(job.method, **job.params)
    config = resolve_config(
        method,
        hidden=settings.hidden,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        dtype=settings.dtype,
        gpu=settings.gpu,
        **job.train,
    )
    emit("status", {"text": "loading data"})
    dataset = load_dataset(
        settings.dataset, settings.data, split="train", subset=settings.subset, download=False
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
        from sparsekit.checkpoint import restore_trainer

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
        self.emit("started", {"epochs": trainer.config.epochs})

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


# --------------------------------------------------------------------------- the comparison


def compare(
    methods: Sequence[str] | None = None,
    *,
    settings: CompareSettings | None = None,
    params: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
    plugins: Sequence[Any] = (),
    out: str | os.PathLike[str] = "runs",
    jobs: int | None = None,
    on_event: Callable[[CompareEvent], None] | None = None,
    report: bool = True,
    title: str | None = None,
    download_progress: Any = None,
    preset: str | Preset | None = None,
    scheduler: str | None = None,
    **overrides: Any,
) -> Comparison:
    """Train ``methods`` (default: every registered one) under the same settings.

    ``settings`` (or keyword ``overrides`` of its fields, e.g. ``subset=1000, hidden=64``)
    are shared by every method; ``params`` sets method parameters and per-method training
    settings, as a mapping ``{"ksparse": {"k": 40}}`` or specs ``["ksparse.k=40"]``.
    ``plugins`` are extra plugin modules or import specs (each worker imports them again).
    Runs at most ``jobs`` methods at once (default :func:`default_jobs`), each in its own
    process; with ``scheduler`` the methods run as Dask tasks instead (``"local"``: a local
    Dask cluster of ``jobs`` workers; ``"tcp://host:port"``: an existing cluster), through
    :class:`sparsekit.executor.DaskExecutor`, as ``sparsekit sweep`` does. Returns the :class:`Comparison`; with ``report`` (default) ``report.html``,
    ``report.csv`` and ``report.md`` are written into the comparison directory.

    Raises :class:`~sparsekit.errors.ParameterError` and friends for bad settings before
    anything is trained; a method that fails while training does not raise (see
    :attr:`Comparison.failed`).

    ``preset`` (a name in :data:`PRESETS` or a :class:`Preset`) supplies the methods, the
    shared settings and method parameters; ``methods``, ``params`` and ``overrides`` still
    take precedence. A preset's comparison is written to ``out/<preset name>``; calling
    again with the same preset continues it (finished methods are kept, interrupted ones
    resume from their checkpoints).
    """
    from sparsekit.run import create_run_dir

    chosen = resolve_preset(preset) if preset is not None else None
    if chosen is not None:
        methods = list(methods) if methods else list(chosen.methods)
        base = replace(settings or CompareSettings(), **chosen.settings)
        params = _merge_params(chosen.params, params)
        title = title or chosen.title or None
    else:
        base = settings or CompareSettings()
    settings = replace(base, **overrides).validate()
    if settings.gpu:
        from sparsekit.backend import get_backend

        get_backend(True, settings.dtype)  # no CuPy or no device: one clear error, up front
    plugin_specs = [_plugin_spec(p) for p in plugins]
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ParameterError(f"jobs must be a positive integer, got {jobs!r}")
    if scheduler is not None:
        from sparsekit.executor import check_scheduler

        check_scheduler(scheduler, workers=jobs, feature="compare --scheduler")
    # Check the methods first (cheap), then the data (downloading once, here, if allowed).
    plan_jobs(methods, settings, params, plugin_specs, Path(out))
    dim = _check_data(settings, download_progress)
    if chosen is not None:
        directory = _preset_directory(Path(out) / chosen.name, settings)
        planned = [
            replace(job, resume=True)
            for job in plan_jobs(methods, settings, params, plugin_specs, directory, dim=dim)
        ]
    else:
        directory = create_run_dir(out, "compare")
        planned = plan_jobs(methods, settings, params, plugin_specs, directory, dim=dim)
    for job in planned:
        Path(job.run_dir).mkdir(exist_ok=chosen is not None)
    n_jobs = jobs if jobs is not None else default_jobs(len(planned))
    title = title or f"sparsekit comparison {directory.name}"
    write_json(directory / COMPARISON, _comparison_json(settings, planned, [], plugin_specs, title))
    emit = on_event or (lambda event: None)
    for job in planned:
        emit(
            CompareEvent(
                "queued", job.method, {"epochs": settings.epochs, "directory": str(directory)}
            )
        )
    finished = {job.method: done for job in planned if (done := _finished(job)) is not None}
    for method, result in finished.items():
        emit(CompareEvent("finished", method, {"result": result}))
    todo = [job for job in planned if job.method not in finished]
    if scheduler is None:
        results = _run_all(todo, n_jobs, emit)
    else:
        from sparsekit.executor import run_compare_jobs

        results = run_compare_jobs(todo, scheduler, jobs, emit)
    results.update(finished)
    ordered = [results[job.method] for job in planned]
    write_json(
        directory / COMPARISON, _comparison_json(settings, planned, ordered, plugin_specs, title)
    )
    comparison = Comparison(directory=directory, results=ordered)
    if report:
        from sparsekit.report import write_report

        comparison.report = write_report(
            [Path(job.run_dir) for job in planned],
            directory / "report.html",
            title=title,
            registry=_registry(plugin_specs),
        )
    return comparison


def resolve_preset(preset: str | Preset) -> Preset:
    """The :class:`Preset` named ``preset`` (or ``preset`` itself)."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ParameterError(f"unknown preset {preset!r} (presets: {', '.join(sorted(PRESETS))})")
    return PRESETS[preset]


def _merge_params(
    preset: Mapping[str, Mapping[str, Any]],
    given: Mapping[str, Mapping[str, Any]] | Sequence[str] | None,
) -> dict[str, dict[str, Any]]:
    """The preset's method parameters, overridden by the caller's."""
    if given is not None and not isinstance(given, Mapping):
        given = parse_param_specs(list(given))
    merged = {method: dict(values) for method, values in preset.items()}
    for method, values in (given or {}).items():
        merged.setdefault(method, {}).update(values)
    return merged


#: Settings that may change when a preset's comparison is continued (the length grows).
_CONTINUABLE = ("epochs", "data", "download", "gif_frames")


def _preset_directory(directory: Path, settings: CompareSettings) -> Path:
    """``directory``, created or checked to hold a comparison under the same settings."""
    listing = directory / COMPARISON
    if listing.is_file():
        try:
            stored = json.loads(listing.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ParameterError(
                f"{listing}: unreadable; move {directory} away to start the comparison anew"
            ) from None
        current = asdict(settings)
        changed = [k for k in current if k not in _CONTINUABLE and stored.get(k) != current[k]]
        if changed:
            k = changed[0]
            raise ParameterError(
                f"{directory} was run with {k} = {stored.get(k)!r}, not {current[k]!r}; "
                "use another --out to compare under other settings"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create {directory}: {exc.strerror or exc}") from None
    return directory


def _finished(job: MethodJob) -> MethodResult | None:
    """The result of ``job`` when its run directory already holds all its epochs."""
    run_dir = Path(job.run_dir)
    try:
        measures = json.loads((run_dir / MEASURES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from sparsekit.run import read_metrics

    if not isinstance(measures, dict) or len(read_metrics(run_dir)) != job.settings.epochs:
        return None
    return MethodResult(
        method=job.method,
        run_dir=str(run_dir),
        status="finished",
        measures=measures,
        seconds=float(measures.get("total_seconds", 0.0)),
    )


def _check_data(settings: CompareSettings, progress: Any) -> int:
    """Load the data once in this process (downloading if allowed); its feature count."""
    from sparsekit.data import load_dataset

    dataset = load_dataset(
        settings.dataset,
        settings.data,
        split="train",
        subset=settings.subset,
        download=settings.download,
        progress=progress,
    )
    if len(dataset) < 1:
        raise ParameterError(f"{dataset.name}: no samples to train on")
    return dataset.dim


def _comparison_json(
    settings: CompareSettings,
    planned: Sequence[MethodJob],
    results: Sequence[MethodResult],
    plugins: Sequence[str],
    title: str,
) -> dict[str, Any]:
    from sparsekit import __version__

    by_method = {r.method: r for r in results}
    return {
        "title": title,
        "settings": asdict(settings),
        "plugins": list(plugins),
        "methods": [
            {
                "method": job.method,
                "params": job.params,
                "train": job.train,
                "run_dir": Path(job.run_dir).name,
                **(
                    {
                        "status": by_method[job.method].status,
                        "reason": by_method[job.method].reason,
                        "seconds": by_method[job.method].seconds,
                    }
                    if job.method in by_method
                    else {"status": "planned"}
                ),
            }
            for job in planned
        ],
        "sparsekit_version": __version__,
    }


@contextlib.contextmanager
def _worker_threads(n_jobs: int) -> Iterator[None]:
    """Size each worker's BLAS pool so that ``n_jobs`` workers share the CPUs (unless the
    user set the variables); the parent's environment is restored afterwards."""
    threads = str(max(1, _cpus() // n_jobs))
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


def _run_all(
    planned: Sequence[MethodJob], n_jobs: int, emit: Callable[[CompareEvent], None]
) -> dict[str, MethodResult]:
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    pending = list(planned)
    running: dict[str, tuple[Any, MethodJob]] = {}
    results: dict[str, MethodResult] = {}

    def handle(message: tuple[str, str, dict[str, Any]]) -> None:
        kind, method, data = message
        if kind == "result":
            result = MethodResult(**data)
            results[method] = result
            emit(CompareEvent(result.status, method, {"result": result}))
        else:
            emit(CompareEvent(kind, method, data))

    def drain(timeout: float) -> bool:
        try:
            handle(events.get(timeout=timeout))
        except queue_module.Empty:
            return False
        return True

    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                process = ctx.Process(
                    target=_worker, args=(job, events), name=f"sparsekit-compare-{job.method}"
                )
                with _worker_threads(n_jobs):
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
                    code = process.exitcode
                    reason = (
                        f"the worker process was killed by signal {-code}"
                        if code is not None and code < 0
                        else f"the worker process exited with code {code} without a result"
                    )
                    result = MethodResult(
                        method=method,
                        run_dir=job.run_dir,
                        status="failed",
                        reason=reason,
                        error_type="WorkerDied",
                    )
                    with contextlib.suppress(Exception):
                        write_json(
                            Path(job.run_dir) / FAILURE,
                            {
                                "method": method,
                                "status": "failed",
                                "reason": reason,
                                "error_type": "WorkerDied",
                            },
                        )
                    results[method] = result
                    emit(CompareEvent("failed", method, {"result": result}))
        while drain(0.05):  # progress sent just before the last result
            pass
    except BaseException as exc:
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
        raise
    finally:
        events.close()
        events.join_thread()
    return results


def summary_line(comparison: Comparison) -> str:
    """``"5 methods: 4 finished, 1 failed (arora: ...)"``."""
    n = len(comparison.results)
    failed = comparison.failed
    text = f"{n} method{'s' if n != 1 else ''}: {n - len(failed)} finished"
    if failed:
        text += (
            f", {len(failed)} failed (" + "; ".join(f"{r.method}: {r.reason}" for r in failed) + ")"
        )
    return text
