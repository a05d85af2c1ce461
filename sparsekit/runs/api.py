"""Run directories from Python: train one, evaluate it, encode new data with it, resume it.

What ``sparsekit train``, ``sparsekit eval``, ``sparsekit encode`` and
``sparsekit train --resume`` do, as functions (the commands only parse their options, call
these and print)::

    import sparsekit
    run_dir = sparsekit.train_run("ksparse", "mnist", out="runs", epochs=10, k=25)
    result = sparsekit.evaluate_run("runs/ksparse-20250101-120000")     # eval.json's content
    codes = sparsekit.encode_run("runs/ksparse-20250101-120000", "test-images.npy")
    model = sparsekit.resume_run("runs/ksparse-20250101-120000", epochs=20)

A run trained with ``--remove-mean`` / ``--zca`` keeps its preprocessing parameters in
``preprocessing.npz`` (:func:`save_preprocessing`, :func:`read_preprocessing`); every
function here that feeds data to the run's model passes it through them first
(:func:`prepare_data`), so new data is transformed exactly as the training data was.
"""

from __future__ import annotations

import inspect
import io
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sparsekit.backend import get_backend
from sparsekit.data import Preprocessed, ground_truth, load_dataset, preprocess
from sparsekit.data.stream import is_folder_spec, stream_options, with_scale
from sparsekit.errors import CheckpointError, DataError, OutputError, ParameterError
from sparsekit.evaluation.measures import (
    PROBE_C,
    PROBE_MAX_ITER,
    PROBE_SAMPLES,
    code_mean_active,
    evaluate,
    linear_probe,
)
from sparsekit.evaluation.probe_cache import cached_probe_error, probe_key
from sparsekit.files import write_atomic, write_json
from sparsekit.layout import CHECKPOINT, EVAL_FILE, PREPROCESSING
from sparsekit.layout import CONFIG as CONFIG_FILE
from sparsekit.parallel import Communicator, LocalCommunicator, same_on_every_rank
from sparsekit.runs.preprocessing import read_preprocessing, save_preprocessing
from sparsekit.runs.restore import load_run, restore_trainer
from sparsekit.runs.writer import RunWriter, create_run_dir, read_config, read_metrics, summary
from sparsekit.training.checkpoint import load_checkpoint
from sparsekit.training.distributed import refusal
from sparsekit.training.settings import (
    POSITIVE_INT,
    POSITIVE_NUMBER,
    RUN_SETTINGS,
    TRAIN_CONFIG_SETTINGS,
    Setting,
    check_settings,
    check_value,
    resolve_config,
    settings_signature,
    split_settings,
)
from sparsekit.training.sharded import ShardedTrainer, sharding_refusal
from sparsekit.training.trainer import Trainer, as_dataset, make_method, world_communicator

if TYPE_CHECKING:
    from sparsekit.core.contract import Method
    from sparsekit.data.dataset import Dataset
    from sparsekit.data.download import ProgressCallback
    from sparsekit.training.model import Model
    from sparsekit.training.trainer import Callback

__all__ = [
    "EVAL_FILE",
    "PREPROCESSING",
    "encode_run",
    "evaluate_run",
    "prepare_data",
    "read_preprocessing",
    "resume_run",
    "resume_trainer",
    "run_directory",
    "run_summary",
    "save_preprocessing",
    "start_run",
    "StartedRun",
    "train_run",
]

PathLike = str | os.PathLike[str]


def run_directory(path: PathLike) -> Path:
    """``path`` as a run directory: a :class:`~sparsekit.errors.CheckpointError` when it is
    missing or not a folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such run directory")
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a run directory (expected a folder)")
    return p


def run_summary(run_dir: PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``sparsekit show`` prints: ``(summary, meta)`` of the run in ``run_dir``.

    ``summary`` is :func:`sparsekit.runs.writer.summary`'s (method, parameters, training settings,
    data, epochs done and planned, final measures, seconds); ``meta`` the checkpoint's
    metadata, or ``config.json`` for a run that stopped before its first checkpoint.
    """
    run_dir = run_directory(run_dir)
    if (run_dir / CHECKPOINT).exists():
        meta = load_checkpoint(run_dir)["meta"]
        history = meta["history"]
    else:  # a run that died before its first checkpoint: what config and metrics say
        meta = read_config(run_dir)
        history = read_metrics(run_dir)
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("method"), str)
            and isinstance(meta.get("method_params"), dict)
            and isinstance(meta.get("train"), dict)
        ):
            raise CheckpointError(f"{run_dir}: no {CHECKPOINT} and {CONFIG_FILE} is incomplete")
    return summary(meta, history, status=""), meta


def prepare_data(
    run_dir: PathLike, dataset: Any, *, model: Model | None = None, name: str | None = None
) -> Dataset:
    """``dataset`` (a Dataset or an array) as the model of ``run_dir`` reads it.

    The data must have the model's number of features (a
    :class:`~sparsekit.errors.DataError` names both, and the data as ``name`` or its own
    name, otherwise); the run's stored preprocessing, if any, is applied. ``model`` saves
    loading the run again.
    """
    dataset = as_dataset(dataset)
    if model is None:
        model = load_run(run_dir)
    if dataset.dim != model.dim:
        raise DataError(
            f"{name or dataset.name}: samples have {dataset.dim} features, the model of {run_dir} "
            f"expects {model.dim}"
        )
    # a --norm-scale run's inputs are scaled by the factor estimated when it started
    scale = read_config(run_directory(run_dir)).get("data", {}).get("scale", 1.0)
    dataset = with_scale(dataset, float(scale))
    stored = read_preprocessing(run_dir)
    return Preprocessed.from_dict(dataset, stored) if stored is not None else dataset


# --------------------------------------------------------------------------- encode


def encode_run(
    run_dir: PathLike,
    data: Any,
    *,
    data_dir: PathLike | None = None,
    split: str | None = None,
    subset: int | None = None,
    download: bool = False,
    training: bool = False,
    output: PathLike | None = None,
    sparse: bool = False,
) -> Any:
    """The codes (N × hidden) of ``data`` under the model of ``run_dir``.

    ``data`` is what ``--dataset`` takes (``"mnist"``, ``"fashion-mnist"``, a ``.npy`` /
    ``.npz`` / IDX file; ``data_dir``, ``split``, ``subset`` and ``download`` as for
    :func:`~sparsekit.data.load_dataset`), an array or a Dataset. The run's preprocessing is
    applied first (:func:`prepare_data`). ``training`` uses the training-time support
    instead of the encoding one (e.g. αk for k-sparse). With ``output`` (a ``.npy`` name) the
    codes are also written there, atomically.

    ``sparse`` returns a :class:`scipy.sparse.csr_matrix` instead of a dense array, and
    writes ``output`` (then a ``.npz`` name) with :func:`scipy.sparse.save_npz`: a k-sparse
    code of 16 nonzeros in 1024 units takes about 1/40 of the dense file.
    """
    run_dir = run_directory(run_dir)
    suffix = ".npz" if sparse else ".npy"
    if output is not None and Path(output).suffix.lower() != suffix:
        kind = "sparse codes are written as .npz" if sparse else "the codes are written as .npy"
        raise ParameterError(f"{output}: {kind}; name the file *{suffix}")
    model = load_run(run_dir)
    name = None
    if isinstance(data, (str, os.PathLike)):
        name = os.fspath(data)  # errors name the data as the caller gave it
        data = load_dataset(name, data_dir, split=split, subset=subset, download=download)
    dataset = prepare_data(run_dir, data, model=model, name=name)
    codes = model.encode(dataset, training=training)
    if sparse:
        # The codes are NumPy arrays; the CPU backend's sparse module is scipy.sparse.
        scipy_sparse = get_backend().sparse
        codes = scipy_sparse.csr_matrix(codes)
    if output is not None:
        buffer = io.BytesIO()
        if sparse:
            scipy_sparse.save_npz(buffer, codes)
        else:
            np.save(buffer, codes, allow_pickle=False)
        write_atomic(_output_path(output), buffer.getvalue())
    return codes


def _output_path(output: PathLike) -> Path:
    """``output`` as a path whose folder exists (an :class:`OutputError` if it cannot)."""
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {output.parent}: {exc.strerror or exc}") from None
    return output


# --------------------------------------------------------------------------- evaluate


def _load_split(spec: dict[str, Any], data: PathLike | None, split: str, subset: int | None) -> Any:

    name = spec.get("spec")
    if not name:
        raise CheckpointError(
            "the run was trained on data given in memory; it does not say which data to evaluate on"
        )
    folder = data if data is not None else spec.get("data")
    # Runs from before --test-fraction held out the 10% that is still its default.
    fraction = spec.get("test_fraction", 0.1)
    return load_dataset(
        name,
        folder,
        split=split,
        subset=subset,
        download=False,
        test_fraction=fraction,
        **stream_options(spec),
    )


#: The phases of :func:`evaluate_run`, in order, as it reports them to ``progress`` (the
#: encoding and the two probes only on labelled data, the pixel probe only with ``raw``).
EVAL_PHASES = ("loading", "encoding", "measures", "pixel probe", "code probe")

#: ``progress(phase, detail)`` of :func:`evaluate_run`: called as each phase of
#: :data:`EVAL_PHASES` starts; ``detail`` says what it works on (may be empty).
EvalProgress = Callable[[str, str], None]


def _no_progress(phase: str, detail: str) -> None:
    """The default ``progress`` of :func:`evaluate_run`: reports nothing."""


def evaluate_run(
    run_dir: PathLike,
    *,
    data: PathLike | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    raw: bool = True,
    C: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
    training_code: bool = False,
    output: PathLike | None = None,
    full_probe: bool = False,
    cache: bool = True,
    progress: EvalProgress | None = None,
) -> dict[str, Any]:
    """Measures and linear-probe errors of the run in ``run_dir`` (what ``sparsekit eval``
    prints and writes to ``eval.json``).

    On the run's test split (``data`` replaces the stored data folder; ``test_subset`` takes
    the first N test samples): reconstruction MSE, variance explained, L0 of the training
    code (``test["mean_active"]``) and of the encoding code (``encoding_mean_active``), dead
    and dense units, shrinkage, coherence, and the MCC against the true dictionary when the
    data has one. With labels, a multinomial logistic regression
    (:func:`sparsekit.evaluation.measures.linear_probe`, ``C``, ``max_iter``) is trained on
    the codes of the training split and its test error reported, beside the same probe on
    the raw inputs when ``raw``. The probe fits on the first
    :data:`~sparsekit.evaluation.measures.PROBE_SAMPLES` training samples (``subset``: the
    first N; ``full_probe``: the whole split), which ``probe["train_samples"]`` states.
    With ``cache`` the raw-input error is kept in the user cache directory
    (:mod:`sparsekit.evaluation.probe_cache`): it depends only on the data and the probe.
    ``training_code`` probes the training-time code instead of the encoding one. The run's
    preprocessing is applied to both splits. ``progress(phase, detail)`` is told as each
    phase of :data:`EVAL_PHASES` starts. With ``output`` the result is also written there
    as JSON, atomically.
    """
    for flag, value in (("--subset", subset), ("--test-subset", test_subset)):
        if value is not None:
            check_value(flag, value, POSITIVE_INT)
    check_value("--C", C, POSITIVE_NUMBER)
    check_value("--max-iter", max_iter, POSITIVE_INT)
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    report = progress or _no_progress
    report("loading", str(run_dir))
    run_dir = Path(run_dir)
    model = load_run(run_dir)
    spec = (getattr(model, "run_meta", {}) or {}).get("data_spec") or {}
    train_raw, test_raw, train_set, test_set = _eval_splits(
        run_dir, model, spec, data, (subset, test_subset)
    )
    n_probe = len(train_set) if full_probe or subset is not None else PROBE_SAMPLES
    n_probe = min(n_probe, len(train_set))
    result: dict[str, Any] = {
        "run": str(run_dir),
        "method": model.method.name,
        "method_params": model.method.get_params(),
        "n_train": n_probe,
        "n_test": len(test_set),
        "images": test_raw.image_shape is not None,
    }
    truth = ground_truth(str(spec.get("spec", "")))  # None unless the data has one
    start = time.perf_counter()
    splits = _ProbeSplits(train_raw, test_raw, train_set, test_set, n_probe)
    labelled = train_raw.labels is not None and test_raw.labels is not None
    codes = _encode_splits(model, splits, training_code, report) if labelled else None
    report("measures", f"{len(test_set)} test samples")
    result["test"] = evaluate(model, test_set, truth=truth)
    result["encoding_mean_active"] = code_mean_active(model, test_set, training=False)
    if codes is None:
        result["probe"] = None
        result["note"] = f"{train_raw.name} has no labels: no linear probe"
    else:
        settings = _ProbeSettings(C, max_iter, raw, training_code, cache)
        result["probe"] = _probe(splits, codes, settings, report)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if output is not None:
        write_json(_output_path(output), result)
    return result


def _eval_splits(
    run_dir: Path,
    model: Model,
    spec: dict[str, Any],
    data: PathLike | None,
    subsets: tuple[int | None, int | None],
) -> tuple[Dataset, Dataset, Dataset, Dataset]:
    """:func:`evaluate_run`'s data: (train raw, test raw, train prepared, test prepared)."""
    train_raw = _load_split(spec, data, "train", subsets[0])
    test_raw = _load_split(spec, data, "test", subsets[1])
    train_set = prepare_data(run_dir, train_raw, model=model)
    test_set = prepare_data(run_dir, test_raw, model=model)
    return train_raw, test_raw, train_set, test_set


class _ProbeSplits(NamedTuple):
    """The data of :func:`evaluate_run`'s probe: the raw and prepared splits, and how many
    of the first training samples the probe fits on."""

    train_raw: Dataset
    test_raw: Dataset
    train_set: Dataset
    test_set: Dataset
    n_probe: int


class _ProbeSettings(NamedTuple):
    """:func:`evaluate_run`'s probe options."""

    C: float
    max_iter: int
    raw: bool
    training_code: bool
    cache: bool


def _encode_splits(
    model: Model, splits: _ProbeSplits, training_code: bool, report: EvalProgress
) -> tuple[np.ndarray, np.ndarray]:
    """The codes the probe fits on (the first ``n_probe`` training samples) and tests on."""
    n = splits.n_probe
    report("encoding", f"{n} training and {len(splits.test_set)} test samples")
    # The first n rows as the model reads them: Model.encode of a Dataset takes its rows
    # the same way, so these codes equal the first n of encoding the whole split.
    head = splits.train_set.take(np.arange(n), model.backend.dtype)
    codes_train = model.encode(head, training=training_code)
    codes_test = model.encode(splits.test_set, training=training_code)
    return codes_train, codes_test


def _probe(
    splits: _ProbeSplits,
    codes: tuple[np.ndarray, np.ndarray],
    settings: _ProbeSettings,
    report: EvalProgress,
) -> dict[str, Any]:
    """:func:`evaluate_run`'s linear probe: on the codes of the prepared splits, and on the
    raw ones when ``settings.raw`` (its error from the probe cache when ``settings.cache``)."""
    n = splits.n_probe
    labels_train, labels_test = splits.train_raw.labels[:n], splits.test_raw.labels
    fit = {"C": settings.C, "max_iter": settings.max_iter}
    probe: dict[str, Any] = {
        **fit,
        "solver": "lbfgs",
        "standardize": True,
        "code": "training" if settings.training_code else "encoding",
        "train_samples": n,
        "train_samples_available": len(splits.train_set),
    }
    if settings.raw:
        report("pixel probe", f"{n} training samples, C {settings.C}")
        t0 = time.perf_counter()
        x_train = splits.train_raw.take(np.arange(n))
        x_test = splits.test_raw.to_array()
        arrays = (x_train, labels_train, x_test, labels_test)
        error, cached = _raw_probe_error(arrays, fit, settings.cache)
        probe["raw_pixels_error"] = error
        probe["raw_pixels_cached"] = cached
        probe["raw_pixels_seconds"] = round(time.perf_counter() - t0, 2)
    report("code probe", f"{n} training samples, C {settings.C}")
    t0 = time.perf_counter()
    probe["codes_error"] = linear_probe(codes[0], labels_train, codes[1], labels_test, **fit)
    probe["codes_seconds"] = round(time.perf_counter() - t0, 2)
    return probe


def _raw_probe_error(
    arrays: tuple[np.ndarray, ...], fit: dict[str, Any], cache: bool
) -> tuple[float, bool]:
    """The probe error on raw inputs and whether it came from the probe cache."""
    def run() -> float:
        return float(linear_probe(*arrays, **fit))

    if not cache:
        return run(), False
    key = probe_key(arrays, {**fit, "solver": "lbfgs", "standardize": True, "tol": 1e-4})
    return cached_probe_error(key, run)


# --------------------------------------------------------------------------- train


class StartedRun(NamedTuple):
    """A new run directory and the trainer that fills it (:func:`start_run`)."""

    trainer: Trainer
    run_dir: Path


def _run_default(setting: Setting) -> Any:
    """A setting's default in :func:`start_run`: ``None`` (the method's) when tunable."""
    return None if setting.tunable else setting.default


def start_run(
    method: str | Method | type[Method],
    dataset: PathLike = "mnist",
    *,
    callbacks: Sequence[Callback] = (),
    progress: ProgressCallback | None = None,
    registry: Any = None,
    distributed: bool | Communicator = False,
    check_replicas: bool = False,
    shard_latents: bool = False,
    **settings: Any,
) -> StartedRun:
    """Load the data, create ``out/<method>-<date>-<time>`` and return it with a
    :class:`~sparsekit.training.trainer.Trainer` that writes the run there; call ``.fit()`` on it.

    What ``sparsekit train`` does before its first step, with the same settings and
    defaults (the ``run`` settings of :data:`sparsekit.training.settings.SETTINGS`; other
    keywords are the method's own parameters): ``dataset`` is a
    :func:`~sparsekit.data.load_dataset` spec (``"mnist"``, a ``.npy`` file, ...) read from
    ``data`` (downloaded when missing and ``download``), cut to ``subset`` samples, then
    mean-removed / ZCA-whitened (the parameters stored in the run directory, so
    :func:`encode_run` and :func:`evaluate_run` apply them to new data). The run keeps how
    to load its data again, so :func:`resume_run` can continue it. The trainer's callbacks
    are the run's :class:`~sparsekit.runs.writer.RunWriter`, then ``callbacks``;
    ``progress`` reports a download. Settings are checked before any data is read, and no
    directory is created for a run that cannot start.

    ``distributed`` trains data-parallel over MPI's ranks (``mpiexec -n N``; or a
    :class:`~sparsekit.parallel.Communicator`): every rank calls ``start_run`` with the same
    arguments, rank 0 creates and writes the run directory (its path is broadcast, so every
    rank returns it), the others write nothing; ``check_replicas`` compares the ranks'
    weights after every epoch (``docs/distributed.md``).

    ``shard_latents`` (with ``distributed``) keeps H/N latents on each rank instead of the
    whole model (:mod:`sparsekit.training.sharded`; ksparse, and topk with ``aux_coef=0``):
    every rank reads whole batches; after every epoch the whole model and optimizer state are
    gathered to rank 0, which writes the run directory and checkpoint as above (the saved
    model is an ordinary one), and :func:`resume_trainer` continues it sharded.
    """
    comm = world_communicator(distributed)
    _check_parallel_flags(comm, shard_latents, check_replicas)
    instance, config, values = _checked_run(
        method, dataset, registry, comm, shard_latents, settings
    )
    # no CUDA: a clear error, before the data
    backend = get_backend(config.gpu, config.dtype, config.matmul_precision)
    train_set = _training_data(dataset, values, progress)
    instance.validate(config.hidden, train_set.dim)
    writes = comm is None or comm.rank == 0  # data parallel: rank 0 alone writes the run
    if writes:
        run_dir = create_run_dir(values["out"], instance.name)
        if isinstance(train_set, Preprocessed):
            save_preprocessing(run_dir, train_set)
        writer = RunWriter(
            run_dir,
            data_spec=_data_spec(values),
            snapshot_every=values["snapshot_every"],
            checkpoint_every=values["checkpoint_every"],
        )
        callbacks = [writer, *callbacks]
    if comm is not None:
        run_dir = Path(comm.broadcast(str(run_dir) if writes else None))
    if shard_latents:
        assert comm is not None
        trainer: Trainer = ShardedTrainer(
            instance, train_set, config, callbacks=callbacks, backend=backend, shards=comm
        )
    else:
        trainer = Trainer(
            instance, train_set, config, callbacks=callbacks, backend=backend, comm=comm,
            check_replicas=check_replicas,
        )  # fmt: skip
    return StartedRun(trainer, run_dir)


start_run.__signature__ = settings_signature(  # type: ignore[attr-defined]
    start_run, RUN_SETTINGS, _run_default, keep_var_keyword="method_params"
)


def _check_parallel_flags(comm: Any, shard_latents: bool, check_replicas: bool) -> None:
    """--shard-latents needs the ranks of --distributed, and is no place for
    --check-replicas (each rank holds different latents)."""
    if shard_latents and comm is None:
        raise ParameterError(
            "--shard-latents shards the latents over the ranks of --distributed: add it"
        )
    if shard_latents and check_replicas:
        raise ParameterError(
            "--check-replicas compares whole models; with --shard-latents each rank holds "
            "different latents: drop it"
        )


def _checked_run(
    method: Any,
    dataset: PathLike,
    registry: Any,
    comm: Communicator | None,
    shard_latents: bool,
    settings: dict[str, Any],
) -> tuple[Any, Any, dict[str, Any]]:
    """The method, its training config and the run settings of :func:`start_run`, checked
    (the same on every rank) before any data is read or downloaded."""
    with same_on_every_rank(comm):  # every rank has the same arguments
        given, method_params = split_settings(settings, RUN_SETTINGS)
        values = {s.name: _run_default(s) for s in RUN_SETTINGS}
        values.update(given, dataset=dataset)
        check_settings(values)
        instance = make_method(method, registry, **method_params)
        config = resolve_config(
            instance, **{s.name: values[s.name] for s in TRAIN_CONFIG_SETTINGS}
        )
        instance.validate(config.hidden)
        if shard_latents and (refused := sharding_refusal(instance)):
            raise ParameterError(refused)
        if comm is not None and not shard_latents and (
            refused := refusal(instance, instance.upkeep())
        ):
            raise ParameterError(refused)
    return instance, config, values


def _training_data(
    dataset: PathLike, values: dict[str, Any], progress: ProgressCallback | None
) -> Dataset:
    """The training split of ``dataset`` as the run settings ``values`` ask: loaded (or
    streamed), cut to ``subset``, mean-removed / ZCA-whitened."""
    train_set = load_dataset(
        dataset,
        values["data"],
        split="train",
        subset=values["subset"],
        download=values["download"],
        test_fraction=values["test_fraction"],
        progress=progress,
        **stream_options(values),
    )
    if (values["remove_mean"] or values["zca"]) and train_set.streamed:
        raise ParameterError(
            f"{dataset}: --remove-mean and --zca need the data in memory; a shard folder is "
            "streamed (use --center or --norm-scale)"
        )
    if values["remove_mean"] or values["zca"]:
        train_set = preprocess(
            train_set, remove_mean=values["remove_mean"], zca=values["zca"], seed=values["seed"]
        )
    return train_set


def _data_spec(values: dict[str, Any]) -> dict[str, Any]:
    """How the run reloads its data (stored in its config and checkpoint)."""
    dataset, data = values["dataset"], values["data"]
    return {
        "spec": str(Path(dataset).resolve()) if Path(dataset).exists() else str(dataset),
        "data": str(Path(data).resolve()) if data is not None else None,
        "split": "train",
        "subset": values["subset"],
        "test_fraction": values["test_fraction"],
        # a shard folder's streaming settings (a run on anything else is read as before)
        **(stream_options(values) if is_folder_spec(dataset) else {}),
        "download": values["download"],
        "remove_mean": values["remove_mean"],
        "zca": values["zca"],
        "seed": values["seed"],
    }


def train_run(
    method: str | Method | type[Method], dataset: PathLike = "mnist", **settings: Any
) -> Path:
    """Train ``method`` into a new run directory and return its path: ``sparsekit train`` as
    a function. ``settings`` are :func:`start_run`'s (``out``, ``epochs``, ``hidden``, the
    method's own parameters such as ``k``...). The directory then serves
    :func:`evaluate_run`, :func:`encode_run`, :func:`resume_run` and
    :func:`sparsekit.load_run`.
    """
    trainer, run_dir = start_run(method, dataset, **settings)
    trainer.fit()
    return run_dir


train_run.__signature__ = inspect.signature(start_run).replace(  # type: ignore[attr-defined]
    return_annotation=Path
)


# --------------------------------------------------------------------------- resume


def resume_trainer(
    run_dir: PathLike,
    *,
    epochs: int | None = None,
    data: PathLike | None = None,
    download: bool | None = None,
    snapshot_every: int | None = None,
    checkpoint_every: int | None = None,
    callbacks: Sequence[Callback] = (),
    distributed: bool | Communicator = False,
    check_replicas: bool = False,
) -> Trainer:
    """A :class:`~sparsekit.training.trainer.Trainer` that continues the run in ``run_dir`` from its
    checkpoint, writing into the same directory; call ``.fit()`` on it.

    Only the length may change: ``epochs`` raises the number of epochs to train to (never
    below those done), ``data`` replaces the data folder, ``download`` the stored download
    choice; ``snapshot_every`` and ``checkpoint_every`` default to the run's own. The
    trainer's callbacks are the run's :class:`~sparsekit.runs.writer.RunWriter`, then ``callbacks``.
    On the CPU the result is bit for bit that of a run never interrupted.

    ``distributed`` continues data-parallel (as :func:`start_run`'s; rank 0 alone writes):
    with the number of ranks the checkpoint was written by, bit for bit the uninterrupted
    run; with another number, the same model to float rounding, and a warning says so.
    A run trained with ``shard_latents`` continues sharded over the ranks of
    ``distributed`` (one process: one shard), with the same guarantees.
    """
    run_dir = run_directory(run_dir)
    run_config = read_config(run_dir)
    stored = run_config.get("run", {})
    given = {"snapshot_every": snapshot_every, "checkpoint_every": checkpoint_every}
    check_settings({k: v for k, v in given.items() if v is not None})
    comm = world_communicator(distributed)
    sharded = bool(run_config.get("shard_latents"))
    if sharded and check_replicas:
        raise ParameterError(
            f"{run_dir} has its latents sharded: each rank holds different latents, "
            "--check-replicas has no replicas to compare"
        )
    trainer = restore_trainer(
        run_dir, epochs=epochs, data=data, download=download,
        comm=None if sharded else comm,
        shards=(comm or LocalCommunicator()) if sharded else None,
    )  # fmt: skip

    ranks = int(np.ravel(trainer.checkpoint_extra.get("ranks", 1))[0])
    now = 1 if comm is None else comm.size
    if ranks != now and (comm is None or comm.rank == 0):
        warnings.warn(
            f"{run_dir}: trained on {ranks} rank{'s' if ranks > 1 else ''}, continued on {now}:"
            " the same model to float rounding, not bit for bit",
            UserWarning,
            stacklevel=2,
        )
    if comm is None or comm.rank == 0:
        writer = RunWriter(
            run_dir,
            snapshot_every=snapshot_every or int(stored.get("snapshot_every", 1)),
            checkpoint_every=checkpoint_every or int(stored.get("checkpoint_every", 1)),
            max_frames=int(stored.get("max_frames", 60)),
        )
        callbacks = [writer, *callbacks]
    trainer.callbacks = list(callbacks)
    return trainer


def resume_run(
    run_dir: PathLike,
    *,
    epochs: int | None = None,
    data: PathLike | None = None,
    download: bool | None = None,
    snapshot_every: int | None = None,
    checkpoint_every: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> Model:
    """Continue the run in ``run_dir`` (see :func:`resume_trainer`) to its last epoch and
    return the trained :class:`~sparsekit.training.model.Model`; the run directory is updated as
    ``sparsekit train --resume`` updates it. A run that has all its epochs is returned as is.
    """
    trainer = resume_trainer(
        run_dir,
        epochs=epochs,
        data=data,
        download=download,
        snapshot_every=snapshot_every,
        checkpoint_every=checkpoint_every,
        callbacks=callbacks,
    )
    if trainer.epoch >= trainer.config.epochs:
        return trainer.model
    return trainer.fit()
