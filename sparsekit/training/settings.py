"""Training settings: declared once, checked once.

:data:`SETTINGS` declares every setting of a training run (its name, type, default, help
text, command-line flag, group and check). Everything that takes settings derives from it:
:class:`TrainConfig` (tested to hold exactly the ``config`` settings),
:func:`sparsekit.train`, :func:`sparsekit.runs.api.start_run` and ``train_run``, the options
of ``sparsekit train`` and ``sparsekit compare``, scikit-learn's ``SparseCoding``,
:class:`~sparsekit.studies.settings.CompareSettings` and the keys of a sweep file. Adding a
setting is a line here plus its use.

:func:`check_settings` validates any subset of them, with one message format that names
the option as the command line spells it::

    --batch-size must be a positive integer, got 0
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sparsekit.backend import DTYPES, MATMUL_PRECISIONS, check_matmul_precision, resolve_dtype
from sparsekit.core.contract import Method
from sparsekit.errors import ParameterError
from sparsekit.training.optim import OPTIMIZERS

__all__ = [
    "TRAIN_CONFIG_SETTINGS",
    "GROUPS",
    "PER_METHOD",
    "RUN_SETTINGS",
    "SETTINGS",
    "SHARED",
    "Rule",
    "Setting",
    "TrainConfig",
    "check_settings",
    "check_value",
    "flag_of",
    "parse_number",
    "parse_setting",
    "resolve_config",
    "setting",
    "settings_signature",
    "split_settings",
]


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``describe`` ends the sentence "--flag must be ...";
    ``accepts`` says whether a value is one."""

    describe: str
    accepts: Callable[[Any], bool]


def _integer(value: Any) -> bool:
    # bool is an int in Python, but ``--hidden True`` is a mistake, not 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _dtype(value: Any) -> bool:
    try:
        resolve_dtype(value)
    except ParameterError:
        return False
    return True


POSITIVE_INT = Rule("a positive integer", lambda v: _integer(v) and v >= 1)
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: _integer(v) and v >= 0)
AT_LEAST_TWO = Rule("an integer >= 2", lambda v: _integer(v) and v >= 2)
POSITIVE_NUMBER = Rule("a finite number > 0", lambda v: _real(v) and v > 0)
FRACTION = Rule("a number in [0, 1)", lambda v: _real(v) and 0 <= v < 1)
BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
PATH = Rule("a path", lambda v: isinstance(v, (str, os.PathLike)) and os.fspath(v) != "")
OPTIMIZER = Rule(f"one of {', '.join(OPTIMIZERS)}", lambda v: isinstance(v, str) and v in OPTIMIZERS)
DTYPE = Rule(" or ".join(DTYPES), _dtype)
MATMUL_PRECISION = Rule(
    " or ".join(MATMUL_PRECISIONS), lambda v: isinstance(v, str) and v in MATMUL_PRECISIONS
)


def flag_of(name: str) -> str:
    """``batch_size`` -> ``--batch-size``: how messages name a setting or option."""
    return "--" + name.replace("_", "-")


def check_value(flag: str, value: Any, rule: Rule) -> None:
    """Raise the one-line :class:`ParameterError` unless ``value`` passes ``rule``.

    For options that are not training settings (``--jobs``, ``--workers``, ...) but should
    read the same when wrong.
    """
    if not rule.accepts(value):
        raise ParameterError(f"{flag} must be {rule.describe}, got {value!r}")


def parse_number(text: str, flag: str = "value") -> float:
    """A finite float from ``text`` (``"1e-3"``); infinity and NaN are no setting's value."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ParameterError(f"{flag} must be a finite number, got {text!r}")
    return number


# --------------------------------------------------------------------------- the declaration

#: The groups settings belong to, in the order the help and the documentation show them.
GROUPS = ("data", "model", "optimiser", "run output")


@dataclass(frozen=True)
class Setting:
    """One training setting, as every interface that takes it sees it.

    ``where`` lists who takes it: ``"config"`` (a field of :class:`TrainConfig`, so
    :func:`sparsekit.train` and scikit-learn's estimator), ``"run"`` (:func:`start_run` and
    ``sparsekit train``), ``"compare"`` (shared by every method of a comparison or sweep
    trial: a field of ``CompareSettings``). ``per_method`` settings may differ between the
    methods of a comparison instead. ``tunable`` settings default to the method's
    recommended value (``None`` in the signatures: "not set"). ``optional`` ones may be
    ``None``. ``cli_unset`` ones are ``None`` on the command line unless given, so that
    ``--resume`` keeps the run's own value and ``--preset`` the preset's.
    """

    name: str
    type: type
    default: Any
    help: str
    group: str
    rule: Rule
    where: frozenset[str]
    flag: str | None = None
    tunable: bool = False
    optional: bool = False
    per_method: bool = False
    cli_unset: bool = False

    @property
    def option(self) -> str:
        """The option's name on the command line (``--batch-size``)."""
        return flag_of(self.name)

    @property
    def flags(self) -> tuple[str, ...]:
        """Typer's declarations of the option: its own flag form where it has one."""
        return (self.flag,) if self.flag else ()

    @property
    def unset(self) -> bool:
        """Whether ``None`` means "not set" (then the default comes from elsewhere)."""
        return self.tunable or self.optional

    def check(self, value: Any) -> None:
        """Raise the one-line :class:`ParameterError` for an impossible ``value``."""
        if value is None and self.unset:
            return
        check_value(self.option, value, self.rule)

    def parse(self, text: Any) -> Any:
        """The value of ``text`` (a string from ``METHOD.NAME=VALUE``), checked."""
        if not isinstance(text, str):
            self.check(text)
            return text
        value: Any = text
        if self.type is bool:
            value = _BOOL_WORDS.get(text.strip().lower(), text)
        elif self.type is int:
            value = int(text) if text.strip().lstrip("+-").isdigit() else text
        elif self.type is float:
            try:
                value = parse_number(text, self.option)
            except ParameterError:
                pass  # the check below says what the setting must be
        self.check(value)
        return value


_BOOL_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on", "tied"), True),
    **dict.fromkeys(("0", "false", "no", "off", "untied"), False),
}


def _s(
    name: str, type_: type, default: Any, help: str, group: str, rule: Rule, *where: str, **kw: Any
) -> Setting:
    """A :class:`Setting`, written compactly: ``where`` as the trailing arguments."""
    return Setting(name, type_, default, help, group, rule, frozenset(where), **kw)


#: Every training setting, in the order ``sparsekit train --help`` lists them.
SETTINGS: tuple[Setting, ...] = (
    _s("dataset", str, "mnist",
       "mnist, fashion-mnist, synthetic, synthetic-sae (see docs/data.md), a "
       ".npy/.npz/IDX file, or a folder of .npy/safetensors shards or a SAELens cache "
       "(streamed; DIR:name picks a tensor or column).",
       "data", PATH, "run", "compare"),
    _s("data", Path, None, "Data directory (default: $SPARSEKIT_DATA, else the user cache).",
       "data", PATH, "run", "compare", optional=True),
    _s("download", bool, True, "Download missing MNIST files.", "data", BOOLEAN, "run", "compare"),
    _s("subset", int, None, "Use only the first N training samples.",
       "data", POSITIVE_INT, "run", "compare", optional=True),
    _s("test_fraction", float, 0.1,
       "Share of a .npy/.npz/IDX file's rows held out for evaluation [0.1]; 0 trains on all.",
       "data", FRACTION, "run"),
    _s("stream_memory", int, 1024,
       "MiB of rows a streamed shard folder may hold in memory (the shuffle window) [1024].",
       "data", POSITIVE_INT, "run", "compare"),
    _s("stats_rows", int, 100_000,
       "Rows of a shard folder the mean (--center) and --norm-scale are estimated from.",
       "data", POSITIVE_INT, "run"),
    _s("norm_scale", bool, False,
       "Scale a shard folder's rows to a mean norm of sqrt(features), as SAELens does.",
       "data", BOOLEAN, "run"),
    _s("remove_mean", bool, False, "Subtract each sample's own mean (per-sample centring).",
       "data", BOOLEAN, "run"),
    _s("zca", bool, False, "ZCA-whiten the data (parameters saved in the run directory).",
       "data", BOOLEAN, "run"),
    _s("epochs", int, 10, "Passes over the data.",
       "optimiser", POSITIVE_INT, "config", "run", "compare", tunable=True),
    _s("hidden", int, 196, "Number of hidden units (code size).",
       "model", POSITIVE_INT, "config", "run", "compare", tunable=True),
    _s("batch_size", int, 128, "Samples per minibatch.",
       "optimiser", POSITIVE_INT, "config", "run", "compare", tunable=True),
    _s("lr", float, 1e-3, "Learning rate.",
       "optimiser", POSITIVE_NUMBER, "config", "run", tunable=True, per_method=True),
    _s("optimizer", str, "adam", "sgd, momentum or adam.",
       "optimiser", OPTIMIZER, "config", "run", tunable=True, per_method=True),
    _s("momentum", float, 0.9, "Momentum coefficient.",
       "optimiser", FRACTION, "config", "run", tunable=True, per_method=True),
    _s("tied", bool, False, "Share encoder and decoder weights.",
       "model", BOOLEAN, "config", "run", tunable=True, per_method=True, flag="--tied/--untied"),
    _s("center", bool, False,
       "Subtract the training data's mean image (stored with the model; encode and eval apply "
       "it). Default: the method's (on for ksparse).",
       "model", BOOLEAN, "config", "run", tunable=True, per_method=True,
       flag="--center/--no-center"),
    _s("seed", int, 0, "Seed for initialisation and shuffling.",
       "optimiser", NON_NEGATIVE_INT, "config", "run", "compare"),
    _s("dtype", str, "float32", "float32 or float64.",
       "optimiser", DTYPE, "config", "run", "compare"),
    _s("gpu", bool, False, "Train on a CUDA GPU with CuPy.",
       "optimiser", BOOLEAN, "config", "run", "compare", flag="--gpu"),
    _s("matmul_precision", str, "float32",
       "Matrix products of a GPU training step: float32 (exact) or tf32 (tensor cores, "
       "inputs rounded to 10 mantissa bits; --gpu with float32 only).",
       "optimiser", MATMUL_PRECISION, "config", "run", "compare"),
    _s("out", Path, Path("runs"), "Directory that receives the run directory.",
       "run output", PATH, "run"),
    _s("snapshot_every", int, 1, "Add a frame to progression.gif every N epochs [1].",
       "run output", POSITIVE_INT, "run", "compare", cli_unset=True),
    _s("checkpoint_every", int, 1, "Write checkpoint.npz every N epochs (and at the end) [1].",
       "run output", POSITIVE_INT, "run", cli_unset=True),
    _s("gif_frames", int, 60, "Frames each progression.gif shows at most, spread evenly [60].",
       "run output", AT_LEAST_TWO, "compare", cli_unset=True),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: The fields of :class:`TrainConfig` (what :func:`sparsekit.train` takes).
TRAIN_CONFIG_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if "config" in s.where)
#: What :func:`~sparsekit.runs.api.start_run` and ``sparsekit train`` take.
RUN_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if "run" in s.where)
#: What every method of a comparison (every trial of a sweep) shares: ``CompareSettings``.
SHARED: tuple[Setting, ...] = tuple(s for s in SETTINGS if "compare" in s.where)
#: Training settings a comparison may set per method (``--param arora.lr=0.05``).
PER_METHOD: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.per_method)


def setting(name: str) -> Setting:
    """The declared setting ``name`` (a :class:`ParameterError` naming it if unknown)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ParameterError(f"unknown training setting {name!r}") from None


def check_settings(values: Mapping[str, Any]) -> None:
    """Check every value of ``values`` (any subset of :data:`SETTINGS`, by name); the first
    impossible one raises ``--flag must be ..., got ...``."""
    for name, value in values.items():
        setting(name).check(value)


def parse_setting(name: str, text: Any) -> Any:
    """``text`` (e.g. a string from ``METHOD.NAME=VALUE``) as setting ``name``'s value."""
    return setting(name).parse(text)


def split_settings(
    values: Mapping[str, Any], declared: Iterable[Setting]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` split into (the ``declared`` settings, the rest: a method's parameters)."""
    names = {s.name for s in declared}
    ours = {k: v for k, v in values.items() if k in names}
    return ours, {k: v for k, v in values.items() if k not in names}


def settings_signature(
    func: Callable[..., Any],
    declared: Iterable[Setting],
    default: Callable[[Setting], Any],
    keep_var_keyword: str | None = None,
) -> inspect.Signature:
    """``func``'s signature with each ``declared`` setting as a keyword-only parameter.

    ``func`` takes the settings through ``**settings``; the signature shown by ``help()``,
    ``inspect`` and editors lists them by name (their default is ``default(setting)``) in
    place of that catch-all, which stays, renamed ``keep_var_keyword``, when ``func`` also
    passes other keywords on (a method's parameters), and goes otherwise. Settings that are
    already parameters of ``func`` keep their place.
    """
    params = list(inspect.signature(func).parameters.values())
    var = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in params}  # e.g. start_run's positional ``dataset``
    for s in (s for s in declared if s.name not in taken):
        value = default(s)
        annotation = s.type if value is not None else s.type | None
        params.append(
            inspect.Parameter(
                s.name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=annotation
            )
        )
    if var and keep_var_keyword:
        params.append(var[0].replace(name=keep_var_keyword))
    return inspect.signature(func).replace(parameters=params)


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class TrainConfig:
    """How to train: sizes, optimisation, randomness and where the arrays live.

    Its fields are the ``config`` settings of :data:`SETTINGS`, with their defaults (a test
    keeps the two the same). Build one with :func:`resolve_config` to get the method's
    recommended defaults for every field the user did not set.
    """

    hidden: int = 196
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    tied: bool = False
    #: Subtract the training data's mean sample from every sample (the mean is part of the
    #: model: encode subtracts it, decode adds it back).
    center: bool = False
    seed: int = 0
    dtype: str = "float32"
    gpu: bool = False
    #: The GPU step's matrix products: "float32" or "tf32" (see sparsekit.backend).
    matmul_precision: str = "float32"

    def validate(self, method: Method | type[Method] | None = None) -> TrainConfig:
        """Raise :class:`ParameterError` for impossible settings; return self."""
        check_settings(asdict(self))
        check_matmul_precision(self.matmul_precision, self.gpu, resolve_dtype(self.dtype))
        if method is not None:
            if self.tied and not method.allows_tied:
                raise ParameterError(f"method {method.name!r} does not support tied weights")
            if not self.tied and not method.allows_untied:
                raise ParameterError(f"method {method.name!r} needs tied weights (drop --untied)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def resolve_config(method: Method | type[Method], **overrides: Any) -> TrainConfig:
    """A validated config: global defaults < the method's ``training_defaults`` < overrides.

    ``None`` in ``overrides`` means "not set by the user".
    """
    known = {s.name for s in TRAIN_CONFIG_SETTINGS}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"unknown training setting {unknown[0]!r}")
    user = {k: v for k, v in overrides.items() if v is not None}
    check_settings(user)  # the user's values first: the message names what they gave
    if "dtype" in user:
        user["dtype"] = str(resolve_dtype(user["dtype"]))
    for name, value in user.items():
        if BY_NAME[name].type is int:
            user[name] = int(value)  # a NumPy integer is stored as the int it is
    base = TrainConfig(tied=method.tied)
    method_defaults = {k: v for k, v in method.training_defaults.items() if k in known}
    return replace(base, **{**method_defaults, **user}).validate(method)
