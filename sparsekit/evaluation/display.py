"""How a measure reads in a table: one number test and one formatter for every table.

``sparsekit eval``, ``show``, the compare report and the sweep report all print measures;
they share these so that a missing value, an infinity or an integer count reads the same
everywhere.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: What a table shows for a measure that is missing (not computed, or not a number).
MISSING = "—"


def is_number(value: Any, *, finite: bool = False) -> bool:
    """Whether ``value`` is a real number (NumPy scalars too, not a bool); with ``finite``, a
    finite one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) if finite else True


def format_number(value: Any, spec: str) -> str:
    """``value`` in format ``spec`` (``"d"`` rounds to an integer); :data:`MISSING` when it is
    not a number, ``inf``/``nan`` as Python writes them."""
    if not is_number(value):
        return MISSING
    if not math.isfinite(value):
        return str(value)
    if spec == "d":
        return str(int(value))
    return format(value, spec)
