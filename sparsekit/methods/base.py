"""Deprecated import path: ``sparsekit.methods.base`` is now ``sparsekit.core.contract``.

A plugin imports everything it needs from :mod:`sparsekit.methods` (tests from
:mod:`sparsekit.testing`); this alias keeps plugins written before that importing, with a
:class:`DeprecationWarning`.
"""

import importlib
import warnings
from typing import Any

_MOVED = importlib.import_module("sparsekit.core.contract")

warnings.warn(
    "sparsekit.methods.base is deprecated: import from "
    + "sparsekit.methods",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_MOVED, name)


def __dir__() -> list[str]:
    return dir(_MOVED)
