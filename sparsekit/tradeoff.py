"""What a comparison report adds on data with a ground truth: MCC, and variance explained
against L0.

Sparse autoencoders are compared on the trade-off between how sparse the code is (L0, the
mean number of active latents per sample) and how much of the data's variance it explains:
one point per method, up and to the left is better. On data with a known dictionary (such as
``synthetic-sae``) the report also shows each method's MCC against the true features
(:func:`sparsekit.measures.mcc`).

:func:`plot_tradeoff` draws the figure (matplotlib, imported only when called),
:func:`tradeoff_points` reads the points from run records and :func:`tradeoff_png` does both.
The report (:mod:`sparsekit.report`) shows the figure, and the MCC column
(``report.TRUTH_COLUMNS``), when the runs' data has a ground truth.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparsekit.errors import ParameterError

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


def plot_tradeoff(
    points: Sequence[tuple[str, float, float]],
    out: str | Path | io.BytesIO,
    *,
    title: str = "Variance explained against L0",
) -> str | Path | io.BytesIO:
    """Scatter variance explained (y) against L0 (x), one labelled point per method, as PNG.

    ``points`` are ``(name, L0, variance explained)``; ``out`` a path or a binary buffer.
    Uses matplotlib's Agg canvas directly (no pyplot, no change to the global backend).
    """
    if not points:
        raise ParameterError("no (L0, variance explained) points to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (name, l0, fve) in enumerate(points):
        ax.scatter([l0], [fve], s=36, color=f"C{i % 10}", zorder=3)
        ax.annotate(name, (l0, fve), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel("L0 (mean active latents per sample)")
    ax.set_ylabel("variance explained")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if isinstance(out, (str, Path)):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path
    fig.savefig(out, format="png")
    return out


def tradeoff_png(records: Sequence[Any]) -> bytes | None:
    """The figure of ``records`` as PNG bytes, or ``None`` when no record has both values."""
    points = tradeoff_points(records)
    if not points:
        return None
    buffer = io.BytesIO()
    plot_tradeoff(points, buffer)
    return buffer.getvalue()
