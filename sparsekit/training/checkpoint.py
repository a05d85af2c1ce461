"""Checkpoints: everything a run needs to continue exactly, in one ``.npz`` file, no pickle.

A checkpoint is a NumPy ``.npz`` archive written with :func:`numpy.savez` and read with
``numpy.load(..., allow_pickle=False)``. Its members are plain numeric arrays:

=========================  ===============================================================
``meta``                   UTF-8 JSON as ``uint8``: format version, sparsekit version,
                           method name and parameters, the training configuration, the data
                           description (and how to load it again), the epoch, the per-epoch
                           history, the shuffle generator's ``bit_generator.state``, the
                           batch plan's position (a streamed folder: the epoch's seed and
                           the next step), the
                           optimizer's step count and the method's scalar state
``params/<name>``          the parameters (``W_enc``, ``b_enc``, ``b_dec``, ``W_dec``)
``optimizer/<name>``       the optimizer's moment / velocity arrays (gradient methods)
``method/<name>``          array state a method returns from ``state_dict()`` (rare)
``upkeep/<name>``          the trainer's upkeep arrays (samples since each unit fired); its
                           scalars (step count, resampling generator) are in ``meta``
``variance/<name>``        the data variance accumulator behind "fve" (``mean``, ``m2``,
                           float64; its count is ``meta["data_variance_n"]``), so that a
                           resumed epoch's fve is that of the uninterrupted run; absent in
                           checkpoints written before the first epoch ended, or by older
                           sparsekit (those still load: the next epoch measures it again)
``extra/<name>``           what the run directory keeps for its figures (held-out images)
=========================  ===============================================================

Files are written to a temporary file in the same folder, flushed to disk and renamed over
the old checkpoint, so a crash leaves either the old or the new checkpoint, never half of one.

Loading checks the file before anything uses it: a corrupt or truncated archive, a member
that needs pickle (an object array), a missing array, an array of the wrong shape or dtype
for the method and configuration, or a method that is not installed all raise
:class:`~sparsekit.errors.CheckpointError` with one line that names the file and the problem.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsekit._version import __version__
from sparsekit.core.contract import Method
from sparsekit.errors import CheckpointError, ParameterError
from sparsekit.files import atomic_path, first_line, fsync_dir, json_default
from sparsekit.layout import CHECKPOINT, PREVIOUS_CHECKPOINT
from sparsekit.methods.registry import load_registry
from sparsekit.training.settings import TrainConfig

if TYPE_CHECKING:
    from sparsekit.backend import Backend
    from sparsekit.training.trainer import Trainer

__all__ = [
    "CHECKPOINT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "encode_json",
    "PREVIOUS_CHECKPOINT",
    "checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
]

#: Bumped whenever the layout changes incompatibly.
FORMAT_VERSION = 1
#: The ``format`` field of ``meta``: what makes an archive a sparsekit checkpoint.
FORMAT_NAME = "sparsekit-checkpoint"

_PARAMS = "params/"
_OPTIM = "optimizer/"
_METHOD = "method/"
_EXTRA = "extra/"
_INPUT_MEAN = "input/mean"
_UPKEEP = "upkeep/"
_VARIANCE = "variance/"


# --------------------------------------------------------------------------- writing


def encode_json(obj: Any) -> np.ndarray:
    """``obj`` as UTF-8 JSON bytes in a ``uint8`` array: how ``meta`` is stored in an archive."""
    return np.frombuffer(json.dumps(obj, default=json_default).encode("utf-8"), dtype=np.uint8)


def _split_state(
    state: Mapping[str, Any], backend: Backend
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (copied to the host) and JSON-friendly scalars of an optimizer's or method's
    ``state_dict``."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            scalars[key] = value
        elif isinstance(value, np.generic):
            scalars[key] = value.item()
        else:
            arrays[key] = backend.to_numpy(value)
    return arrays, scalars


def checkpoint_arrays(
    trainer: Trainer,
    *,
    data_spec: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The members of a checkpoint of ``trainer``
    (a :class:`~sparsekit.training.trainer.Trainer`)."""
    state = trainer.state_dict()
    optim_arrays, optim_scalars = _split_state(state["optimizer"], trainer.backend)
    method_arrays, method_scalars = _split_state(state["method_state"], trainer.backend)
    upkeep = state.get("upkeep", {})
    upkeep_arrays = {k: v for k, v in upkeep.items() if isinstance(v, np.ndarray)}
    upkeep_scalars = {k: v for k, v in upkeep.items() if k not in upkeep_arrays}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sparsekit_version": __version__,
        "method": trainer.method.name,
        "method_params": trainer.method.get_params(),
        "train": trainer.config.to_dict(),
        "data": trainer.dataset.describe(),
        "data_spec": dict(data_spec) if data_spec is not None else None,
        "backend": trainer.backend.name,
        "epoch": int(state["epoch"]),
        "history": state["history"],
        "shuffle_rng": state["shuffle_rng"],
        "batches": state.get("batches", {}),
        "optimizer": trainer.config.optimizer if trainer.optimizer is not None else None,
        "optimizer_scalars": optim_scalars,
        "method_scalars": method_scalars,
        "upkeep": upkeep_scalars,
    }
    variance = trainer.variance_state()
    if variance is not None:
        meta["data_variance_n"] = int(variance["n"])
    arrays: dict[str, np.ndarray] = {"meta": encode_json(meta)}
    for key, value in state["params"].items():
        arrays[_PARAMS + key] = np.ascontiguousarray(value)
    for key, value in optim_arrays.items():
        arrays[_OPTIM + key] = np.ascontiguousarray(value)
    for key, value in method_arrays.items():
        arrays[_METHOD + key] = np.ascontiguousarray(value)
    if state.get("input_mean") is not None:
        arrays[_INPUT_MEAN] = np.ascontiguousarray(state["input_mean"])
    for key, value in upkeep_arrays.items():
        arrays[_UPKEEP + key] = np.ascontiguousarray(value)
    if variance is not None:
        arrays[_VARIANCE + "mean"] = np.ascontiguousarray(variance["mean"])
        arrays[_VARIANCE + "m2"] = np.ascontiguousarray(variance["m2"])
    for key, value in (extra or {}).items():
        arrays[_EXTRA + key] = np.ascontiguousarray(value)
    for key, value in arrays.items():
        if value.dtype.hasobject:
            raise CheckpointError(f"cannot checkpoint {key}: object arrays are not allowed")
    return arrays


def save_checkpoint(
    path: str | os.PathLike[str],
    trainer: Trainer,
    *,
    data_spec: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write a checkpoint of ``trainer`` to ``path`` atomically; returns the path.

    ``data_spec`` says how to load the training data again (``{"spec": "mnist", "data":
    "/data", "subset": 2000, "split": "train"}``) so that :func:`restore_trainer` can resume
    without being handed the data. ``extra`` arrays are stored as ``extra/<name>``. With
    ``keep_previous`` the checkpoint being replaced is kept as ``<name>.prev.npz``.
    """
    path = Path(path)
    arrays = checkpoint_arrays(trainer, data_spec=data_spec, extra=extra)
    with atomic_path(path, error=CheckpointError) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(path.name.removesuffix(".npz") + ".prev.npz"))
    fsync_dir(path.parent)
    return path


# --------------------------------------------------------------------------- reading


def checkpoint_path(location: str | os.PathLike[str]) -> Path:
    """The checkpoint file of a run directory, or ``location`` itself when it is a file."""
    p = Path(location)
    if p.is_dir():
        p = p / CHECKPOINT
        if not p.exists():
            raise CheckpointError(f"{p.parent}: no {CHECKPOINT} in this run directory")
    elif not p.exists():
        raise CheckpointError(f"{p}: no such run directory or checkpoint file")
    return p


def _read_members(path: Path) -> dict[str, np.ndarray]:
    """Every member of the archive, refusing pickles; one-line errors for broken files."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: not a valid checkpoint (corrupt or truncated file: {first_line(exc)})"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(
            f"{path}: not a checkpoint (a single .npy array, not an .npz archive)"
        )
    members: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                members[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                    raise CheckpointError(
                        f"{path}: refused: member {key!r} is a pickled object array "
                        "(checkpoints hold only numeric arrays)"
                    ) from None
                raise CheckpointError(
                    f"{path}: member {key!r} is corrupt: {first_line(exc)}"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
                raise CheckpointError(
                    f"{path}: not a valid checkpoint (corrupt or truncated member {key!r}: "
                    f"{first_line(exc)})"
                ) from None
            if members[key].dtype.hasobject:  # pragma: no cover - np.load refuses these
                raise CheckpointError(f"{path}: refused: member {key!r} is an object array")
    return members


def _decode_meta(path: Path, members: Mapping[str, np.ndarray]) -> dict[str, Any]:
    raw = members.get("meta")
    if raw is None:
        raise CheckpointError(f"{path}: not a sparsekit checkpoint (no 'meta' member)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(
            f"{path}: 'meta' must be a 1-D uint8 array, got {raw.dtype}{raw.shape}"
        )
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: 'meta' is not valid JSON ({first_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a sparsekit checkpoint (unknown 'meta' format)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is not supported "
            f"(this sparsekit reads version {FORMAT_VERSION})"
        )
    for key, kind in (
        ("method", str),
        ("method_params", dict),
        ("train", dict),
        ("data", dict),
        ("epoch", int),
        ("history", list),
        ("shuffle_rng", dict),
        ("optimizer_scalars", dict),
        ("method_scalars", dict),
    ):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: 'meta' lacks a valid {key!r} entry")
    return meta


def _expected_params(method: Method, config: TrainConfig, dim: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters ``method`` creates for this configuration."""
    sample = np.zeros((1, dim))
    with np.errstate(all="ignore"):
        initial = method.init_params(
            np.random.default_rng(0), dim, config.hidden, config.tied, sample
        )
    return {k: tuple(np.shape(v)) for k, v in initial.items()}


def _expected_optimizer(name: str | None, params: Mapping[str, tuple[int, ...]]) -> list[str]:
    if name == "adam":
        return [f"m.{k}" for k in params] + [f"v.{k}" for k in params]
    if name == "momentum":
        return [f"velocity.{k}" for k in params]
    return []


def load_checkpoint(path: str | os.PathLike[str], *, registry: Any = None) -> dict[str, Any]:
    """Read and validate a checkpoint file (or a run directory's ``checkpoint.npz``).

    Returns a dict with ``meta`` (the decoded metadata), ``method`` (a fresh instance with
    the stored parameters, validated against the problem size), ``config``
    (:class:`~sparsekit.training.settings.TrainConfig`), ``state`` (what
    :meth:`~sparsekit.training.trainer.Trainer.load_state_dict` takes) and ``extra``
    (name -> array). Raises :class:`~sparsekit.errors.CheckpointError` (one line) for any problem.
    """
    path = checkpoint_path(path)
    members = _read_members(path)
    meta = _decode_meta(path, members)
    method, config, dim = _method_and_config(path, meta, registry)
    expected = _expected_params(method, config, dim)
    check = _ArrayCheck(path, members, np.dtype(config.dtype), meta["method"], config.hidden, dim)
    params = {k: check(_PARAMS + k, shape) for k, shape in expected.items()}
    unexpected = sorted(
        k for k in members if k.startswith(_PARAMS) and k[len(_PARAMS) :] not in expected
    )
    if unexpected:
        raise CheckpointError(
            f"{path}: unexpected array {unexpected[0]!r} for method {meta['method']!r}"
        )
    optimizer = {} if method.own_update else _optimizer_state(check, meta, config, expected)
    method_state = dict(meta["method_scalars"])
    for key, arr in members.items():
        if key.startswith(_METHOD):
            method_state[key[len(_METHOD) :]] = arr
    upkeep = _upkeep_state(path, meta, members, config.hidden)
    _check_progress(path, meta)
    # Centred training: the data's mean sample is part of the model.
    input_mean = check(_INPUT_MEAN, (dim,)) if config.center else None

    extra = {k[len(_EXTRA) :]: v for k, v in members.items() if k.startswith(_EXTRA)}
    state = {
        "params": params,
        "optimizer": optimizer,
        "method_state": method_state,
        "upkeep": upkeep,
        "shuffle_rng": meta["shuffle_rng"],
        "batches": meta.get("batches") if isinstance(meta.get("batches"), dict) else {},
        "epoch": meta["epoch"],
        "history": meta["history"],
        "input_mean": input_mean,
        "data_variance": _variance_state(path, meta, members, dim),
    }
    return {
        "path": path,
        "meta": meta,
        "method": method,
        "config": config,
        "state": state,
        "extra": extra,
    }


def _variance_state(
    path: Path, meta: Mapping[str, Any], members: Mapping[str, np.ndarray], dim: int
) -> dict[str, Any] | None:
    """The data variance accumulator (count, mean, M2), or None where the checkpoint has
    none (written by an older sparsekit, or before the first epoch ended)."""
    n = meta.get("data_variance_n")
    if n is None:
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CheckpointError(f"{path}: invalid data_variance_n {n!r}")
    out: dict[str, Any] = {"n": n}
    for name in ("mean", "m2"):
        key = _VARIANCE + name
        arr = members.get(key)
        if arr is None:
            raise CheckpointError(f"{path}: array {key!r} is missing")
        if arr.shape != (dim,) or arr.dtype != np.float64 or not np.isfinite(arr).all():
            raise CheckpointError(f"{path}: array {key!r} is not {dim} finite float64 values")
        out[name] = arr
    return out


def _method_and_config(
    path: Path, meta: Mapping[str, Any], registry: Any
) -> tuple[Method, TrainConfig, int]:
    """The stored method (installed, with valid parameters), its training configuration and
    the data dimension, checked against each other."""
    if registry is None:
        registry = load_registry()
    name = meta["method"]
    if name not in registry:
        known = ", ".join(sorted(info.name for info in registry)) or "none"
        raise CheckpointError(
            f"{path}: method {name!r} is not installed (available: {known}); install the "
            "plugin that provides it"
        )
    try:
        method = registry.create(name, **meta["method_params"])
        config = TrainConfig.from_dict(meta["train"]).validate(method)
    except (ParameterError, TypeError) as exc:
        raise CheckpointError(f"{path}: stored settings are invalid: {first_line(exc)}") from None
    dim = meta["data"].get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise CheckpointError(f"{path}: 'meta' lacks the data dimension")
    try:
        method.validate(config.hidden, dim)
    except ParameterError as exc:
        raise CheckpointError(f"{path}: stored settings are invalid: {first_line(exc)}") from None
    return method, config, dim


@dataclass(frozen=True)
class _ArrayCheck:
    """Fetches a member that must be there with a given shape, the run's dtype and finite
    values; the errors name the method and the problem size the shape follows from."""

    path: Path
    members: Mapping[str, np.ndarray]
    dtype: np.dtype
    name: str
    hidden: int
    dim: int

    def __call__(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        path = self.path
        if key not in self.members:
            raise CheckpointError(f"{path}: array {key!r} is missing")
        arr = self.members[key]
        if arr.shape != shape:
            raise CheckpointError(
                f"{path}: array {key!r} has shape {arr.shape}, expected {shape} for "
                f"{self.name} with hidden={self.hidden} and {self.dim} inputs"
            )
        if arr.dtype != self.dtype:
            raise CheckpointError(
                f"{path}: array {key!r} has dtype {arr.dtype}, expected {self.dtype}"
            )
        if not np.isfinite(arr).all():
            raise CheckpointError(f"{path}: array {key!r} holds NaN or infinite values")
        return arr


def _optimizer_state(
    check: _ArrayCheck,
    meta: Mapping[str, Any],
    config: TrainConfig,
    expected: Mapping[str, tuple[int, ...]],
) -> dict[str, Any]:
    """The optimizer's step count and moment arrays: all of them or (before a step) none."""
    path, members = check.path, check.members
    if meta.get("optimizer") != config.optimizer:
        raise CheckpointError(
            f"{path}: optimizer {meta.get('optimizer')!r} does not match the configuration's "
            f"{config.optimizer!r}"
        )
    steps = meta["optimizer_scalars"].get("steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise CheckpointError(f"{path}: invalid optimizer step count {steps!r}")
    optimizer: dict[str, Any] = {"steps": steps}
    keys = _expected_optimizer(config.optimizer, expected)
    present = [k for k in keys if _OPTIM + k in members]
    if present and len(present) != len(keys):
        missing = next(k for k in keys if _OPTIM + k not in members)
        raise CheckpointError(f"{path}: array {_OPTIM + missing!r} is missing")
    if steps > 0 and keys and not present:
        raise CheckpointError(f"{path}: array {_OPTIM + keys[0]!r} is missing")
    for key in present:
        optimizer[key] = check(_OPTIM + key, expected[key.split(".", 1)[1]])
    return optimizer


def _upkeep_state(
    path: Path, meta: Mapping[str, Any], members: Mapping[str, np.ndarray], hidden: int
) -> dict[str, Any]:
    """The trainer's upkeep: scalars from ``meta``, one integer array per unit from members."""
    upkeep = dict(meta.get("upkeep") or {})
    for key, arr in members.items():
        if key.startswith(_UPKEEP):
            if arr.shape != (hidden,) or arr.dtype.kind not in "iu":
                raise CheckpointError(
                    f"{path}: array {key!r} has shape {arr.shape} and dtype {arr.dtype}, "
                    f"expected ({hidden},) integers"
                )
            upkeep[key[len(_UPKEEP) :]] = arr
    return upkeep


def _check_progress(path: Path, meta: Mapping[str, Any]) -> None:
    """The shuffle generator's state loads, and the history has one row per epoch."""
    try:
        np.random.default_rng(0).bit_generator.state = meta["shuffle_rng"]
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: invalid shuffle generator state ({first_line(exc)})"
        ) from None
    epoch = meta["epoch"]
    history = meta["history"]
    if epoch < 0 or len(history) != epoch:
        raise CheckpointError(
            f"{path}: epoch {epoch} does not match the {len(history)} epochs of history"
        )
