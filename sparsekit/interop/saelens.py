"""SAELens files, both ways: ``cfg.json`` + ``sae_weights.safetensors``.

SAELens (https://github.com/decoderesearch/SAELens, formerly jbloomAus/SAELens) and the
tools around it (SAEBench, Neuronpedia) read a sparse autoencoder from a directory holding

* ``cfg.json``: ``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``,
  ``normalize_activations``, ``reshape_activations``, ``metadata`` and ``architecture``
  (``sae_lens/saes/sae.py``: ``SAEConfig``), plus the architecture's own fields, e.g. ``k``
  and ``rescale_acts_by_decoder_norm`` of ``"topk"`` (``sae_lens/saes/topk_sae.py``);
* ``sae_weights.safetensors``: ``W_enc`` (d_in × d_sae), ``b_enc`` (d_sae), ``W_dec``
  (d_sae × d_in), ``b_dec`` (d_in), and for ``"jumprelu"`` ``threshold`` (d_sae).

SAELens encodes ``h = σ((x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc)`` and decodes
``x̂ = h W_dec + b_dec``, with σ = ReLU for ``"standard"`` and "keep the k largest, then
ReLU" for ``"topk"``. sparsekit stores ``W_enc`` and ``W_dec`` as H×D (one row per unit) and
encodes ``Z = X W_encᵀ + b_enc``, subtracting ``b_dec`` first only in the methods that
declare it (the sparse autoencoders' pre-encoder bias). An export writes ``W_enc``
transposed and ``apply_b_dec_to_input`` as the method does it (a model trained on centred
data has its mean m folded into the biases: ``b_dec + m``, and ``b_enc − W_enc m`` when
b_dec is not subtracted; the same codes to float32 rounding). An import folds a difference
between the file's ``apply_b_dec_to_input`` and the method's into the encoder bias
(``b_enc ∓ b_dec W_enc``) and a TopK file's ``rescale_acts_by_decoder_norm``
into the weights, as SAELens' own ``fold_W_dec_norm`` does.

Which methods have a SAELens counterpart is declared by the method class itself, in its
``saelens`` attribute (a :class:`SAELensArch`); a method without one cannot be exported
(one-line :class:`~sparsekit.errors.ParameterError`). Exported files carry the sparsekit
method and its parameters in ``metadata``, so importing them gives the same method back; a
file from elsewhere is read by the installed method that declares ``reads=True`` for its
architecture.

Writing uses ``safetensors.numpy`` (no PyTorch): ``pip install 'sparsekit[saelens]'``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsekit._version import __version__
from sparsekit.backend import get_backend
from sparsekit.core.saelens_arch import SAELensArch
from sparsekit.data import load_dataset
from sparsekit.errors import CheckpointError, DataError, OutputError, ParameterError, SparsekitError
from sparsekit.files import atomic_path, first_line, write_json
from sparsekit.layout import CHECKPOINT, CONFIG, PREPROCESSING, SAELENS_CFG, SAELENS_WEIGHTS
from sparsekit.methods.registry import load_registry
from sparsekit.runs.restore import load_run
from sparsekit.training.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    encode_json,
    load_checkpoint,
)
from sparsekit.training.model import Model
from sparsekit.training.settings import resolve_config

if TYPE_CHECKING:
    from sparsekit.core.contract import Method
    from sparsekit.training.model import Model

__all__ = [
    "CFG_FILE",
    "WEIGHTS_FILE",
    "SAELensArch",
    "export_saelens",
    "import_saelens",
    "load_saelens",
    "saelens_reader",
]

CFG_FILE = SAELENS_CFG
WEIGHTS_FILE = SAELENS_WEIGHTS
#: SAELens' activation normalisations; only "none" is a plain linear map of the input.
_NORMALIZE_NONE = "none"


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy
    except ImportError:
        raise SparsekitError(
            "SAELens files need the safetensors package: pip install 'sparsekit[saelens]'"
        ) from None
    return safetensors.numpy


def _arch_of(method: Method | type[Method]) -> SAELensArch:
    arch = getattr(method, "saelens", None)
    if not isinstance(arch, SAELensArch):
        raise ParameterError(
            f"method {method.name!r} has no SAELens counterpart (methods that have one declare "
            "a SAELensArch in their 'saelens' attribute)"
        )
    return arch


# --------------------------------------------------------------------------- export


def export_saelens(
    source: str | os.PathLike[str] | Model, out: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write the model of a run directory (or a :class:`~sparsekit.Model`) as SAELens files.

    Creates ``out`` with ``cfg.json`` and ``sae_weights.safetensors``; returns the cfg
    written. Raises :class:`~sparsekit.errors.ParameterError` for a method without a SAELens
    counterpart or a run trained on preprocessed data (SAELens has no place for a mean or a
    whitening matrix).
    """
    model = _model_to_export(source)
    method = model.method
    arch = _arch_of(method)
    params = model.numpy_params()
    dtype = np.dtype(params["W_enc"].dtype)
    pre_bias = arch.pre_bias(method)
    tensors = _export_tensors(model, arch, params, dtype, pre_bias)
    cfg: dict[str, Any] = {
        "architecture": arch.architecture,
        "d_in": model.dim,
        "d_sae": model.hidden,
        "dtype": str(dtype),
        "device": "cpu",
        "apply_b_dec_to_input": pre_bias,
        "normalize_activations": _NORMALIZE_NONE,
        "reshape_activations": "none",
        **arch.cfg(method),
        "metadata": _export_metadata(model, arch),
    }
    st = _safetensors_numpy()
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            st.save_file(tensors, str(tmp))
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    write_json(out / CFG_FILE, cfg)
    return cfg


def _model_to_export(source: str | os.PathLike[str] | Model) -> Model:
    """The model itself, or a run directory's (refused when the run has preprocessing)."""
    if isinstance(source, Model):
        return source
    where = os.fspath(source)
    model = load_run(source)
    if (Path(source) / PREPROCESSING).exists():
        raise ParameterError(
            f"{where}: the run was trained on preprocessed data (mean removal or ZCA); "
            "SAELens files cannot hold that preprocessing"
        )
    return model


def _export_tensors(
    model: Model, arch: SAELensArch, params: dict[str, Any], dtype: np.dtype, pre_bias: bool
) -> dict[str, np.ndarray]:
    """The safetensors content: SAELens' names and orientation, a data mean folded in."""
    method = model.method
    w_enc = params["W_enc"]
    w_dec = params.get("W_dec", w_enc)
    b_enc, b_dec = params["b_enc"], params["b_dec"]
    mean = getattr(model, "input_mean", None)
    if mean is not None:
        # A centred model encodes x − m (− b_dec) and adds m back: fold m into the biases,
        # b_dec + m, and b_enc − W_enc m unless b_dec is subtracted anyway (float64, then
        # the model's dtype).
        m = model.backend.to_numpy(mean).astype(np.float64)
        if not pre_bias:
            b_enc = (b_enc - w_enc.astype(np.float64) @ m).astype(dtype)
        b_dec = (b_dec + m).astype(dtype)
    tensors = {
        "W_enc": np.ascontiguousarray(w_enc.T),
        "b_enc": np.ascontiguousarray(b_enc),
        "W_dec": np.ascontiguousarray(w_dec),
        "b_dec": np.ascontiguousarray(b_dec),
    }
    if arch.decoder_only:  # the file's W_enc is W_decᵀ; there is no b_enc
        del tensors["W_enc"], tensors["b_enc"]
    for ours, theirs in arch.tensors.items():
        tensors[theirs] = np.ascontiguousarray(params[ours])
    if arch.export_tensors is not None:
        extra = arch.export_tensors(method, params)
        tensors.update({k: np.ascontiguousarray(v, dtype=dtype) for k, v in extra.items()})
    return tensors


def _export_metadata(model: Model, arch: SAELensArch) -> dict[str, Any]:
    """The cfg's ``metadata``: what sparsekit needs to read the files back as the same run."""
    method = model.method
    meta = getattr(model, "run_meta", None) or {}
    sparsekit_meta = {
        "sparsekit_version": __version__,
        "sparsekit_method": method.name,
        "sparsekit_method_params": method.get_params(),
        "sparsekit_tied": model.tied,
    }
    if arch.note:
        sparsekit_meta["sparsekit_note"] = arch.note
    if meta.get("data"):
        sparsekit_meta["sparsekit_data"] = meta["data"]
    if meta.get("data_spec"):
        sparsekit_meta["sparsekit_data_spec"] = meta["data_spec"]
    elif model.image_shape is not None:
        sparsekit_meta["sparsekit_data"] = {"image_shape": list(model.image_shape)}
    return sparsekit_meta


# --------------------------------------------------------------------------- import


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such SAELens directory")
    cfg_path, weights_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise DataError(
                f"{folder}: no {path.name} (a SAELens directory holds {CFG_FILE} "
                f"and {WEIGHTS_FILE})"
            )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{cfg_path}: expected a JSON object")
    st = _safetensors_numpy()
    try:
        tensors = dict(st.load_file(str(weights_path)))
    except Exception as exc:  # safetensors raises its own error types for broken files
        raise DataError(
            f"{weights_path}: not a readable safetensors file ({first_line(exc)})"
        ) from None
    return cfg, tensors


def saelens_reader(architecture: str, registry: Any = None) -> type[Method]:
    """The installed method that reads SAELens files of ``architecture`` (declared ``reads``)."""
    if registry is None:
        registry = load_registry()
    readers = [
        info.cls
        for info in registry
        if isinstance(getattr(info.cls, "saelens", None), SAELensArch)
        and info.cls.saelens.architecture == architecture
        and info.cls.saelens.reads
    ]
    if not readers:
        exporters = sorted(
            info.name
            for info in registry
            if isinstance(getattr(info.cls, "saelens", None), SAELensArch)
            and info.cls.saelens.architecture == architecture
        )
        hint = (
            f" ({', '.join(exporters)} export to it, but not exactly, so do not read it)"
            if exporters
            else ""
        )
        raise ParameterError(
            f"no installed method reads SAELens architecture {architecture!r}{hint}"
        )
    if len(readers) > 1:
        names = ", ".join(sorted(c.name for c in readers))
        raise ParameterError(
            f"several methods read SAELens architecture {architecture!r} ({names}); only one may "
            "declare reads=True"
        )
    return readers[0]


def _field(cfg: Mapping[str, Any], name: str, kind: type, where: Path) -> Any:
    value = cfg.get(name)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise DataError(f"{where}: {CFG_FILE} needs a positive integer {name!r}, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise DataError(f"{where}: {CFG_FILE} needs a string {name!r}, got {value!r}")
    return value


def _as_model_parts(
    folder: Path, registry: Any = None
) -> tuple[Method, dict[str, np.ndarray], dict[str, Any], str]:
    """(method, sparsekit parameters, cfg, dtype) of a SAELens directory."""
    cfg, tensors = _read(folder)
    arch_name, d_in, d_sae = _check_cfg(cfg, folder)
    if registry is None:
        registry = load_registry()
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    method, arch = _reading_method(cfg, tensors, meta, folder, d_in, d_sae, registry)
    _check_tensors(tensors, arch, folder, d_in, d_sae)
    dtype = "float64" if tensors["W_dec"].dtype == np.float64 else "float32"
    return method, _params_from_tensors(cfg, tensors, method, arch, meta, folder), cfg, dtype


def _check_cfg(cfg: Mapping[str, Any], folder: Path) -> tuple[str, int, int]:
    """(architecture, d_in, d_sae) of a cfg whose inputs sparsekit can take as they come."""
    arch_name = _field(cfg, "architecture", str, folder)
    d_in = _field(cfg, "d_in", int, folder)
    d_sae = _field(cfg, "d_sae", int, folder)
    normalize = cfg.get("normalize_activations", _NORMALIZE_NONE) or _NORMALIZE_NONE
    if normalize != _NORMALIZE_NONE:
        raise DataError(
            f"{folder}: normalize_activations {normalize!r} rescales every input at run time; "
            "sparsekit reads only 'none'"
        )
    if (cfg.get("reshape_activations") or "none") != "none":
        raise DataError(
            f"{folder}: reshape_activations {cfg['reshape_activations']!r} is not "
            "supported (only 'none')"
        )
    return arch_name, d_in, d_sae


def _reading_method(
    cfg: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    folder: Path,
    d_in: int,
    d_sae: int,
    registry: Any,
) -> tuple[Method, SAELensArch]:
    """The method (and its SAELens description) for these files: the one sparsekit exported
    them from when it is installed, else the method that declares it reads the architecture."""
    arch_name = cfg["architecture"]
    ours = meta.get("sparsekit_method")
    if isinstance(ours, str) and ours in registry:
        cls = registry.get(ours)
        method_params = dict(meta.get("sparsekit_method_params") or {})
    else:
        cls = saelens_reader(arch_name, registry)
        method_params = cls.saelens.params(cfg)
    arch = _arch_of(cls)
    if arch.architecture != arch_name:
        raise DataError(
            f"{folder}: architecture {arch_name!r}, but method {cls.name!r} exports "
            f"{arch.architecture!r}"
        )
    try:
        method = cls(**method_params)
        method.validate(d_sae, d_in)
    except ParameterError as exc:
        raise DataError(f"{folder}: {exc}") from None
    if arch.import_state is not None and "threshold" in tensors:
        method.load_state_dict({**method.state_dict(), **arch.import_state(cfg, tensors)})
    return method, arch


def _check_tensors(
    tensors: Mapping[str, np.ndarray], arch: SAELensArch, folder: Path, d_in: int, d_sae: int
) -> None:
    """Every tensor the architecture needs is there, of its shape, and finite."""
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch.decoder_only:
        del shapes["W_enc"], shapes["b_enc"]
    shapes.update({theirs: (d_sae,) for theirs in arch.tensors.values()})
    for name, shape in shapes.items():
        if name not in tensors:
            raise DataError(f"{folder}: {WEIGHTS_FILE} has no tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise DataError(
                f"{folder}: tensor {name!r} has shape {tuple(tensors[name].shape)}, expected "
                f"{shape} for d_in={d_in}, d_sae={d_sae}"
            )
        if not np.isfinite(tensors[name]).all():
            raise DataError(f"{folder}: tensor {name!r} holds NaN or infinite values")


def _params_from_tensors(
    cfg: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    method: Method,
    arch: SAELensArch,
    meta: Mapping[str, Any],
    folder: Path,
) -> dict[str, np.ndarray]:
    """sparsekit's parameters (float64, H×D) from SAELens tensors, with its conventions
    on the decoder bias and the decoder norm folded in."""
    if arch.decoder_only:
        return _decoder_only_params(cfg, tensors)
    w_enc = tensors["W_enc"].astype(np.float64).T  # H×D
    w_dec = tensors["W_dec"].astype(np.float64)
    b_enc = tensors["b_enc"].astype(np.float64)
    b_dec = tensors["b_dec"].astype(np.float64)
    # SAELens encodes x − b_dec when apply_b_dec_to_input (its default); the method does when
    # it declares subtracts_b_dec. Where they differ, the difference goes into b_enc.
    shift = int(bool(cfg.get("apply_b_dec_to_input", True))) - int(arch.pre_bias(method))
    if shift:
        b_enc = b_enc - shift * (w_enc @ b_dec)
    if cfg.get("rescale_acts_by_decoder_norm"):
        # TopK selects on h_j·‖d_j‖ and decodes h_j/‖d_j‖: scale unit j's encoder row and
        # bias by ‖d_j‖ and its decoder row by 1/‖d_j‖ (SAELens' fold_W_dec_norm).
        norms = np.linalg.norm(w_dec, axis=1)
        if not (norms > 0).all():
            raise DataError(f"{folder}: a decoder row is zero; cannot fold its norm")
        w_enc = w_enc * norms[:, None]
        b_enc = b_enc * norms
        w_dec = w_dec / norms[:, None]
    params = {"W_enc": w_enc, "b_enc": b_enc, "b_dec": b_dec}
    tied = bool(meta.get("sparsekit_tied")) and np.array_equal(tensors["W_enc"].T, tensors["W_dec"])
    if not tied:
        params["W_dec"] = w_dec
    for ours, theirs in arch.tensors.items():
        params[ours] = tensors[theirs].astype(np.float64)
    if arch.import_tensors is not None:
        extra = arch.import_tensors(cfg, tensors)
        params.update({k: np.asarray(v, dtype=np.float64) for k, v in extra.items()})
    return params


def _decoder_only_params(
    cfg: Mapping[str, Any], tensors: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A tied method's parameters from W_dec and b_dec alone: W_enc = W_dec, b_enc = 0, and
    b_dec = 0 when the file does not apply it (SAELens then neither subtracts nor adds it)."""
    w_dec = tensors["W_dec"].astype(np.float64)
    b_dec = tensors["b_dec"].astype(np.float64)
    if not cfg.get("apply_b_dec_to_input", True):
        b_dec = np.zeros_like(b_dec)
    return {"W_enc": w_dec, "b_enc": np.zeros(w_dec.shape[0]), "b_dec": b_dec}


def load_saelens(
    folder: str | os.PathLike[str], *, registry: Any = None, gpu: bool = False
) -> Model:
    """A :class:`~sparsekit.Model` from a SAELens directory (``cfg.json`` + weights).

    Files sparsekit exported come back as the same method with the same parameters; files
    from elsewhere are read by the method that declares it reads their architecture.
    """
    folder = Path(folder)
    method, params, cfg, dtype = _as_model_parts(folder, registry)
    backend = get_backend(gpu, dtype)
    shape = ((cfg.get("metadata") or {}).get("sparsekit_data") or {}).get("image_shape")
    image_shape = (int(shape[0]), int(shape[1])) if shape else None
    model = Model(
        method, {k: backend.asarray(v) for k, v in params.items()}, backend, image_shape=image_shape
    )
    return model


def import_saelens(
    folder: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    data: str | os.PathLike[str] | None = None,
    registry: Any = None,
) -> Path:
    """Write a sparsekit run directory (a checkpoint) from a SAELens directory.

    The run holds the model only (no training history); ``sparsekit encode``, ``eval`` and
    ``export`` accept it. ``dataset`` (a ``--dataset`` spec such as ``mnist``) names the data
    the model reads, for ``sparsekit eval`` and the figures; files sparsekit exported carry
    it already. Returns ``run_dir``.
    """
    folder, run_dir = Path(folder), Path(run_dir)
    method, params, cfg, dtype = _as_model_parts(folder, registry)
    meta_in = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    d_sae, d_in = params["W_enc"].shape
    data_desc, data_spec = _imported_data(folder, meta_in, d_in, dataset, data)
    # The data mean of a centred model is folded into the biases: the run is not centred.
    config = resolve_config(
        method, hidden=d_sae, tied="W_dec" not in params, dtype=dtype, epochs=1, center=False
    )
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sparsekit_version": __version__,
        "method": method.name,
        "method_params": method.get_params(),
        "train": config.to_dict(),
        "data": data_desc,
        "data_spec": data_spec,
        "backend": "numpy",
        "epoch": 0,
        "history": [],
        "shuffle_rng": np.random.default_rng(config.seed).bit_generator.state,
        "optimizer": None if method.own_update else config.optimizer,
        "optimizer_scalars": {"steps": 0},
        "method_scalars": {},
        "imported_from": {"saelens": os.fspath(folder.resolve())},
    }
    _write_imported_run(run_dir, meta, params, np.dtype(dtype))
    try:
        load_checkpoint(run_dir, registry=registry)  # what every command will check
    except CheckpointError as exc:  # pragma: no cover - a bug here, not in the file
        raise CheckpointError(f"{run_dir}: the imported run does not load: {exc}") from None
    return run_dir


def _imported_data(
    folder: Path,
    meta_in: Mapping[str, Any],
    d_in: int,
    dataset: str | None,
    data: str | os.PathLike[str] | None,
) -> tuple[dict[str, Any], Any]:
    """(data description, data spec) of an imported run: what the files carry, or the
    ``dataset`` named on import (checked to have the SAE's input width)."""
    data_desc: dict[str, Any] = {
        "name": f"saelens:{folder.name}",
        "n": 0,
        "dim": d_in,
        "image_shape": None,
    }
    data_spec = meta_in.get("sparsekit_data_spec")
    stored = meta_in.get("sparsekit_data")
    if isinstance(stored, dict):
        data_desc.update({k: stored[k] for k in ("name", "n", "image_shape") if k in stored})
    if dataset is not None:
        probe = load_dataset(dataset, data, subset=1)
        if probe.dim != d_in:
            raise DataError(f"{dataset}: samples have {probe.dim} features, the SAE reads {d_in}")
        data_spec = {"spec": dataset, "data": os.fspath(data) if data is not None else None}
        data_desc.update({"name": probe.name, "image_shape": probe.image_shape})
    if data_desc.get("image_shape") is not None:
        data_desc["image_shape"] = [int(v) for v in data_desc["image_shape"]]
    return data_desc, data_spec


def _write_imported_run(
    run_dir: Path, meta: dict[str, Any], params: Mapping[str, np.ndarray], dtype: np.dtype
) -> None:
    """The run directory of an import: its checkpoint and its config."""
    arrays = {"meta": encode_json(meta)}
    for key, value in params.items():
        arrays["params/" + key] = np.ascontiguousarray(value, dtype=dtype)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {run_dir}: {exc.strerror or exc}") from None
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    write_json(
        run_dir / CONFIG,
        {
            "method": meta["method"],
            "method_params": meta["method_params"],
            "train": meta["train"],
            "data": meta["data"],
            "data_spec": meta["data_spec"],
            "imported_from": meta["imported_from"],
        },
    )
