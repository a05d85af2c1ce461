"""Restoring from a run directory: its data, a trainer in the checkpoint's state, its model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparsekit.backend import Backend, get_backend
from sparsekit.data import Preprocessed, load_dataset, preprocess
from sparsekit.data.dataset import Dataset
from sparsekit.data.shards import check_manifest
from sparsekit.data.stream import stream_options
from sparsekit.errors import CheckpointError, ParameterError, SparsekitError
from sparsekit.files import first_line
from sparsekit.layout import CONFIG, MANIFEST, PREPROCESSING
from sparsekit.runs.preprocessing import read_preprocessing
from sparsekit.training.checkpoint import load_checkpoint
from sparsekit.training.model import Model
from sparsekit.training.settings import TrainConfig
from sparsekit.training.sharded import ShardedTrainer
from sparsekit.training.trainer import Callback, Trainer, as_dataset


def load_dataset_from_spec(
    spec: Mapping[str, Any] | None,
    *,
    data: str | os.PathLike[str] | None = None,
    where: str = "run",
    preprocessing: str | os.PathLike[str] | None = None,
    download: bool | None = None,
) -> Dataset:
    """The training data a run describes with its ``data_spec``.

    ``data`` replaces the stored data folder and ``download`` the stored download choice.
    """
    if not spec or not spec.get("spec"):
        raise CheckpointError(
            f"{where}: the run was trained on data given in memory; pass the data set "
            "(restore_trainer(..., dataset=...))"
        )
    folder = data if data is not None else spec.get("data")
    dataset = load_dataset(
        spec["spec"],
        folder,
        split=spec.get("split"),
        subset=spec.get("subset"),
        download=bool(spec.get("download", False)) if download is None else download,
        test_fraction=spec.get("test_fraction", 0.1),  # older runs: the 10% of then
        **stream_options(spec),
    )
    if spec.get("remove_mean") or spec.get("zca"):
        stored = read_preprocessing(preprocessing) if preprocessing is not None else None
        if stored is not None:
            dataset = Preprocessed.from_dict(dataset, stored)
        else:
            dataset = preprocess(
                dataset,
                remove_mean=bool(spec.get("remove_mean")),
                zca=bool(spec.get("zca")),
                seed=int(spec.get("seed", 0)),
            )
    return dataset


def check_belongs_to_run(path: Path, meta: Mapping[str, Any]) -> None:
    """A checkpoint next to a ``config.json`` must be that run's: same method, parameters
    and model shape (a checkpoint copied from another run would continue the wrong run)."""
    config_path = path.parent / CONFIG
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # a checkpoint file on its own
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable ({first_line(exc)})") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{config_path}: not a run configuration")
    run_method, ckpt_method = stored.get("method"), meta["method"]
    if run_method != ckpt_method:
        raise CheckpointError(
            f"{path}: a checkpoint of method {ckpt_method!r}, but {path.parent} is a run of "
            f"{run_method!r} ({CONFIG}); the checkpoint belongs to another run"
        )
    if stored.get("method_params") != meta["method_params"]:
        raise CheckpointError(
            f"{path}: {ckpt_method} parameters {meta['method_params']} differ from the run's "
            f"{stored.get('method_params')} ({CONFIG}); the checkpoint belongs to another run"
        )
    train = stored.get("train") if isinstance(stored.get("train"), dict) else {}
    for key in ("hidden", "tied", "dtype"):
        if key in train and train[key] != meta["train"].get(key):
            raise CheckpointError(
                f"{path}: {key} {meta['train'].get(key)!r} differs from the run's {train[key]!r} "
                f"({CONFIG}); the checkpoint belongs to another run"
            )


def restore_trainer(
    location: str | os.PathLike[str],
    dataset: Any = None,
    registry: Any = None,
    *,
    epochs: int | None = None,
    data: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    callbacks: Sequence[Callback] = (),
    backend: Backend | None = None,
    comm: Any = None,
    shards: Any = None,
) -> Trainer:
    """A :class:`~sparsekit.training.trainer.Trainer` in exactly the state of a checkpoint.

    ``location`` is a run directory or a checkpoint file. Without ``dataset`` the training
    data is loaded again as the run describes it (``data`` replaces the data folder). The
    data must have the size the checkpoint was trained on. ``epochs`` raises (or lowers, not
    below the epochs done) the number of epochs
    :meth:`~sparsekit.training.trainer.Trainer.fit` trains to. On the CPU, fitting the restored trainer gives bit for bit the weights of a run that
    was never interrupted (with the same total number of epochs). ``backend`` replaces the
    one the run's settings name (e.g. the simulated device of
    :mod:`sparsekit.backend.simulated`). ``comm`` continues data-parallel (every rank
    restores the same checkpoint; see :func:`sparsekit.runs.api.resume_trainer`). ``shards``
    (a communicator, instead of ``comm``) continues with the latents sharded over its ranks
    (a :class:`~sparsekit.training.sharded.ShardedTrainer`).
    """
    ckpt = load_checkpoint(location, registry=registry)
    path: Path = ckpt["path"]
    meta = ckpt["meta"]
    check_belongs_to_run(path, meta)
    config: TrainConfig = ckpt["config"]
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ParameterError(f"epochs must be a positive integer, got {epochs!r}")
        if epochs < meta["epoch"]:
            raise ParameterError(
                f"the run has already trained {meta['epoch']} epochs; --epochs {epochs} is fewer"
            )
        config = TrainConfig.from_dict({**config.to_dict(), "epochs": epochs})
    if dataset is None:
        dataset = load_dataset_from_spec(
            meta.get("data_spec"),
            data=data,
            where=str(path),
            preprocessing=path.parent / PREPROCESSING,
            download=download,
        )
    dataset = as_dataset(dataset)
    manifest = dataset.manifest()
    if manifest is not None and (path.parent / MANIFEST).is_file():
        try:
            read = json.loads((path.parent / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path.parent / MANIFEST}: unreadable ({first_line(exc)})") from None
        check_manifest(manifest, read)
    stored = meta["data"]
    if len(dataset) != stored.get("n") or dataset.dim != stored.get("dim"):
        raise CheckpointError(
            f"{path}: the data has {len(dataset)} samples of {dataset.dim} features but the run "
            f"was trained on {stored.get('n')} of {stored.get('dim')}"
        )
    try:
        if shards is not None:
            trainer: Trainer = ShardedTrainer(
                ckpt["method"], dataset, config, callbacks=callbacks, backend=backend,
                shards=shards,
            )  # fmt: skip
        else:
            trainer = Trainer(
                ckpt["method"], dataset, config, callbacks=callbacks, backend=backend, comm=comm
            )
        trainer.load_state_dict(ckpt["state"])
    except SparsekitError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot restore the trainer: {first_line(exc)}") from None
    trainer.data_spec = meta.get("data_spec")
    trainer.checkpoint_extra = ckpt["extra"]
    return trainer


def load_run(
    location: str | os.PathLike[str],
    *,
    registry: Any = None,
    gpu: bool = False,
    backend: Backend | None = None,
) -> Model:
    """The trained :class:`~sparsekit.training.model.Model` of a run directory (or checkpoint file).

    The model has the run's ``image_shape`` and, for methods with a schedule (k-sparse's k),
    the state of the last epoch trained. Arrays live on the CPU unless ``gpu`` is true (or
    on ``backend``, when given).
    """
    ckpt = load_checkpoint(location, registry=registry)
    meta, config, method = ckpt["meta"], ckpt["config"], ckpt["method"]
    method.load_state_dict(ckpt["state"]["method_state"])
    if meta["epoch"] > 0:
        method.on_epoch_start(meta["epoch"] - 1, config.epochs)
    if backend is None:
        backend = get_backend(gpu, config.dtype)
    params = {k: backend.asarray(v) for k, v in ckpt["state"]["params"].items()}
    shape = meta["data"].get("image_shape")
    image_shape = (int(shape[0]), int(shape[1])) if shape else None
    model = Model(
        method, params, backend, image_shape=image_shape, input_mean=ckpt["state"]["input_mean"]
    )
    model.run_meta = meta
    return model
