"""sparsekit: sparse coding and sparse autoencoders with hand-written gradients.

Library entry points::

    import sparsekit
    model = sparsekit.train("ksparse", images, hidden=1000, epochs=10, k=25)
    codes = model.encode(images)          # N×H
    recon = model.decode(codes)           # N×D
    filters = model.encoder_weights       # H×D

A run directory (what ``sparsekit train`` writes) from Python::

    run_dir = sparsekit.train_run("ksparse", "mnist", epochs=10, k=25)  # ``sparsekit train``
    result = sparsekit.evaluate_run(run_dir)          # what ``sparsekit eval`` measures
    codes = sparsekit.encode_run(run_dir, "x.npy")     # ``sparsekit encode``, preprocessing too
    model = sparsekit.resume_run(run_dir, epochs=20)   # ``sparsekit train --resume``

Methods are plugins: see :func:`sparsekit.load_registry` and ``docs/plugins.md``.
"""

from sparsekit._version import __version__
from sparsekit.backend import Backend, get_backend
from sparsekit.backend.process import tune_process
from sparsekit.core.contract import (
    BaseMethod,
    Method,
    ObjectiveMethod,
    ObjectiveUpdateMethod,
    Param,
    RowPenalty,
    StepResult,
    StepState,
    TopK,
    UpdateMethod,
    Upkeep,
    WeightDecay,
    between_one_and_hidden,
    check_method_class,
    non_negative,
    open_unit_interval,
    positive,
)
from sparsekit.core.step import Forward
from sparsekit.errors import (
    BackendError,
    CheckpointError,
    DataError,
    DivergenceError,
    ParameterError,
    PluginError,
    SparsekitError,
    UnknownMethodError,
)
from sparsekit.interop.saelens import SAELensArch, export_saelens, import_saelens, load_saelens
from sparsekit.methods.hookspecs import hookimpl
from sparsekit.methods.registry import MethodRegistry, load_registry, make_plugin_manager
from sparsekit.runs.api import (
    StartedRun,
    encode_run,
    evaluate_run,
    prepare_data,
    resume_run,
    resume_trainer,
    run_summary,
    start_run,
    train_run,
)
from sparsekit.runs.preprocessing import read_preprocessing, save_preprocessing
from sparsekit.runs.restore import load_run, restore_trainer
from sparsekit.runs.writer import RunWriter, render_run
from sparsekit.training.checkpoint import load_checkpoint, save_checkpoint
from sparsekit.training.model import Model
from sparsekit.training.settings import TrainConfig, resolve_config
from sparsekit.training.trainer import Callback, Trainer, make_method, train

__all__ = [
    "Backend",
    "BackendError",
    "BaseMethod",
    "Callback",
    "CheckpointError",
    "DataError",
    "DivergenceError",
    "Forward",
    "Method",
    "MethodRegistry",
    "Model",
    "ObjectiveMethod",
    "ObjectiveUpdateMethod",
    "Param",
    "ParameterError",
    "PluginError",
    "RowPenalty",
    "RunWriter",
    "SAELensArch",
    "SparsekitError",
    "StepResult",
    "StepState",
    "TopK",
    "WeightDecay",
    "TrainConfig",
    "Trainer",
    "UnknownMethodError",
    "UpdateMethod",
    "Upkeep",
    "between_one_and_hidden",
    "check_method_class",
    "export_saelens",
    "get_backend",
    "import_saelens",
    "hookimpl",
    "load_checkpoint",
    "load_registry",
    "load_run",
    "load_saelens",
    "make_method",
    "make_plugin_manager",
    "non_negative",
    "open_unit_interval",
    "positive",
    "render_run",
    "resolve_config",
    "restore_trainer",
    "save_checkpoint",
    "train",
    "encode_run",
    "evaluate_run",
    "prepare_data",
    "read_preprocessing",
    "resume_run",
    "resume_trainer",
    "run_summary",
    "save_preprocessing",
    "start_run",
    "StartedRun",
    "train_run",
    "tune_process",
    "__version__",
]
