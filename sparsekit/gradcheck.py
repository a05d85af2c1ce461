"""Deprecated import path: ``sparsekit.gradcheck`` is now ``sparsekit.testing.gradcheck``.

A plugin imports everything it needs from :mod:`sparsekit.methods` (tests from
:mod:`sparsekit.testing`); this alias keeps plugins written before that importing, with a
:class:`DeprecationWarning`.
"""

import importlib
import warnings
from typing import Any

_MOVED = importlib.import_module("sparsekit.testing.gradcheck")

warnings.warn(
    "sparsekit.gradcheck is deprecated: import from "
    + "sparsekit.testing",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_MOVED, name)


def __dir__() -> list[str]:
    return dir(_MOVED)
