"""Training settings: one frozen dataclass, with defaults a method can tune."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sparsekit.backend import resolve_dtype
from sparsekit.core.contract import Method
from sparsekit.errors import ParameterError
from sparsekit.training.optim import OPTIMIZERS


@dataclass(frozen=True)
class TrainConfig:
    """How to train: sizes, optimisation, randomness and where the arrays live.

    Build one with :func:`resolve_config` to get the method's recommended defaults for
    every field the user did not set.
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

    def validate(self, method: Method | type[Method] | None = None) -> TrainConfig:
        """Raise :class:`ParameterError` for impossible settings; return self."""
        for name in ("hidden", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(
                    f"{name.replace('_', ' ')} must be a positive integer, got {value!r}"
                )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ParameterError(f"learning rate must be > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(
                f"unknown optimizer {self.optimizer!r}: choose from {', '.join(OPTIMIZERS)}"
            )
        if not 0 <= self.momentum < 1:
            raise ParameterError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.seed < 0:
            raise ParameterError(f"seed must be >= 0, got {self.seed}")
        resolve_dtype(self.dtype)
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
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ParameterError(f"unknown training setting {unknown[0]!r}")
    base = TrainConfig(tied=method.tied)
    method_defaults = {k: v for k, v in method.training_defaults.items() if k in known}
    user = {k: v for k, v in overrides.items() if v is not None}
    if "dtype" in user:
        user["dtype"] = str(resolve_dtype(user["dtype"]))
    return replace(base, **{**method_defaults, **user}).validate(method)
