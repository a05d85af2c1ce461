"""scikit-learn estimators: any sparsekit method as a transformer.

:class:`SparseCoding` wraps every registered method (built-in or plugin) in scikit-learn's
transformer API, so a sparse code can sit in a :class:`~sklearn.pipeline.Pipeline` and its
hyperparameters can be tuned by :class:`~sklearn.model_selection.GridSearchCV`::

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sparsekit.interop.sklearn import SparseCoding

    pipe = make_pipeline(SparseCoding("ksparse", hidden=100, epochs=5), LogisticRegression())
    search = GridSearchCV(pipe, {"sparsecoding__k": [5, 10]}, n_jobs=2).fit(X, y)

The method's own parameters (``k`` of k-sparse, ``l1`` of relu-l1, ...) are keyword
arguments of the constructor and appear in :meth:`SparseCoding.get_params` next to the
training settings, with the method's declared defaults when not given.

scikit-learn is an optional dependency: ``pip install 'sparsekit[sklearn]'``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sparsekit.interop.sklearn needs scikit-learn >= 1.6: pip install 'sparsekit[sklearn]'"
    ) from exc

from sparsekit.backend import get_backend, resolve_dtype
from sparsekit.core.contract import BaseMethod
from sparsekit.data.dataset import ArrayDataset
from sparsekit.errors import ParameterError, UnknownMethodError
from sparsekit.methods.registry import load_registry
from sparsekit.training.model import Model
from sparsekit.training.settings import (
    NON_NEGATIVE_INT,
    TRAIN_CONFIG_SETTINGS,
    check_value,
    resolve_config,
)
from sparsekit.training.trainer import Trainer, make_method

__all__ = ["SparseCoding"]

#: The training settings the constructor takes: the ``config`` settings of the declaration,
#: but ``seed`` (scikit-learn's ``random_state``), ``gpu`` and ``matmul_precision`` (the
#: estimator runs on the CPU).
_TRAIN = tuple(
    s.name for s in TRAIN_CONFIG_SETTINGS if s.name not in ("seed", "gpu", "matmul_precision")
)
#: The constructor's own parameters; everything else is the method's.
_SETTINGS = ("method", *_TRAIN, "random_state")


def _method_class(method: Any) -> type[BaseMethod] | None:
    """The method class ``method`` names (a registered name or a class), or None."""
    if isinstance(method, type) and issubclass(method, BaseMethod):
        return method
    if isinstance(method, str):

        try:
            return load_registry().get(method)
        except UnknownMethodError:
            return None
    return None


class SparseCoding(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A sparsekit method as a scikit-learn transformer: ``transform`` gives the codes.

    Parameters
    ----------
    method : str or Method subclass, default="ksparse"
        A registered method name (``sparsekit list``) or a :class:`sparsekit.Method` class.
    hidden, epochs, batch_size, lr, optimizer, momentum, tied, center : optional
        Training settings as for :func:`sparsekit.train`; ``None`` takes the method's
        recommended value.
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype; ``transform`` returns arrays of this dtype.
    random_state : int, RandomState or None, default=None
        An int is the run's seed (as ``seed=`` of :func:`sparsekit.train`); ``None`` or a
        ``RandomState`` draws one.
    **method_params
        The method's own parameters (``k=25`` for ksparse). ``get_params`` lists every
        parameter the method declares, with its default when not given; each reads and
        writes as an attribute too (``est.k``), like the training settings.

    Attributes
    ----------
    components_ : ndarray of shape (hidden, n_features)
        The dictionary: row j is the atom unit j adds to the reconstruction (scikit-learn's
        layout, as in ``DictionaryLearning.components_``).
    encoder_weights_ : ndarray of shape (hidden, n_features)
        Row j is unit j's encoder filter.
    method_ : sparsekit.Method
        The fitted method instance (with its schedule state).
    params_ : dict of ndarray
        The learned parameters (``W_enc``, ``b_enc``, ``b_dec`` and ``W_dec`` if untied).
    history_ : list of dict
        Per-epoch training metrics, as ``sparsekit show`` reports them.
    n_iter_ : int
        Epochs trained (``fit`` plus every ``partial_fit`` call).
    n_features_in_ : int
        Number of features seen during fit.

    Notes
    -----
    ``uint8`` input (pixels) is scaled to [0, 1] in ``fit``, ``transform`` and ``score``, as
    :func:`sparsekit.train` scales it; other input is used as given.
    ``get_feature_names_out`` names the codes ``sparsecoding0`` … ``sparsecoding{hidden-1}``.
    ``transform`` uses the method's encoding-time code (e.g. k-sparse's αk units);
    ``score`` is the negative mean squared reconstruction error per feature of
    ``inverse_transform(transform(X))`` (higher is better, as scikit-learn expects).
    ``partial_fit`` trains one epoch on the batch it is given, continuing the optimizer state
    of earlier ``fit``/``partial_fit`` calls; schedules (k-sparse's annealed k) count these
    epochs against ``epochs``. With ``center`` (k-sparse's default) the mean sample of the
    data given to ``fit`` (or to the first ``partial_fit``) is part of the model.
    """

    def __init__(
        self,
        method: str | type[BaseMethod] = "ksparse",
        *,
        hidden: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        optimizer: str | None = None,
        momentum: float | None = None,
        tied: bool | None = None,
        center: bool | None = None,
        dtype: str = "float32",
        random_state: Any = None,
        **method_params: Any,
    ) -> None:
        self.method = method
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.tied = tied
        self.center = center
        self.dtype = dtype
        self.random_state = random_state
        # Private, so that scikit-learn's checks see only the declared parameters.
        self._method_params = dict(method_params)

    # -- parameters ------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        """A method parameter as an attribute (``est.l1``): given, else the declared default.

        Only called when normal lookup fails; fitted (``name_``) and private names are never
        method parameters, so ``hasattr(est, "params_")`` keeps meaning "fitted".
        """
        given = self.__dict__.get("_method_params")
        if given is None or "method" not in self.__dict__ or name[:1] == "_" or name[-1:] == "_":
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if name in given:
            return given[name]
        declared = self._declared()
        if name in declared:
            return declared[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # est.l1 = 0.1 must change what get_params and fit see, as set_params(l1=0.1) does.
        if self._is_method_param(name):
            self._method_params[name] = value
        else:
            super().__setattr__(name, value)

    def _is_method_param(self, name: str) -> bool:
        if name in _SETTINGS or name[:1] == "_" or name[-1:] == "_":
            return False
        if "_method_params" not in self.__dict__:  # still in __init__
            return False
        return name in self._method_params or name in self._declared()

    def _declared(self) -> dict[str, Any]:
        """The current method's declared parameters and defaults (empty if unknown)."""
        cls = _method_class(self.method)
        return {p.name: p.default for p in cls.params} if cls is not None else {}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Training settings plus every parameter of the method (given or default)."""
        params = {name: getattr(self, name) for name in _SETTINGS}
        method_params = {**self._declared(), **self._method_params}
        for name, value in method_params.items():
            params.setdefault(name, value)
        return params

    def set_params(self, **params: Any) -> SparseCoding:
        """Set training settings and method parameters by name (``k=10``, ``lr=1e-3``).

        Changing ``method`` drops the given parameters the new method does not declare.
        """
        if not params:
            return self
        if "method" in params:
            self.method = params["method"]
            cls = _method_class(self.method)
            if cls is not None:
                keep = {p.name for p in cls.params}
                self._method_params = {k: v for k, v in self._method_params.items() if k in keep}
        valid = set(_SETTINGS) | set(self._declared()) | set(self._method_params)
        for name, value in params.items():
            if name == "method":
                continue
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__} with "
                    f"method {self.method!r}. Valid parameters are: {sorted(valid)!r}."
                )
            if name in _SETTINGS:
                setattr(self, name, value)
            else:
                self._method_params[name] = value
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.transformer_tags.preserves_dtype = [str(resolve_dtype(self.dtype))]
        except ParameterError:
            tags.transformer_tags.preserves_dtype = []
        return tags

    # -- fitting ---------------------------------------------------------------------------

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            check_value("random_state", rs, NON_NEGATIVE_INT)
            return int(rs)
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _make(self) -> tuple[BaseMethod, Any]:
        """A fresh method instance and its validated training configuration."""
        if not isinstance(self.method, str) and _method_class(self.method) is None:
            raise ParameterError(
                f"method must be a registered name or a Method class, got {self.method!r}"
            )
        method = make_method(self.method, **self._method_params)
        settings = {name: getattr(self, name) for name in _TRAIN}
        config = resolve_config(method, **settings, seed=self._seed(), gpu=False)
        return method, config

    def _store(self, trainer: Any) -> None:
        self._trainer_state = trainer.state_dict()
        self.method_ = trainer.method
        self.params_ = self._trainer_state["params"]
        self.history_ = list(trainer.history)
        self.n_iter_ = trainer.epoch
        model = self._model()
        self.components_ = model.decoder_weights
        self.encoder_weights_ = model.encoder_weights

    def fit(self, X: Any, y: Any = None) -> SparseCoding:
        """Train the method on the rows of ``X`` for ``epochs`` epochs; returns self."""
        method, config = self._make()
        X = self._input(X, config.dtype, reset=True)
        trainer = Trainer(method, X, config)
        trainer.fit()
        self._config = config
        self._store(trainer)
        return self

    def partial_fit(self, X: Any, y: Any = None) -> SparseCoding:
        """One epoch on the rows of ``X``, continuing from the current state; returns self."""
        first = not hasattr(self, "params_")
        if first:
            method, config = self._make()
        else:
            method, config = self.method_, self._config
        X = self._input(X, config.dtype, reset=first)
        trainer = Trainer(method, X, config)
        if not first:
            trainer.load_state_dict(self._trainer_state)
        trainer.train_epoch()
        self._config = config
        self._store(trainer)
        return self

    def _input(self, X: Any, dtype: str, *, reset: bool) -> np.ndarray:
        """``X`` validated, in ``dtype``, ``uint8`` scaled to [0, 1].

        The scaling is :class:`~sparsekit.data.dataset.ArrayDataset`'s, the one
        :func:`sparsekit.train` applies: validating straight to a float dtype would turn
        pixels into 0–255 floats and train on another scale than the library.
        """
        X = validate_data(self, X, dtype="numeric", reset=reset)
        if X.dtype == np.uint8:
            return ArrayDataset(X, name="X").to_array(resolve_dtype(dtype))
        return np.asarray(X, dtype=resolve_dtype(dtype))

    @property
    def _n_features_out(self) -> int:
        """The number of codes (``hidden``): ``get_feature_names_out``'s count."""
        return int(self.components_.shape[0])

    # -- using the model -------------------------------------------------------------------

    def _model(self) -> Model:
        backend = get_backend(False, str(resolve_dtype(self._config.dtype)))
        params = {k: backend.asarray(v) for k, v in self.params_.items()}
        return Model(
            self.method_, params, backend, input_mean=self._trainer_state.get("input_mean")
        )

    def transform(self, X: Any) -> np.ndarray:
        """The codes (n_samples × hidden) of the rows of ``X``."""
        check_is_fitted(self)
        X = self._input(X, self._config.dtype, reset=False)
        return self._model().encode(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Reconstructions (n_samples × n_features) from codes (n_samples × hidden)."""
        check_is_fitted(self)
        from sklearn.utils import check_array

        codes = check_array(X, dtype=resolve_dtype(self._config.dtype))
        if codes.shape[1] != self.components_.shape[0]:
            raise ValueError(
                f"X has {codes.shape[1]} features, but {type(self).__name__} has "
                f"{self.components_.shape[0]} units (inverse_transform takes codes)"
            )
        return self._model().decode(codes)

    def score(self, X: Any, y: Any = None) -> float:
        """−mean((X − X̂)²) with X̂ = inverse_transform(transform(X)); higher is better."""
        check_is_fitted(self)
        X = self._input(X, self._config.dtype, reset=False)
        model = self._model()
        recon = model.decode(model.encode(X))
        diff = recon.astype(np.float64) - X
        return -float(np.mean(diff * diff))
