"""Sweeps: every combination of methods, parameters, sizes and seeds a TOML file declares.

A sweep file (documented in ``docs/sweeps.md``)::

    name = "mnist-sparsity"          # the sweep directory (default: the file name)
    plugins = []                     # extra plugins, as for ``sparsekit compare --plugin``

    [data]                           # dataset, data, subset, download
    dataset = "mnist"
    subset = 10000

    [train]                          # shared by every method
    hidden = [64, 256]               # a list is a grid axis
    epochs = 10
    seed = [0, 1]

    [methods.ksparse]                # one table per method ([[methods.X]] for several)
    k = [10, 20, 40]                 # the method's parameters ...
    lr = 0.01                        # ... and training settings, overriding [train]

    [report]
    best_by = "fve"                  # the measure that picks each method's best setting

Every value given as a list is an axis of the grid; a trial is one point of the product of
the axes of its method's table (with ``[data]`` and ``[train]``). :func:`plan_sweep` checks
the whole file (TOML syntax, known keys, methods, parameters and their values for the data
at hand) before anything runs; each mistake is one :class:`SweepFileError` line.

:func:`run_sweep` trains the trials as Dask tasks (:class:`sparsekit.studies.executor.DaskExecutor`),
each an ordinary run directory (see :mod:`sparsekit.run`) in the sweep directory, named by
the trial's varying values and a hash of all its settings, so that the same command run
again trains only what is missing: finished trials (their ``measures.json`` is there) are
kept, trials that stopped part way continue from their checkpoint. It writes::

    <out>/<name>/
        sweep.toml           the file, as run
        sweep.json           the plan: every trial, its settings and run directory
        <trial>/             a run directory per trial (+ measures.json / failure.json)
        results.csv          one row per trial: settings, final measures, seconds, state
                             (finished, partial, failed or not run: see sweep_types)
        report.html          the report (see :mod:`sparsekit.sweep_report`), .csv and .md

This module imports neither typer nor rich, nor (until a sweep runs) Dask.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from sparsekit._version import __version__
from sparsekit.errors import OutputError, ParameterError, SparsekitError, SweepFailedError
from sparsekit.files import first_line, read_json_or_none, write_atomic, write_json
from sparsekit.layout import CONFIG, FAILURE, MEASURES, PLAN, RESULTS, SOURCE, SUMMARY
from sparsekit.methods.registry import plugin_spec
from sparsekit.studies.compare import check_data, plan_jobs
from sparsekit.studies.executor import DaskExecutor, check_scheduler
from sparsekit.studies.jobs import MethodJob, MethodResult
from sparsekit.studies.report import COLUMNS
from sparsekit.studies.settings import DATA_KEYS, PER_METHOD_SETTINGS, TRAIN_KEYS, CompareSettings
from sparsekit.studies.sweep_report import write_sweep_report
from sparsekit.studies.sweep_types import (
    BEST_BY,
    FINISHED,
    Sweep,
    SweepEvent,
    SweepPlan,
    Trial,
    trial_state,
)

__all__ = [
    "RESULTS",
    "Sweep",
    "SweepEvent",
    "SweepFailedError",
    "SweepFileError",
    "SweepPlan",
    "Trial",
    "load_sweep_file",
    "plan_sweep",
    "results_rows",
    "run_sweep",
    "trial_status",
]


# The keys of ``[data]`` and ``[train]`` (DATA_KEYS, TRAIN_KEYS) are the settings that every
# trial shares (CompareSettings' fields), from the one declaration of the training settings.
TOP_KEYS = ("name", "plugins", "data", "train", "methods", "report", "resources")
REPORT_KEYS = ("best_by", "title")
#: Settings that describe how a run is shown, not what it learns (left out of a trial's hash).
COSMETIC = ("snapshot_every", "gif_frames", "download")


class SweepFileError(ParameterError):
    """A sweep file is malformed, or declares something that cannot be trained."""


# --------------------------------------------------------------------------- reading


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # the 3.10 fallback, a dependency there

    return tomli


def load_sweep_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """The parsed TOML of a sweep file and its text (a :class:`SweepFileError` if unreadable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepFileError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepFileError(f"{path}: cannot read it ({exc})") from None
    return _parse(text, str(path)), text


def _parse(text: str, where: str) -> dict[str, Any]:
    toml = _toml()
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise SweepFileError(f"{where}: not valid TOML: {exc}") from None


def _table(doc: Mapping[str, Any], key: str, allowed: Sequence[str], where: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise SweepFileError(f"{where}: [{key}] must be a table, got {_kind(value)}")
    for name in value:
        if name not in allowed:
            raise SweepFileError(
                f"{where}: unknown key {key}.{name} (allowed in [{key}]: {', '.join(allowed)})"
            )
    return value


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _axis(name: str, value: Any, where: str) -> list[Any]:
    """The values of one setting: a list is a grid axis, anything else a single value."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepFileError(f"{where}: {name} is an empty grid (give at least one value)")
    for v in values:
        if isinstance(v, (dict, list)):
            raise SweepFileError(
                f"{where}: {name}: expected a number, string or boolean (or a list of them), "
                f"got {_kind(v)}"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise SweepFileError(f"{where}: {name}: {v} is not a finite number")
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise SweepFileError(f"{where}: {name} lists a value twice: {values}")
    return values


# --------------------------------------------------------------------------- planning


def plan_sweep(
    source: str | os.PathLike[str] | Mapping[str, Any],
    out: str | os.PathLike[str] = "runs",
    *,
    name: str | None = None,
    download_progress: Any = None,
) -> SweepPlan:
    """Check a sweep (a file, or its parsed TOML as a mapping) and list its trials.

    Everything is checked here, before anything is trained: the TOML, its keys, every
    method and parameter (unknown ones list the known ones), every value (for the data's
    size; the data is loaded once per data set to know it), empty grids. ``name`` replaces
    the sweep's name (default: ``name`` in the file, else the file's name).
    """
    if isinstance(source, Mapping):
        doc, text, path, where = dict(source), None, None, "sweep"
    else:
        path = Path(source)
        doc, text = load_sweep_file(path)
        where = str(path)
    for key in doc:
        if key not in TOP_KEYS:
            raise SweepFileError(
                f"{where}: unknown key {key!r} (allowed at the top: {', '.join(TOP_KEYS)})"
            )
    sweep_name = name or doc.get("name") or (path.stem if path is not None else None)
    if not isinstance(sweep_name, str) or not _safe_name(sweep_name):
        raise SweepFileError(
            f"{where}: name must be a folder name (letters, digits, '-', '_', '.'), got "
            f"{sweep_name!r}"
        )
    plugins = doc.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise SweepFileError(f"{where}: plugins must be a list of import specs (strings)")
    plugin_specs = tuple(plugin_spec(p) for p in plugins)
    best_by, title = _report_options(doc, where)
    resources = _resources(doc, where)
    shared = _shared_axes(doc, where)
    blocks = _method_blocks(doc, where)
    dims = _data_dims(shared, where, download_progress)
    directory = Path(out) / sweep_name
    trials = _trials(blocks, shared, dims, plugin_specs, directory, where)
    return SweepPlan(
        name=sweep_name,
        trials=trials,
        plugins=plugin_specs,
        best_by=best_by,
        title=title,
        resources=resources,
        source=text,
        path=path,
    )


def _report_options(doc: Mapping[str, Any], where: str) -> tuple[str, str | None]:
    """``[report]``'s ``best_by`` and ``title``, checked."""
    report = _table(doc, "report", REPORT_KEYS, where)
    best_by = report.get("best_by", "fve")
    if best_by not in BEST_BY:
        raise SweepFileError(
            f"{where}: report.best_by must be one of {', '.join(BEST_BY)}, got {best_by!r}"
        )
    title = report.get("title")
    if title is not None and not isinstance(title, str):
        raise SweepFileError(f"{where}: report.title must be a string")
    return best_by, title


def _resources(doc: Mapping[str, Any], where: str) -> dict[str, float]:
    """``[resources]``: the Dask worker resources each trial needs."""
    resources = doc.get("resources", {})
    if not isinstance(resources, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        for v in resources.values()
    ):
        raise SweepFileError(
            f"{where}: resources must be a table of positive numbers, e.g. {{ GPU = 1 }}"
        )
    return {str(k): float(v) for k, v in resources.items()}


def _shared_axes(doc: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
    """``[data]`` and ``[train]``, each value as a grid axis."""
    data = _table(doc, "data", DATA_KEYS, where)
    train = _table(doc, "train", (*TRAIN_KEYS, *PER_METHOD_SETTINGS), where)
    shared: dict[str, list[Any]] = {}
    for key, value in data.items():
        shared[key] = _axis(f"data.{key}", value, where)
    for key, value in train.items():
        shared[key] = _axis(f"train.{key}", value, where)
    return shared


def _method_blocks(doc: Mapping[str, Any], where: str) -> list[tuple[str, str, dict[str, list]]]:
    """``(method, label, axes)`` for each ``[methods.X]`` table (each of ``[[methods.X]]``)."""
    methods = doc.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise SweepFileError(
            f"{where}: no methods: add a table per method, e.g. [methods.ksparse] with k = [10, 40]"
        )
    blocks: list[tuple[str, str, dict[str, list[Any]]]] = []
    for method, spec in methods.items():
        specs = spec if isinstance(spec, list) else [spec]
        if not specs or not all(isinstance(s, dict) for s in specs):
            raise SweepFileError(
                f"{where}: methods.{method} must be a table ([methods.{method}]) or tables "
                f"([[methods.{method}]]), got {_kind(spec)}"
            )
        for n, block in enumerate(specs):
            label = f"methods.{method}" + (f"[{n}]" if len(specs) > 1 else "")
            axes = {k: _axis(f"{label}.{k}", v, where) for k, v in block.items()}
            for key in axes:
                if key in DATA_KEYS:
                    raise SweepFileError(
                        f"{where}: {label}.{key}: the data is shared; set it in [data]"
                    )
            blocks.append((method, label, axes))
    return blocks


def _data_dims(
    shared: Mapping[str, list[Any]], where: str, download_progress: Any
) -> dict[str, int]:
    """The feature count of each data set the sweep names (each loaded once; downloaded if
    the file allows), by :func:`_data_key`."""
    dims: dict[str, int] = {}
    first = {k: v[0] for k, v in shared.items()}
    for values in itertools.product(*(shared.get(k, [None]) for k in DATA_KEYS)):
        chosen = {k: v for k, v in zip(DATA_KEYS, values, strict=True) if v is not None}
        settings = _settings({**first, **chosen}, where)
        key = _data_key(settings)
        if key not in dims:
            try:
                dims[key] = check_data(settings, download_progress)
            except SparsekitError as exc:
                raise type(exc)(f"{where}: data: {first_line(exc)}") from None
    return dims


def _trials(
    blocks: Sequence[tuple[str, str, dict[str, list[Any]]]],
    shared: Mapping[str, list[Any]],
    dims: Mapping[str, int],
    plugin_specs: tuple[str, ...],
    directory: Path,
    where: str,
) -> list[Trial]:
    """Every point of every method block's grid, planned and checked, once each."""
    trials: dict[str, Trial] = {}
    for method, label, axes in blocks:
        merged = {**shared, **axes}
        names = list(axes) + [k for k in shared if k not in axes]  # the method's own first
        varying = [k for k in names if len(merged[k]) > 1]
        for combo in itertools.product(*(merged[k] for k in names)):
            values = dict(zip(names, combo, strict=True))
            setting_values = {k: v for k, v in values.items() if k in DATA_KEYS + TRAIN_KEYS}
            params = {k: v for k, v in values.items() if k not in DATA_KEYS + TRAIN_KEYS}
            settings = _settings(setting_values, f"{where}: {label}")
            try:
                (job,) = plan_jobs(
                    [method],
                    settings,
                    {method: params},
                    plugin_specs,
                    directory,
                    dim=dims[_data_key(settings)],
                )
            except SparsekitError as exc:
                raise type(exc)(f"{where}: {label}: {first_line(exc)}") from None
            trial_id = _trial_id(job, {k: values[k] for k in varying})
            if trial_id not in trials:
                trials[trial_id] = Trial(
                    id=trial_id,
                    job=replace(job, run_dir=str(directory / trial_id), resume=True),
                    label={k: values[k] for k in varying},
                )
    return list(trials.values())


def _settings(values: Mapping[str, Any], where: str) -> CompareSettings:
    known = {f.name for f in fields(CompareSettings)}
    try:
        return CompareSettings(**{k: v for k, v in values.items() if k in known}).validate()
    except SparsekitError as exc:
        raise SweepFileError(f"{where}: {first_line(exc)}") from None


def _data_key(settings: CompareSettings) -> str:
    return json.dumps([settings.dataset, settings.data, settings.subset])


def _safe_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", name)) and name not in (".", "..")


def trial_hash(job: MethodJob) -> str:
    """Eight hex digits that identify what a trial learns (method, parameters, settings)."""
    settings = {k: v for k, v in asdict(job.settings).items() if k not in COSMETIC}
    blob = json.dumps(
        {"method": job.method, "params": job.params, "train": job.train, "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _trial_id(job: MethodJob, label: Mapping[str, Any]) -> str:
    parts = [job.method] + [f"{k}{_short(v)}" for k, v in label.items()]
    readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts)).strip(".")[:80]
    return f"{readable}-{trial_hash(job)}"


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return format(value, "g")
    return Path(str(value)).name if isinstance(value, str) and os.sep in value else str(value)


# --------------------------------------------------------------------------- state on disk


def trial_status(run_dir: str | Path) -> str:
    """The trial's state from its files: one of :data:`~sparsekit.studies.sweep_types.
    TRIAL_STATES` (``"finished"``, ``"partial"``, ``"failed"``, ``"not run"``)."""
    return trial_state(run_dir)


def _settle_summaries(plan: SweepPlan) -> None:
    """Write each trial's state into its run's summary.json, so that it agrees with
    results.csv and the report: a run stopped by Ctrl-C or a lost worker last wrote
    ``running`` there, and nothing else would correct it."""
    for trial in plan.trials:
        path = Path(trial.job.run_dir) / SUMMARY
        summary = read_json_or_none(path)
        if isinstance(summary, dict):
            state = trial_state(trial.job.run_dir)
            if summary.get("status") != state:
                write_json(path, {**summary, "status": state})


def _existing(directory: Path) -> dict[str, Path]:
    """Run directories already in the sweep directory, by trial hash (the name's last part)."""
    found: dict[str, Path] = {}
    if directory.is_dir():
        for child in sorted(directory.iterdir()):
            if child.is_dir() and "-" in child.name:
                found.setdefault(child.name.rsplit("-", 1)[1], child)
    return found


def _finished_result(trial: Trial) -> MethodResult:
    run_dir = Path(trial.job.run_dir)
    try:
        measures = json.loads((run_dir / MEASURES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        measures = {}
    seconds = measures.get("total_seconds") if isinstance(measures, dict) else None
    return MethodResult(
        method=trial.method,
        run_dir=str(run_dir),
        status="finished",
        measures=measures if isinstance(measures, dict) else {},
        seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
    )


# --------------------------------------------------------------------------- results


def results_rows(plan: SweepPlan, results: Mapping[str, MethodResult]) -> list[dict[str, Any]]:
    """One row per trial: its id, method, settings, parameters, final measures and status."""
    rows = []
    for trial in plan.trials:
        job = trial.job
        result = results.get(trial.id)
        config = read_json_or_none(Path(job.run_dir) / CONFIG) or {}
        train = {**job.train, **(config.get("train") or {})}
        row: dict[str, Any] = {
            "trial": trial.id,
            "method": trial.method,
            "status": trial_state(job.run_dir),
            "dataset": job.settings.dataset,
            "subset": job.settings.subset,
            "hidden": job.settings.hidden,
            "epochs": job.settings.epochs,
            "batch_size": job.settings.batch_size,
            "seed": job.settings.seed,
            "dtype": job.settings.dtype,
        }
        for key in PER_METHOD_SETTINGS:
            row[key] = train.get(key)
        for key, value in job.params.items():
            row[key if key not in row else f"param_{key}"] = value
        measures = result.measures if result else {}
        for column in COLUMNS:
            row[column.key] = measures.get(column.key)
        row["epochs_done"] = measures.get("epochs")
        row["seconds"] = round(result.seconds, 3) if result else None
        row["reason"] = (result.reason or "") if result else ""
        row["run_dir"] = Path(job.run_dir).name
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    # reason and run_dir last, whatever the parameters
    header = [k for k in header if k not in ("reason", "run_dir")] + ["reason", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n", restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def write_results(directory: Path, plan: SweepPlan, results: Mapping[str, MethodResult]) -> Path:
    """``results.csv`` of the sweep (atomically)."""
    path = directory / RESULTS
    write_atomic(path, _csv_text(results_rows(plan, results)).encode("utf-8"))
    return path


def _plan_json(plan: SweepPlan) -> dict[str, Any]:

    return {
        "name": plan.name,
        "plugins": list(plan.plugins),
        "best_by": plan.best_by,
        "trials": [
            {
                "trial": t.id,
                "method": t.method,
                "label": t.label,
                "params": t.job.params,
                "train": t.job.train,
                "settings": asdict(t.job.settings),
                "run_dir": Path(t.job.run_dir).name,
            }
            for t in plan.trials
        ],
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sparsekit_version": __version__,
    }


# --------------------------------------------------------------------------- running


def run_sweep(
    source: str | os.PathLike[str] | Mapping[str, Any] | SweepPlan,
    *,
    out: str | os.PathLike[str] = "runs",
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    on_event: Callable[[SweepEvent], None] | None = None,
    report: bool = True,
    name: str | None = None,
    download_progress: Any = None,
) -> Sweep:
    """Train every trial of a sweep that is not finished yet, on Dask; write the results.

    ``source`` is a sweep file, its parsed TOML, or a :class:`SweepPlan`. ``scheduler``
    None (or ``"local"``) starts a local Dask cluster of ``workers`` processes (default: one
    per CPU, no more than there are trials to train) running ``threads_per_worker`` trials
    each (default 1); ``"tcp://host:port"`` uses an existing cluster. Trials already
    finished in ``out/<name>`` are not trained again; those that stopped part way resume
    from their checkpoint. A trial that fails is recorded with its reason, the others go on.

    Raises :class:`SweepFileError` and friends for a bad sweep before anything runs, and
    :class:`~sparsekit.studies.executor.MissingDependencyError` without Dask distributed.
    """
    plan = (
        source
        if isinstance(source, SweepPlan)
        else plan_sweep(source, out, name=name, download_progress=download_progress)
    )
    check_scheduler(
        scheduler,
        workers=workers,
        threads_per_worker=threads_per_worker,
        feature="sparsekit sweep",
    )
    directory = Path(out) / plan.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {directory}: {exc.strerror or exc}") from None
    plan = _placed(plan, directory)
    if plan.source is not None:
        write_atomic(directory / SOURCE, plan.source.encode("utf-8"))
    write_json(directory / PLAN, _plan_json(plan))
    emit = on_event or (lambda event: None)
    results, skipped, todo = _sort_trials(plan)
    emit(
        SweepEvent(
            "planned",
            "",
            {
                "trials": len(plan.trials),
                "todo": list(todo),
                "skipped": len(skipped),
                "directory": str(directory),
            },
        )
    )
    dashboard = None
    try:
        if todo:
            cluster = {"workers": workers, "threads_per_worker": threads_per_worker}
            dashboard = _train_on_dask(todo, plan, scheduler, cluster, results, emit)
    finally:
        # Whatever happened (even Ctrl-C), results.csv says where every trial stands.
        with contextlib.suppress(Exception):
            write_results(directory, plan, results)
        with contextlib.suppress(Exception):
            _settle_summaries(plan)
    sweep = Sweep(
        directory=directory, plan=plan, results=results, skipped=skipped, dashboard=dashboard
    )
    write_results(directory, plan, results)
    if report:
        sweep.report = write_sweep_report(sweep)
    return sweep


def _placed(plan: SweepPlan, directory: Path) -> SweepPlan:
    """``plan`` with each trial's run directory in ``directory`` (a plan made for another
    ``out`` is placed here); a trial found under another readable name (the file changed)
    keeps its directory."""
    existing = _existing(directory)
    trials = []
    for trial in plan.trials:
        found = existing.get(trial.id.rsplit("-", 1)[1])
        name = found.name if found is not None else trial.id
        run_dir = str(directory / name)
        trials.append(replace(trial, id=name, job=replace(trial.job, run_dir=run_dir)))
    return replace(plan, trials=trials)


def _sort_trials(
    plan: SweepPlan,
) -> tuple[dict[str, MethodResult], list[str], dict[str, MethodJob]]:
    """(the results of finished trials, their ids, the jobs still to train): a trial to
    train gets its run directory, without the failure.json of an earlier attempt."""
    results: dict[str, MethodResult] = {}
    skipped: list[str] = []
    todo: dict[str, MethodJob] = {}
    for trial in plan.trials:
        run_dir = Path(trial.job.run_dir)
        if trial_state(run_dir) == FINISHED:
            results[trial.id] = _finished_result(trial)
            skipped.append(trial.id)
            continue
        run_dir.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / FAILURE).unlink()  # tried again: a new outcome
        todo[trial.id] = trial.job
    return results, skipped, todo


def _train_on_dask(
    todo: Mapping[str, MethodJob],
    plan: SweepPlan,
    scheduler: str | None,
    cluster: Mapping[str, int | None],
    results: dict[str, MethodResult],
    emit: Callable[[SweepEvent], None],
) -> str | None:
    """Train ``todo`` on Dask and add their results to ``results``; the dashboard's address
    (None when none is served)."""
    with DaskExecutor(scheduler, **cluster, max_workers=len(todo)) as executor:
        dashboard = executor.dashboard_link
        emit(
            SweepEvent(
                "cluster",
                "",
                {
                    "dashboard": dashboard,
                    "scheduler": executor.scheduler_address,
                    "workers": executor.n_workers,
                    "threads": executor.n_threads,
                    "env": dict(executor.worker_env),
                },
            )
        )
        results.update(
            executor.run(
                todo,
                on_event=lambda kind, key, data: emit(SweepEvent(kind, key, data)),
                resources=plan.resources or None,
            )
        )
    return dashboard


def summary_line(sweep: Sweep) -> str:
    """``"12 trials: 10 finished (4 already), 2 failed"``."""
    n = len(sweep.plan.trials)
    text = f"{n} trial{'s' if n != 1 else ''}: {len(sweep.finished)} finished"
    if sweep.skipped:
        text += f" ({len(sweep.skipped)} already)"
    if sweep.failed:
        text += f", {len(sweep.failed)} failed"
    missing = n - len(sweep.results)
    if missing:
        text += f", {missing} not run"
    return text
