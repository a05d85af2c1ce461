"""Deprecated import path: ``sparsekit.saelens`` is now ``sparsekit.interop.saelens``.

A plugin imports everything it needs from :mod:`sparsekit.methods` (tests from
:mod:`sparsekit.testing`); this alias keeps plugins written before that importing, with a
:class:`DeprecationWarning`.
"""

import importlib
import warnings
from typing import Any

_MOVED = importlib.import_module("sparsekit.interop.saelens")

warnings.warn(
    "sparsekit.saelens is deprecated: import from "
    + "sparsekit.methods (SAELensArch) or sparsekit.interop.saelens (the file functions)",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_MOVED, name)


def __dir__() -> list[str]:
    return dir(_MOVED)
