"""One number test and one formatter for every table (eval, show, compare and sweep reports)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sparsekit.evaluation.display import MISSING, format_number, is_number


@pytest.mark.parametrize(
    ("value", "number", "finite"),
    [
        (1, True, True),
        (0.5, True, True),
        (np.float32(0.25), True, True),
        (math.inf, True, False),
        (math.nan, True, False),
        (True, False, False),
        (None, False, False),
        ("0.5", False, False),
    ],
)
def test_is_number(value, number, finite):
    assert is_number(value) is number
    assert is_number(value, finite=True) is finite


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (0.123456, ".3f", "0.123"),
        (12.0, "d", "12"),
        (7, ".1f", "7.0"),
        (math.inf, ".3f", "inf"),
        (-math.inf, ".3f", "-inf"),
        (None, ".3f", MISSING),
        (False, "d", MISSING),
        ("n/a", ".3f", MISSING),
    ],
)
def test_format_number(value, spec, text):
    assert format_number(value, spec) == text


def test_every_table_uses_the_one_formatter():
    """The drifted copies (three ``_fmt`` with different dashes, two ``_number``) are gone."""
    from pathlib import Path

    import sparsekit

    root = Path(sparsekit.__file__).parent
    copies = [
        f"{path.relative_to(root.parent)}"
        for path in root.rglob("*.py")
        if "def _fmt(" in path.read_text() or "def _number(" in path.read_text()
    ]
    assert not copies, copies
