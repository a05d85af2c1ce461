"""A test kit for sparsity methods, in the spirit of scikit-learn's ``check_estimator``.

A plugin author tests a method against the whole contract of its type
(:class:`sparsekit.Method`, :class:`sparsekit.UpdateMethod`,
:class:`sparsekit.ObjectiveMethod` or :class:`sparsekit.ObjectiveUpdateMethod`) with one
line::

    from sparsekit.testing import method_contract_tests
    test_contract = method_contract_tests(MyMethod)          # one pytest test per check

or, without pytest's parametrisation::

    from sparsekit.testing import check_method
    def test_contract():
        check_method(MyMethod, k=3)                          # method parameters, if needed

Each check raises :class:`AssertionError` with a message naming the method, the check and
what is wrong. The checks (see :data:`CHECKS`):

* ``class_attributes`` – the class passes :func:`~sparsekit.core.contract.check_method_class`
  (as it must to register); name, description, params, layouts, training_defaults are usable.
* ``declarations`` – what the step reads is declared: the activations are
  :class:`~sparsekit.core.activations.Activation` objects, and a method whose penalties
  return something declares ``uses_code_penalty``.
* ``defaults_valid`` – every default passes its own check; the method validates at its
  default problem size and at the kit's tiny one with the given parameters.
* ``parameter_validation`` – unknown names, wrong types and every value a ``Param.check``
  rejects raise :class:`~sparsekit.ParameterError` naming the parameter.
* ``init_params`` – float64 NumPy arrays of the right shapes, finite.
* ``gradients_tied`` / ``gradients_untied`` – float64 central differences of the full loss
  and of each term (:func:`sparsekit.testing.gradcheck.check_gradients`), for each allowed layout.
* ``dtypes_float32`` / ``dtypes_float64`` – every array a method returns keeps the compute
  dtype (no silent upcast) and the expected shape, and is an array of the backend's type (no
  host/device mixing; with a usable GPU the checks also run on CuPy).
* ``deterministic`` – two trainings on a tiny random problem with one seed give identical
  weights.
* ``training_lowers_loss`` – a short training lowers the objective on a tiny problem.
* ``state_dict`` – the method's state round-trips through ``load_state_dict``.
* ``batch_reduction`` – what ``batch_reduction`` declares is what the step computes: for a
  generic-step method declaring ``ROW_MEAN``, the loss and gradients of a batch are the
  share-weighted sums of those of its two halves (data-parallel training relies on it); with
  ``COLUMN_MEANS``, the same when each half's penalty is computed from the whole batch's
  column means, and ``penalty_from_column_means`` of a batch's means is ``code_penalty``.

The problems are tiny (12 inputs, 8 hidden units) so the whole kit runs in about a second
per method. Parameters that need a bigger hidden size (e.g. k-sparse's ``k``) must be given
small values: ``check_method(KSparse, k=3, k_start=3)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.backend import Backend, get_backend
from sparsekit.backend.simulated import simulated_backend  # noqa: F401  (for plugin tests)
from sparsekit.core import step as autoencoder
from sparsekit.core.activations import Activation
from sparsekit.core.contract import (
    BATCH_REDUCTIONS,
    COLUMN_MEANS,
    BaseMethod,
    BatchShare,
    Method,
    ObjectiveMethod,
    Param,
    RowPenalty,
    StepResult,
    TopK,
    UpdateMethod,
    check_method_class,
    penalty_pair,
)
from sparsekit.core.declarations import option_of
from sparsekit.data.paths import resolve_data_dir
from sparsekit.errors import BackendError, ParameterError, PluginError, SparsekitError
from sparsekit.testing.gradcheck import check_gradients
from sparsekit.training.settings import TrainConfig, resolve_config
from sparsekit.training.trainer import Trainer

#: The tiny problem every check uses.
DIM = 12
HIDDEN = 8
BATCH = 6
SAMPLES = 64
#: Problem size at which the defaults must be valid when a method declares no ``hidden``.
DEFAULT_DIM = 784

#: Command-line options of ``sparsekit train``: a method parameter may not reuse one.
RESERVED_NAMES = frozenset(f.name for f in fields(TrainConfig)) | {
    "dataset",
    "data",
    "download",
    "subset",
    "out",
    "method",
}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*([._-][a-z0-9]+)*$")

#: Values tried against each ``Param.check``: whatever the check rejects must be rejected by
#: ``validate``.
_PROBES: dict[type, tuple[Any, ...]] = {
    float: (-1e6, -1.0, -1e-9, 0.0, 1e-9, 0.5, 1.0, 2.0, 1e6, math.nan, math.inf, -math.inf),
    int: (-1000, -1, 0, 1, 2, HIDDEN, HIDDEN + 1, 10**6),
    str: ("", "no-such-choice", " "),
    bool: (True, False),
}
#: A value of the wrong type for each parameter type (rejected when constructing).
_WRONG_TYPE: dict[type, Any] = {
    float: "not-a-number",
    int: "not-an-int",
    bool: "maybe",
    str: 3,
}


class ContractError(AssertionError):
    """A method breaks the contract; the message says which check and how."""


# -- helpers ------------------------------------------------------------------------------


def _fail(cls: type[BaseMethod], check: str, message: str) -> None:
    raise ContractError(f"{getattr(cls, 'name', cls)!s} [{check}]: {message}")


def _make(cls: type[BaseMethod], params: Mapping[str, Any], check: str) -> BaseMethod:
    try:
        method = cls(**params)
        method.validate(HIDDEN, DIM)
    except ParameterError as exc:
        _fail(
            cls,
            check,
            f"cannot build it with {dict(params)} for hidden={HIDDEN}, dim={DIM}: {exc} "
            "(pass parameters that fit a tiny problem, e.g. check_method(cls, k=3))",
        )
    return method


def _layouts(cls: type[BaseMethod]) -> list[bool]:
    return [t for t, ok in ((True, cls.allows_tied), (False, cls.allows_untied)) if ok]


def _extra_params(cls: type[BaseMethod]) -> Mapping[str, tuple[str, ...]]:
    """The parameters beyond the four an :class:`ObjectiveMethod` declares (others: none)."""
    return cls.extra_params if issubclass(cls, ObjectiveMethod) else {}


def _tiny_data(seed: int = 0) -> np.ndarray:
    """``SAMPLES`` rows in [0, 1] built from a few non-negative atoms, plus noise."""
    rng = np.random.default_rng(seed)
    atoms = rng.uniform(0, 1, size=(4, DIM))
    codes = rng.uniform(0, 1, size=(SAMPLES, 4)) * (rng.uniform(size=(SAMPLES, 4)) < 0.5)
    data = codes @ atoms / 2 + 0.05 * rng.uniform(size=(SAMPLES, DIM))
    return np.clip(data, 0, 1)


def backends() -> list[Backend]:
    """The backends the dtype checks run on: NumPy, and CuPy when a GPU is usable."""
    found = [get_backend(gpu=False, dtype="float32")]
    try:
        found.append(get_backend(gpu=True, dtype="float32"))
    except BackendError:
        pass
    return found


def _is_backend_array(backend: Backend, value: Any) -> bool:
    if backend.is_gpu:
        return isinstance(value, backend.xp.ndarray)
    return isinstance(value, (np.ndarray, np.generic))


class _ArrayChecker:
    """Checks the type, dtype and shape of what a method returns on one backend."""

    def __init__(self, cls: type[BaseMethod], check: str, backend: Backend) -> None:
        self.cls, self.check, self.backend = cls, check, backend

    def __call__(self, what: str, value: Any, shape: tuple[int, ...] | None = None) -> None:
        backend = self.backend
        if not _is_backend_array(backend, value):
            _fail(
                self.cls,
                self.check,
                f"{what} is a {type(value).__module__}.{type(value).__name__}, not a "
                f"{backend.name} array: compute with the `xp` you are given and keep results "
                "on its device (no float(), .item(), numpy on CuPy arrays)",
            )
        if value.dtype != backend.dtype:
            _fail(
                self.cls,
                self.check,
                f"{what} has dtype {value.dtype}, the computation runs in {backend.dtype} "
                "(an upcast or downcast: avoid float64 constants arrays, np.float64(...), "
                "and dtype= arguments)",
            )
        if shape is not None and tuple(value.shape) != tuple(shape):
            _fail(self.cls, self.check, f"{what} has shape {tuple(value.shape)}, expected {shape}")


# -- the checks ---------------------------------------------------------------------------


def check_class_attributes(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "class_attributes"
    if not (isinstance(cls, type) and issubclass(cls, BaseMethod)):
        raise ContractError(f"{cls!r} is not a subclass of sparsekit.Method")
    try:
        check_method_class(cls)
    except PluginError as exc:
        _fail(cls, c, f"refused when it registers: {exc}")
    if not isinstance(cls.name, str) or not NAME_PATTERN.match(cls.name):
        _fail(
            cls,
            c,
            f"name {cls.name!r} must be a non-empty lower-case word (letters, digits, '-', '_', '.')",
        )
    for attr in ("description", "citation"):
        value = getattr(cls, attr)
        if not isinstance(value, str):
            _fail(cls, c, f"{attr} must be a string, got {type(value).__name__}")
    if not cls.description.strip() or "\n" in cls.description.strip():
        _fail(cls, c, "description must be one non-empty line (shown by `sparsekit list`)")
    if not isinstance(cls.params, tuple) or not all(isinstance(p, Param) for p in cls.params):
        _fail(cls, c, "params must be a tuple of sparsekit.Param")
    names = [p.name for p in cls.params]
    if len(set(names)) != len(names):
        _fail(cls, c, f"parameter names repeat: {names}")
    for p in cls.params:
        if not p.name.isidentifier():
            _fail(cls, c, f"parameter name {p.name!r} is not a Python identifier")
        if p.name in RESERVED_NAMES:
            _fail(
                cls,
                c,
                f"parameter {p.name!r} clashes with the `sparsekit train --{p.name}` option",
            )
        if p.type not in (int, float, bool, str):
            _fail(cls, c, f"parameter {p.name!r}: type must be int, float, bool or str")
        if not p.help:
            _fail(cls, c, f"parameter {p.name!r} has no help text")
    for attr in ("tied", "allows_tied", "allows_untied"):
        if not isinstance(getattr(cls, attr), bool):
            _fail(cls, c, f"{attr} must be a bool")
    if not (cls.allows_tied or cls.allows_untied):
        _fail(cls, c, "allows_tied and allows_untied are both false")
    if (cls.tied and not cls.allows_tied) or (not cls.tied and not cls.allows_untied):
        _fail(cls, c, f"the default layout (tied={cls.tied}) is not allowed by the method")
    for name, spec in _extra_params(cls).items():
        if name in ("W_enc", "b_enc", "b_dec", "W_dec") or not name.isidentifier():
            _fail(cls, c, f"extra_params: {name!r} is not a new parameter name")
        if not isinstance(spec, tuple) or not all(s in ("hidden", "dim") for s in spec):
            _fail(cls, c, f"extra_params[{name!r}] must be a tuple of 'hidden' and 'dim'")
    known_params = {"W_enc", "b_enc", "b_dec", "W_dec", *_extra_params(cls)}
    for attr in ("unit_params", "surrogates"):
        unknown_params = sorted(set(getattr(cls, attr, ())) - known_params)
        if unknown_params:
            _fail(cls, c, f"{attr} names {unknown_params}, not parameters of the method")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(cls.training_defaults) - known)
    if unknown:
        _fail(cls, c, f"training_defaults has unknown settings {unknown} (known: {sorted(known)})")
    try:
        resolve_config(cls)
    except ParameterError as exc:
        _fail(cls, c, f"training_defaults are not valid: {exc}")


def check_declarations(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    """What the step reads is declared, and the declarations match what the methods do.

    The generic step takes f and g from ``hidden_activation`` / ``output_activation`` only
    (a class that defines the first contract's ``activation()`` or ``output()`` is refused
    by ``class_attributes``), and builds the dense code on a top-k support only for a method
    that declares ``uses_code_penalty``: a method whose penalties disagree with that
    declaration would train something else than it says.
    """
    c = "declarations"
    if issubclass(cls, Method):
        declared: tuple[str, ...] = ("hidden_activation", "output_activation")
    else:  # an ObjectiveMethod's g is what Model.decode applies
        declared = ("output_activation",)
    for attr in declared:
        if not isinstance(getattr(cls, attr), Activation):
            _fail(cls, c, f"{attr} must be a sparsekit.core.activations.Activation instance")
    method = _make(cls, params, c)
    if not isinstance(method, Method) or method.uses_code_penalty:
        return
    rng = np.random.default_rng(3)
    code = np.abs(rng.standard_normal((BATCH, HIDDEN)))
    weights = {"W_enc": rng.standard_normal((HIDDEN, DIM))}
    if (
        method.code_penalty(np, code) is not None
        or method.code_weight_penalty(np, code, weights) is not None
    ):
        _fail(
            cls,
            c,
            "code_penalty() or code_weight_penalty() returns a penalty but the class does "
            "not declare uses_code_penalty = True",
        )


def check_defaults_valid(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "defaults_valid"
    hidden = int(cls.training_defaults.get("hidden", TrainConfig.hidden))
    size = {"hidden": hidden, "dim": DEFAULT_DIM}
    for p in cls.params:
        if p.default is None:
            continue
        try:
            value = p.convert(p.default)
        except ParameterError as exc:
            _fail(cls, c, f"default of {p.name!r} does not convert to {p.type.__name__}: {exc}")
        if p.check is not None and p.check(value, size):
            _fail(
                cls,
                c,
                f"default {p.default!r} of {p.name!r} fails its check: {p.check(value, size)}",
            )
    try:
        cls().validate(hidden, DEFAULT_DIM)
    except ParameterError as exc:
        _fail(cls, c, f"the defaults do not validate at hidden={hidden}, dim={DEFAULT_DIM}: {exc}")
    _make(cls, params, c)


def _names(exc: Exception, name: str) -> bool:
    """Whether ``exc`` names parameter ``name``: as the option ``--pre-bias`` (how sparsekit's
    own messages name it) or as the keyword ``pre_bias``."""
    return name in str(exc) or option_of(name) in str(exc)


def check_parameter_validation(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "parameter_validation"
    try:
        cls(**params, no_such_parameter_xyz=1)
    except ParameterError as exc:
        if not _names(exc, "no_such_parameter_xyz"):
            _fail(cls, c, f"the error for an unknown parameter does not name it: {exc}")
    else:
        _fail(cls, c, "an unknown parameter name was accepted")
    size = {"hidden": HIDDEN, "dim": DIM}
    for p in cls.params:
        wrong = _WRONG_TYPE[p.type] if p.type in _WRONG_TYPE else object()
        try:
            cls(**{**params, p.name: wrong})
        except ParameterError as exc:
            if not _names(exc, p.name):
                _fail(cls, c, f"the error for a wrong type of {p.name!r} does not name it: {exc}")
        else:
            _fail(cls, c, f"{p.name!r} ({p.type.__name__}) accepted {wrong!r}")
        if p.check is None:
            continue
        for probe in _PROBES.get(p.type, ()):
            if p.check(probe, size) is None:
                continue  # the check allows it; nothing to verify
            try:
                method = cls(**{**params, p.name: probe})
                method.validate(HIDDEN, DIM)
            except ParameterError as exc:
                if not _names(exc, p.name):
                    _fail(cls, c, f"the error for {p.name}={probe!r} does not name it: {exc}")
            except Exception as exc:
                _fail(
                    cls,
                    c,
                    f"{p.name}={probe!r} raised {type(exc).__name__} ({exc}), not ParameterError",
                )
            else:
                _fail(
                    cls,
                    c,
                    f"{p.name}={probe!r} is rejected by its check but validate() accepted it "
                    "(does validate() call super().validate()?)",
                )


def check_init_params(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "init_params"
    for tied in _layouts(cls):
        method = _make(cls, params, c)
        rng = np.random.default_rng(0)
        got = method.init_params(rng, DIM, HIDDEN, tied, _tiny_data())
        expected = {"W_enc": (HIDDEN, DIM), "b_enc": (HIDDEN,), "b_dec": (DIM,)}
        if not tied:
            expected["W_dec"] = (HIDDEN, DIM)
        sizes = {"hidden": HIDDEN, "dim": DIM}
        for name, spec in _extra_params(cls).items():
            expected[name] = tuple(sizes[s] for s in spec)
        if not isinstance(got, dict) or set(got) != set(expected):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            _fail(cls, c, f"tied={tied}: expected parameters {sorted(expected)}, got {keys}")
        for name, shape in expected.items():
            value = got[name]
            if not isinstance(value, np.ndarray) or value.dtype != np.float64:
                _fail(cls, c, f"tied={tied}: {name} must be a float64 NumPy array")
            if value.shape != shape:
                _fail(cls, c, f"tied={tied}: {name} has shape {value.shape}, expected {shape}")
            if not np.isfinite(value).all():
                _fail(cls, c, f"tied={tied}: {name} holds NaN or infinite values")


def _check_gradients(tied: bool) -> Callable[[type[BaseMethod], Mapping[str, Any]], None]:
    def check(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
        c = f"gradients_{'tied' if tied else 'untied'}"
        method = _make(cls, params, c)
        report = check_gradients(method, tied=tied, terms=True)
        if not report.ok:
            _fail(cls, c, report.summary())

    return check


def _check_dtypes(dtype: str, gpu: bool) -> Callable[[type[BaseMethod], Mapping[str, Any]], None]:
    def check(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
        c = f"dtypes_{dtype}" + ("_gpu" if gpu else "")
        backend = get_backend(gpu=gpu, dtype=dtype)
        for tied in _layouts(cls):
            _dtypes_one_layout(cls, params, backend, tied, f"{c} tied={tied}")

    return check


def _dtypes_one_layout(
    cls: type[BaseMethod], params: Mapping[str, Any], backend: Backend, tied: bool, c: str
) -> None:
    """Every array the method returns, on ``backend`` in one weight layout."""
    method = _make(cls, params, c)
    rng = np.random.default_rng(1)
    x_host = _tiny_data()[:BATCH]
    init = method.init_params(rng, DIM, HIDDEN, tied, x_host)
    p = {k: backend.asarray(v) for k, v in init.items()}
    x = backend.asarray(x_host)
    if isinstance(method, ObjectiveMethod):
        _dtypes_own_objective(cls, method, p, x, backend, c)
        if method.own_update:  # an ObjectiveUpdateMethod
            _dtypes_update(cls, method, p, x, backend, c)
        return
    assert isinstance(method, Method)
    arr = _ArrayChecker(cls, c, backend)
    fwd = _dtypes_forward(cls, method, p, x, backend, c)
    code = autoencoder.dense_code(backend, fwd)
    arr("the code", code, (BATCH, HIDDEN))
    _dtypes_penalties(cls, method, p, code, backend, c)
    if isinstance(method, UpdateMethod):
        _dtypes_update(cls, method, p, x, backend, c)
    else:
        loss, grads, _, rec = autoencoder.loss_and_grads(method, backend, p, x)
        arr("the loss", loss, ())
        arr("the reconstruction term", rec, ())
        for name, value in p.items():
            arr(f"gradient of {name}", grads[name], value.shape)


def _dtypes_update(
    cls: type[BaseMethod], method: Any, p: dict[str, Any], x: Any, backend: Backend, c: str
) -> None:
    """What an own update returns, and the parameters it leaves."""
    arr = _ArrayChecker(cls, c, backend)
    before = {k: v.shape for k, v in p.items()}
    out = method.update(backend, p, x, 0.01)
    if not isinstance(out, StepResult):
        _fail(cls, c, "update() must return a sparsekit.StepResult(loss, reconstruction, forward)")
    arr("update().loss", out.loss, ())
    arr("update().reconstruction", out.reconstruction, ())
    for name, shape in before.items():
        arr(f"parameter {name} after update()", p[name], shape)


def _dtypes_forward(
    cls: type[BaseMethod], method: Method, p: dict[str, Any], x: Any, backend: Backend, c: str
) -> autoencoder.Forward:
    """The declared f and g (values and derivatives) and the mask, as the step reads them;
    returns the training forward pass."""
    xp = backend.xp
    arr = _ArrayChecker(cls, c, backend)
    bh, bd = (BATCH, HIDDEN), (BATCH, DIM)
    f, g = method.hidden_activation, method.output_activation
    z = autoencoder.pre_activation(xp, p, x)
    a = f.value(xp, z)
    arr("hidden_activation.value(z)", a, bh)
    fp = f.derivative(xp, z, a)
    if fp is not None:
        arr("hidden_activation.derivative(z, a)", fp, bh)
    for training in (True, False):
        support = method.mask(xp, z, a, training)
        what = f"mask(training={training})"
        if isinstance(support, TopK):
            idx = support.indices
            if not _is_backend_array(backend, idx) or idx.dtype.kind not in "iu":
                _fail(cls, c, f"{what}: TopK.indices must be an integer {backend.name} array")
            if idx.ndim != 2 or idx.shape[0] != BATCH or not 1 <= idx.shape[1] <= HIDDEN:
                _fail(cls, c, f"{what}: TopK.indices has shape {idx.shape}, expected (B, k)")
        elif support is not None:
            arr(what, support, bh)
    fwd = autoencoder.forward(method, backend, p, x, training=True)
    arr("output_activation.value(y)", fwd.xhat, bd)
    gp = g.derivative(xp, fwd.y, fwd.xhat)
    if gp is not None:
        arr("output_activation.derivative(y, xhat)", gp, bd)
    return fwd


def _dtypes_penalties(
    cls: type[BaseMethod], method: Method, p: dict[str, Any], code: Any, backend: Backend, c: str
) -> None:
    """The values and gradients of the three penalties, on the dense code."""
    xp = backend.xp
    arr = _ArrayChecker(cls, c, backend)
    bh = (BATCH, HIDDEN)
    result = method.code_penalty(xp, code)
    if isinstance(result, RowPenalty):
        arr("code_penalty value", result.value, ())
        arr("code_penalty row", result.row, (HIDDEN,))
    elif result is not None:
        arr("code_penalty value", result[0], ())
        arr("code_penalty gradient", result[1], bh)
    weights = {k: p[k] for k in ("W_enc", "W_dec") if k in p}
    result = method.weight_penalty(xp, weights)
    if result is not None:
        value, d_weights = penalty_pair(result)
        arr("weight_penalty value", value, ())
        for name, d in d_weights.items():
            if name not in weights:
                _fail(cls, c, f"weight_penalty returned a gradient for unknown {name!r}")
            arr(f"weight_penalty gradient {name}", d, weights[name].shape)
    result = method.code_weight_penalty(xp, code, weights)
    if result is not None:
        arr("code_weight_penalty value", result[0], ())
        arr("code_weight_penalty code gradient", result[1], bh)
        for name, d in result[2].items():
            if name not in weights:
                _fail(cls, c, f"code_weight_penalty returned a gradient for unknown {name!r}")
            arr(f"code_weight_penalty gradient {name}", d, weights[name].shape)


def _dtypes_own_objective(
    cls: type[BaseMethod],
    method: ObjectiveMethod,
    p: dict[str, Any],
    x: Any,
    backend: Backend,
    c: str,
) -> None:
    """The arrays of an own objective: forward passes, loss, terms and every gradient."""
    arr = _ArrayChecker(cls, c, backend)
    for training in (True, False):
        fwd = method.forward(backend, _copy(p), x, training)
        arr(f"forward(training={training}).xhat", fwd.xhat, (BATCH, DIM))
        arr(
            f"forward(training={training}) code",
            autoencoder.dense_code(backend, fwd),
            (BATCH, HIDDEN),
        )
    state = method.check_state(np.random.default_rng(2), HIDDEN)
    if state.dead is not None:
        state.dead = backend.xp.asarray(state.dead)
    for term in (None, *method.terms):
        what = "loss_and_grads" + ("" if term is None else f"(term={term!r})")
        loss, grads, _, rec = method.loss_and_grads(backend, _copy(p), x, state, term)
        arr(f"{what} loss", loss, ())
        arr(f"{what} reconstruction", rec, ())
        if set(grads) != set(p):
            _fail(cls, c, f"{what} returns gradients for {sorted(grads)}, expected {sorted(p)}")
        for name, value in p.items():
            arr(f"{what} gradient of {name}", grads[name], value.shape)


def _train(cls: type[BaseMethod], params: Mapping[str, Any], c: str, epochs: int) -> tuple[Any, ...]:

    method = _make(cls, params, c)
    config = resolve_config(
        method, hidden=HIDDEN, epochs=epochs, batch_size=16, seed=0, dtype="float64", gpu=False
    )
    data = _tiny_data()
    trainer = Trainer(method, data, config)
    backend = trainer.backend
    x = backend.asarray(data)
    method.on_epoch_start(0, epochs)
    before = float(autoencoder.objective(method, backend, _copy(trainer.params), x))
    try:
        trainer.fit()
    except SparsekitError as exc:
        _fail(cls, c, f"training on the tiny problem failed: {exc}")
    after = float(autoencoder.objective(method, backend, _copy(trainer.params), x))
    return trainer, before, after


def check_deterministic(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "deterministic"
    first, _, _ = _train(cls, params, c, epochs=2)
    second, _, _ = _train(cls, params, c, epochs=2)
    for name, value in first.params.items():
        if not np.array_equal(np.asarray(value), np.asarray(second.params[name])):
            _fail(
                cls,
                c,
                f"two trainings with seed 0 give different {name}: draw randomness only from "
                "the rng passed to init_params, keep no state between instances",
            )


def check_training_lowers_loss(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "training_lowers_loss"
    _, before, after = _train(cls, params, c, epochs=10)
    if not (math.isfinite(after) and after < before):
        _fail(
            cls,
            c,
            f"10 epochs on a tiny problem did not lower the loss ({before:.6g} -> {after:.6g}); "
            "check the gradient signs and the training_defaults learning rate",
        )


def check_state_dict(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    c = "state_dict"
    method = _make(cls, params, c)
    method.on_epoch_start(1, 3)
    state = method.state_dict()
    if not isinstance(state, dict):
        _fail(cls, c, f"state_dict() must return a dict, got {type(state).__name__}")
    fresh = _make(cls, params, c)
    try:
        fresh.load_state_dict(state)
    except Exception as exc:
        _fail(cls, c, f"load_state_dict(state_dict()) raised {type(exc).__name__}: {exc}")
    if fresh.get_params() != method.get_params():
        _fail(cls, c, "load_state_dict changed the parameters")


def _copy(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.copy() for k, v in params.items()}


# -- running them -------------------------------------------------------------------------

class _KnownSums:
    """A stand-in communicator for one rank whose sums over the ranks are known in advance
    (the whole batch's), so the kit can compute one share's step alone."""

    rank, size, distributed = 0, 2, True

    def __init__(self, total: Any) -> None:
        self.total = total

    def allreduce_sum(self, array: Any) -> Any:
        return self.total


def check_batch_reduction(cls: type[BaseMethod], params: Mapping[str, Any]) -> None:
    """The declared ``batch_reduction`` matches the step (see the module docstring)."""
    c = "batch_reduction"
    declared = cls.batch_reduction
    if declared is None:
        return  # undeclared: --distributed refuses the method, nothing to check
    if declared not in BATCH_REDUCTIONS:
        _fail(cls, c, f"batch_reduction is {declared!r}, not one of {BATCH_REDUCTIONS}")
    if not issubclass(cls, Method) or issubclass(cls, UpdateMethod):
        return  # their batch-wide parts go through StepState.share / update(reduce=)
    backend = get_backend(gpu=False, dtype="float64")
    method = _make(cls, params, c)
    x = _tiny_data(5)[: 2 * BATCH + 1]
    for tied in _layouts(cls):
        init = method.init_params(np.random.default_rng(1), DIM, HIDDEN, tied, x)
        full = autoencoder.loss_and_grads_before_decay(method, backend, _copy(init), x)
        share = None
        if declared == COLUMN_MEANS:
            code = autoencoder.dense_code(backend, full[2])
            penalty, given = method.code_penalty(np, code), method.penalty_from_column_means(
                np, code.mean(axis=0), len(x)
            )
            if not (
                isinstance(penalty, RowPenalty)
                and np.allclose(penalty.value, given.value, rtol=1e-10, atol=0)
                and np.allclose(penalty.row, given.row, rtol=1e-10, atol=1e-300)
            ):
                _fail(cls, c, "penalty_from_column_means() of the code's means is not "
                      "code_penalty() of the code (a RowPenalty)")  # fmt: skip
            share = code.sum(axis=0)
        cut = BATCH  # uneven halves: BATCH and BATCH + 1 rows
        loss, grads = 0.0, {k: 0.0 for k in full[1]}
        for part in (x[:cut], x[cut:]):
            weight = len(part) / len(x)
            given_share = None if share is None else BatchShare(_KnownSums(share), len(part), len(x))
            got = autoencoder.loss_and_grads_before_decay(
                method, backend, _copy(init), part, share=given_share
            )
            loss = loss + weight * float(got[0])
            for name, value in got[1].items():
                grads[name] = grads[name] + weight * value
        layout = "tied" if tied else "untied"
        if not np.isclose(loss, float(full[0]), rtol=1e-9, atol=1e-12):
            _fail(cls, c, f"declares {declared} but the loss of a batch ({float(full[0])!r}) is "
                  f"not the share-weighted sum of its halves' ({loss!r}), {layout}")  # fmt: skip
        for name, value in full[1].items():
            if not np.allclose(grads[name], value, rtol=1e-9, atol=1e-12):
                _fail(cls, c, f"declares {declared} but the gradient of {name} of a batch is not "
                      f"the share-weighted sum of its halves', {layout}")  # fmt: skip


Check = Callable[[type[BaseMethod], Mapping[str, Any]], None]

#: Every check by name, in the order they run (layout and backend ones are expanded per
#: method by :func:`iter_checks`).
CHECKS: dict[str, Check] = {
    "class_attributes": check_class_attributes,
    "declarations": check_declarations,
    "defaults_valid": check_defaults_valid,
    "parameter_validation": check_parameter_validation,
    "init_params": check_init_params,
    "gradients_tied": _check_gradients(True),
    "gradients_untied": _check_gradients(False),
    "dtypes_float32": _check_dtypes("float32", gpu=False),
    "dtypes_float64": _check_dtypes("float64", gpu=False),
    "deterministic": check_deterministic,
    "training_lowers_loss": check_training_lowers_loss,
    "state_dict": check_state_dict,
    "batch_reduction": check_batch_reduction,
}


def iter_checks(
    method_cls: type[BaseMethod], **params: Any
) -> Iterator[tuple[str, Callable[[], None]]]:
    """``(name, run)`` for every check that applies to ``method_cls``; ``run()`` raises."""
    for name, check in CHECKS.items():
        if name == "gradients_tied" and not getattr(method_cls, "allows_tied", True):
            continue
        if name == "gradients_untied" and not getattr(method_cls, "allows_untied", True):
            continue
        yield name, _bind(check, method_cls, params)
    if any(b.is_gpu for b in backends()):
        for dtype in ("float32", "float64"):
            yield f"dtypes_{dtype}_gpu", _bind(_check_dtypes(dtype, gpu=True), method_cls, params)


def _bind(check: Check, cls: type[BaseMethod], params: Mapping[str, Any]) -> Callable[[], None]:
    def run() -> None:
        check(cls, dict(params))

    return run


def check_method(method_cls: type[BaseMethod], **params: Any) -> None:
    """Run every contract check; raise :class:`AssertionError` listing each failure.

    ``params`` are the method's own parameters for the tiny problems (8 hidden units).
    """
    failures = []
    for name, run in iter_checks(method_cls, **params):
        try:
            run()
        except AssertionError as exc:
            failures.append(str(exc))
        except Exception as exc:  # a crash inside the method is a failure of that check
            failures.append(
                f"{getattr(method_cls, 'name', method_cls)} [{name}]: raised "
                f"{type(exc).__name__}: {exc}"
            )
    if failures:
        raise ContractError(
            f"{len(failures)} contract check(s) failed:\n" + "\n".join(f"  {f}" for f in failures)
        )


def method_contract_tests(method_cls: type[BaseMethod], **params: Any) -> Callable[..., None]:
    """A pytest test function parametrised over the checks: assign it to a ``test_`` name.

    ::

        test_contract = method_contract_tests(MyMethod, k=3)
    """
    import pytest

    cases = [pytest.param(run, id=name) for name, run in iter_checks(method_cls, **params)]

    @pytest.mark.parametrize("contract_check", cases)
    def test_contract(contract_check: Callable[[], None]) -> None:
        contract_check()

    test_contract.__doc__ = f"The sparsekit method contract for {method_cls.__name__}."
    return test_contract


# --------------------------------------------------------------------------- test data


#: Environment variable naming the folder (holding ``mnist/``) a test suite reads MNIST from.
TEST_DATA_ENV = "SPARSEKIT_TEST_DATA"


def mnist_data_dir() -> Path:
    """The folder holding ``mnist/`` that tests read: ``$SPARSEKIT_TEST_DATA`` if set, else
    the folder sparsekit itself uses (``$SPARSEKIT_DATA``, else the per-user cache, where
    ``sparsekit train`` downloads MNIST). A test suite never downloads; it finds the files
    a first training run left, or the folder a CI job names."""
    import os


    named = os.environ.get(TEST_DATA_ENV, "").strip()
    return (Path(named).expanduser() if named else resolve_data_dir(None)).resolve()
