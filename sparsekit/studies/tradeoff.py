"""What a comparison report adds on data with a ground truth: MCC, and variance explained
against L0.

Sparse autoencoders are compared on the trade-off between how sparse the code is (L0, the
mean number of active latents per sample) and how much of the data's variance it explains:
one point per method, up and to the left is better. On data with a known dictionary (such as
``synthetic-sae``) the report also shows each method's MCC against the true features
(:func:`sparsekit.evaluation.measures.mcc`).

:func:`~sparsekit.evaluation.figures.plot_tradeoff` draws the figure (matplotlib, imported only when called),
:func:`tradeoff_points` reads the points from run records and :func:`tradeoff_png` does both.
The report (:mod:`sparsekit.report`) shows the figure, and the MCC column
(``report.TRUTH_COLUMNS``), when the runs' data has a ground truth.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sparsekit.evaluation.figures import plot_tradeoff

__all__ = ["plot_tradeoff", "tradeoff_png", "tradeoff_points"]


def tradeoff_points(records: Sequence[Any]) -> list[tuple[str, float, float]]:
    """``(name, L0, variance explained)`` of every finished record that has both values."""
    points = []
    for r in records:
        if getattr(r, "failed", False):
            continue
        measures: Mapping[str, Any] = getattr(r, "measures", {}) or {}
        l0, fve = measures.get("mean_active"), measures.get("fve")
        if _finite(l0) and _finite(fve):
            points.append((str(r.name), float(l0), float(fve)))
    return points


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def tradeoff_png(records: Sequence[Any]) -> bytes | None:
    """The figure of ``records`` as PNG bytes, or ``None`` when no record has both values."""
    points = tradeoff_points(records)
    if not points:
        return None
    buffer = io.BytesIO()
    plot_tradeoff(points, buffer)
    return buffer.getvalue()
