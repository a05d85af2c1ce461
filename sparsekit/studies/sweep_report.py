"""The report of a sweep: the comparison report, plus the sparsity curve and each method's best.

:func:`write_sweep_report` writes ``report.html`` (and ``report.csv``, ``report.md``) in a
sweep directory. The page is :func:`sparsekit.studies.report.render_html` of every trial (a trial is
a run), with two sections added before its measures table:

* **Variance explained against L0**: each setting's fraction of variance explained against
  its mean number of active units per sample (L0), averaged over seeds, one line per method
  (per method and hidden size when the sweep varies the hidden size), sorted by L0.
* **Best setting per method**: the setting with the best mean ``best_by`` measure (variance
  explained by default), its L0, MSE, dead units, how many seeds it was trained with.

Failed trials are listed with their reason by the page itself. This module imports neither
typer nor rich; the figure is :func:`sparsekit.evaluation.figures.plot_fve_l0`'s.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsekit.errors import SparsekitError
from sparsekit.evaluation.display import format_number, is_number
from sparsekit.evaluation.figures import plot_fve_l0 as draw
from sparsekit.files import write_atomic
from sparsekit.layout import REPORT
from sparsekit.methods.registry import registry_for
from sparsekit.studies.report import csv_text, load_record, markdown_table, render_html
from sparsekit.studies.sweep_types import BEST_BY, trial_state

if TYPE_CHECKING:
    from sparsekit.studies.sweep_types import Sweep

__all__ = ["SettingSummary", "best_settings", "setting_summaries", "write_sweep_report"]

#: Measures averaged over the seeds of a setting.
AVERAGED = ("fve", "mse", "loss", "mean_active", "dead_units")


@dataclass
class SettingSummary:
    """One setting of one method (every trial that differs only by its seed)."""

    method: str
    setting: str  # "k=10, hidden=64" (what varies in the sweep, seed left out)
    hidden: int
    trials: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)  # means over the seeds


def setting_summaries(sweep: Sweep) -> list[SettingSummary]:
    """The finished trials grouped by setting (all but the seed), measures averaged."""
    groups: dict[str, SettingSummary] = {}
    values: dict[str, dict[str, list[float]]] = {}
    for trial in sweep.plan.trials:
        result = sweep.results.get(trial.id)
        if result is None or not result.ok:
            continue
        job = trial.job
        key = json.dumps(
            [job.method, job.params, job.train, _settings_without_seed(job)],
            sort_keys=True,
            default=str,
        )
        if key not in groups:
            label = ", ".join(f"{k}={v}" for k, v in trial.label.items() if k != "seed")
            groups[key] = SettingSummary(
                method=job.method, setting=label or "(defaults)", hidden=job.settings.hidden
            )
            values[key] = {m: [] for m in AVERAGED}
        group = groups[key]
        group.trials.append(trial.id)
        group.seeds.append(job.settings.seed)
        for m in AVERAGED:
            if is_number(result.measures.get(m), finite=True):
                values[key][m].append(float(result.measures[m]))
    for key, group in groups.items():
        group.measures = {m: sum(v) / len(v) for m, v in values[key].items() if v}
    return list(groups.values())


def _settings_without_seed(job: Any) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(job.settings)
    for key in ("seed", "snapshot_every", "gif_frames", "download"):
        out.pop(key, None)
    return out


def best_settings(
    summaries: Sequence[SettingSummary], best_by: str = "fve"
) -> list[SettingSummary]:
    """Each method's setting with the best mean ``best_by`` (higher is better for ``fve``)."""
    higher = BEST_BY[best_by]
    best: dict[str, SettingSummary] = {}
    for s in summaries:
        value = s.measures.get(best_by)
        if value is None:
            continue
        current = best.get(s.method)
        if current is None or (
            value > current.measures[best_by] if higher else value < current.measures[best_by]
        ):
            best[s.method] = s
    return list(best.values())


# --------------------------------------------------------------------------- the plot


def plot_fve_l0(summaries: Sequence[SettingSummary]) -> bytes | None:
    """PNG bytes of variance explained against L0, one line per method (None: no points)."""
    points = [s for s in summaries if "fve" in s.measures and "mean_active" in s.measures]
    if not points:
        return None
    by_hidden = len({s.hidden for s in points}) > 1
    lines: dict[str, list[tuple[float, float]]] = {}
    for s in points:
        name = f"{s.method} (hidden {s.hidden})" if by_hidden else s.method
        lines.setdefault(name, []).append((s.measures["mean_active"], s.measures["fve"]))
    buffer = io.BytesIO()
    draw(lines, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- HTML / Markdown


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def best_rows(best: Sequence[SettingSummary]) -> list[list[str]]:
    return [
        [
            s.method,
            s.setting,
            str(s.hidden),
            format_number(s.measures.get("fve"), ".3f"),
            format_number(s.measures.get("mean_active"), ".1f"),
            format_number(s.measures.get("mse"), ".4g"),
            format_number(s.measures.get("dead_units"), ".1f"),
            str(len(s.seeds)),
        ]
        for s in best
    ]


BEST_HEADERS = [
    "method",
    "best setting",
    "hidden",
    "variance explained",
    "L0 (active)",
    "MSE",
    "dead units",
    "seeds",
]


def sweep_sections_html(sweep: Sweep) -> str:
    """The two sections the sweep adds to the report page."""
    summaries = setting_summaries(sweep)
    parts = ["<h2>Variance explained against L0</h2>"]
    png = plot_fve_l0(summaries)
    if png is None:
        parts.append('<p class="missing">no finished trial to plot</p>')
    else:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        parts.append(
            '<figure id="fve-l0"><img class="plot" src="'
            + uri
            + '" alt="Variance explained against L0, one line per method"><figcaption>each '
            "point is one setting (mean over its seeds), measured on the training data with "
            "the final weights</figcaption></figure>"
        )
    best = best_settings(summaries, sweep.plan.best_by)
    parts.append("<h2>Best setting per method</h2>")
    if not best:
        parts.append('<p class="missing">no finished trial</p>')
    else:
        head = "".join(f"<th>{_e(h)}</th>" for h in BEST_HEADERS)
        rows = "".join(
            f'<tr data-method="{_e(row[0])}">' + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
            for row in best_rows(best)
        )
        parts.append(
            f'<table class="measures" id="best"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
        parts.append(
            f'<p class="note">best by mean {_e(sweep.plan.best_by)} over the seeds of a '
            "setting (report.best_by in the sweep file)</p>"
        )
    n_failed = len(sweep.failed)
    if n_failed:
        items = "".join(
            f"<li><b>{_e(key)}</b>: {_e(sweep.results[key].reason or 'unknown error')}</li>"
            for key in sweep.failed
        )
        parts.append(f'<h2>Failed trials</h2><ul class="failed-trials">{items}</ul>')
    return "\n".join(parts) + "\n"


def best_markdown(sweep: Sweep) -> str:
    best = best_settings(setting_summaries(sweep), sweep.plan.best_by)
    lines = [
        f"## Best setting per method (by mean {sweep.plan.best_by})",
        "",
        "| " + " | ".join(BEST_HEADERS) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * (len(BEST_HEADERS) - 2)) + " |",
    ]
    for row in best_rows(best):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"


def write_sweep_report(sweep: Sweep, out: str | Path | None = None) -> dict[str, Path]:
    """Write the sweep's ``report.html``, ``report.csv`` and ``report.md`` (in its directory
    unless ``out`` names the HTML file); returns their paths."""
    try:
        registry = registry_for(sweep.plan.plugins)
    except SparsekitError:
        registry = None
    records = []
    for trial in sweep.plan.trials:
        record = load_record(trial.job.run_dir, registry=registry)
        record.name = trial.id
        # One state per trial, as results.csv and --dry-run say it.
        record.status = trial_state(trial.job.run_dir)
        records.append(record)
    title = sweep.plan.title or f"sparsekit sweep {sweep.plan.name}"
    page = render_html(records, title=title)
    extra = sweep_sections_html(sweep)
    marker = "<h2>Measures</h2>"
    page = (
        page.replace(marker, extra + marker, 1)
        if marker in page
        else page.replace("</main>", extra + "</main>", 1)
    )
    html_path = Path(out) if out is not None else sweep.directory / REPORT
    paths = {
        "html": html_path,
        "csv": html_path.with_suffix(".csv"),
        "markdown": html_path.with_suffix(".md"),
    }
    write_atomic(paths["html"], page.encode("utf-8"))
    write_atomic(paths["csv"], csv_text(records).encode("utf-8"))
    write_atomic(
        paths["markdown"],
        (
            f"# {title}\n\n" + best_markdown(sweep) + "\n## Trials\n\n" + markdown_table(records)
        ).encode("utf-8"),
    )
    return paths
