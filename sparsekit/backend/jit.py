"""Whether compiled code may run: the one reading of ``SPARSEKIT_JIT``.

The fused loops (:mod:`sparsekit.backend.fused`) and the spin-waits of the threads
(:mod:`sparsekit.backend.spin`) are both compiled by Numba; ``SPARSEKIT_JIT=0`` (or ``false``,
``no``, ``off``) turns both off, and so does a missing or broken Numba.
"""

from __future__ import annotations

import os
from typing import Any

#: Values of ``SPARSEKIT_JIT`` that turn compiled code off.
OFF_VALUES = ("0", "false", "no", "off")


def requested() -> bool:
    """Whether ``SPARSEKIT_JIT`` leaves compiled code on (the default)."""
    return os.environ.get("SPARSEKIT_JIT", "1").strip().lower() not in OFF_VALUES


def load_numba() -> Any:
    """The ``numba`` module, or None when compiled code is off or Numba will not import."""
    if not requested():
        return None
    try:
        import numba
    except Exception:  # ImportError, or a Numba that refuses this NumPy
        return None
    return numba
