"""A report a person can read: runs side by side in one self-contained HTML page.

:func:`write_report` reads run directories (see :mod:`sparsekit.run`) and writes

* ``NAME.html`` – one page that opens from disk with no server and no network: every image
  is embedded as a ``data:`` URI, the styles are inline, there is no script, and a
  Content-Security-Policy forbids loading anything else. A table of measures side by side,
  then a section per run: the filter progression (animated GIF), the final
  contrast-normalised filters, held-out originals above their reconstructions, and the
  training curves. A failed run's section says so, with the reason.
* ``NAME.csv`` and ``NAME.md`` – the same table (raw numbers in the CSV).

The measures (:data:`COLUMNS`): the final training loss (the last epoch's mean), and for
the trained model on its training data the reconstruction MSE per entry, the fraction of
variance explained, the mean number of active units per sample, the dead units (active for
no sample) and the mutual coherence of the dictionary (:mod:`sparsekit.measures`); then the
mean training seconds per epoch and the total seconds. ``sparsekit compare`` stores them in
each run's ``measures.json``; for other runs they are computed from the checkpoint and the
run's data when that can be loaded, else taken from the last epoch's metrics. On data with a
ground truth (``synthetic-sae``, ``synthetic``) the table also shows the MCC against the true
dictionary (:data:`TRUTH_COLUMNS`) and the report plots variance explained against L0
(:mod:`sparsekit.tradeoff`).

This module imports neither typer nor rich; all text that reaches the page is escaped.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit._version import __version__
from sparsekit.errors import OutputError, ParameterError, SparsekitError
from sparsekit.evaluation.display import format_number, is_number
from sparsekit.evaluation.figures import plot_methods
from sparsekit.evaluation.measures import evaluate
from sparsekit.files import read_json_or_none, write_atomic
from sparsekit.layout import (
    CHECKPOINT,
    COMPARISON,
    CONFIG,
    CURVES,
    FAILURE,
    FILTERS,
    MEASURES,
    PREPROCESSING,
    PROGRESSION,
    RECONSTRUCTIONS,
    REPORT,
    SUMMARY,
)
from sparsekit.methods.registry import load_registry
from sparsekit.runs.restore import load_dataset_from_spec, load_run
from sparsekit.runs.writer import read_metrics
from sparsekit.studies.states import FAILED, FINISHED, NOT_RUN, PARTIAL, trial_state
from sparsekit.studies.tradeoff import tradeoff_png

__all__ = [
    "COLUMNS",
    "Column",
    "TRUTH_COLUMNS",
    "RunRecord",
    "expand_run_dirs",
    "load_record",
    "markdown_table",
    "model_measures",
    "render_html",
    "table_rows",
    "write_report",
]


@dataclass(frozen=True)
class Column:
    """One column of the measures table."""

    key: str
    header: str
    fmt: str
    #: "low" or "high" when smaller or larger is better (the best value is marked), else "".
    better: str = ""
    help: str = ""
    #: A short header for narrow terminals.
    short: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("loss", "final loss", ".4g", "low", "mean training loss of the last epoch", "loss"),
    Column("mse", "reconstruction MSE", ".4g", "low", "mean squared error per pixel", "MSE"),
    Column("fve", "variance explained", ".3f", "high", "1 - SSE/SST around the data mean", "FVE"),
    Column(
        "mean_active",
        "mean active units",
        ".1f",
        "",
        "units with |h| > 1e-3 per sample",
        "active",
    ),
    Column("dead_units", "dead units", "d", "low", "units active for no training sample", "dead"),
    Column(
        "coherence", "coherence", ".3f", "low", "max |cos| between two dictionary atoms", "coher."
    ),
    Column(
        "seconds_per_epoch",
        "s / epoch",
        ".3g",
        "low",
        "mean training seconds per epoch",
        "s/epoch",
    ),
    Column(
        "total_seconds", "total s", ".3g", "low", "wall-clock seconds of the whole run", "total s"
    ),
)

#: Columns shown only when at least one run has a value for them (data with a ground truth).
TRUTH_COLUMNS: tuple[Column, ...] = (
    Column(
        "mcc",
        "MCC",
        ".3f",
        "high",
        "mean |cos| between decoder rows and the true features, paired one to one by the "
        "Hungarian algorithm (data with a ground truth only)",
        "MCC",
    ),
)


def shown_columns(records: Sequence[RunRecord]) -> tuple[Column, ...]:
    """:data:`COLUMNS`, then each of :data:`TRUTH_COLUMNS` that some record has a value for."""
    extra = tuple(c for c in TRUTH_COLUMNS if any(is_number(r.measures.get(c.key)) for r in records))
    return COLUMNS + extra


#: The figures of a section, in order: (file, title, caption).
FIGURES = (
    (PROGRESSION, "Filter progression", "the filters after each epoch, as an animation"),
    (FILTERS, "Final filters", "contrast-normalised encoder filters, first 400 units"),
    (
        RECONSTRUCTIONS,
        "Reconstructions",
        "held-out images (upper row of each pair) above their reconstructions",
    ),
    (CURVES, "Training curves", "per-epoch metrics"),
)

_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


# --------------------------------------------------------------------------- measures


def model_measures(
    model: Any, dataset: Any, history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The table's measures for a trained ``model`` on ``dataset`` (its training data)."""
    values = evaluate(model, dataset)
    final = history[-1] if history else {}
    seconds = [float(r["seconds"]) for r in history if is_number(r.get("seconds"))]
    return {
        "loss": _float(final.get("loss")),
        "mse": float(values["mse"]),
        "fve": float(values["fve"]),
        "mean_active": float(values["mean_active"]),
        "dead_units": int(values["dead_units"]),
        "coherence": float(values["coherence"]),
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "total_seconds": sum(seconds) if seconds else None,
        "epochs": len(history),
        "evaluated_on": f"{getattr(dataset, 'name', 'data')} ({len(dataset)} samples)",
        **({"mcc": float(values["mcc"])} if "mcc" in values else {}),  # data with a truth
    }


def _measures_from_history(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    final = history[-1] if history else {}
    seconds = [float(r["seconds"]) for r in history if is_number(r.get("seconds"))]
    out = {c.key: final.get(c.key) for c in COLUMNS if c.key in final}
    out["seconds_per_epoch"] = sum(seconds) / len(seconds) if seconds else None
    out["total_seconds"] = sum(seconds) if seconds else None
    out["epochs"] = len(history)
    if history:
        out["evaluated_on"] = "last epoch's running metrics"
    return out


def _measure_run(run_dir: Path, history: Sequence[Mapping[str, Any]], registry: Any) -> dict:
    """Measures of a run without ``measures.json``: from its checkpoint and data if possible."""
    base = _measures_from_history(history)
    if not (run_dir / CHECKPOINT).exists():
        return base
    try:
        model = load_run(run_dir, registry=registry)
        meta = getattr(model, "run_meta", {}) or {}
        ckpt_history = meta.get("history") or history
        spec = meta.get("data_spec")
        dataset = load_dataset_from_spec(
            {**spec, "download": False} if spec else spec,  # a report never downloads
            where=str(run_dir),
            preprocessing=run_dir / PREPROCESSING,
        )
        measured = model_measures(model, dataset, ckpt_history)
    except (SparsekitError, OSError, ValueError):
        return base
    measured["total_seconds"] = base.get("total_seconds")
    return measured


# --------------------------------------------------------------------------- reading runs


@dataclass
class RunRecord:
    """What the report shows of one run directory."""

    name: str
    run_dir: Path
    status: str
    reason: str | None = None
    method: str | None = None
    method_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    measures: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    #: True when the method updates its weights itself (no optimizer), None when unknown.
    own_update: bool | None = None

    @property
    def failed(self) -> bool:
        """Failed, or stopped part way (partial, not run): the run did not end as planned."""
        return self.status in (FAILED, PARTIAL, NOT_RUN, "interrupted")


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from ``paths``: a comparison directory stands for its runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ParameterError(f"{p}: no such directory")
        listing = read_json_or_none(p / COMPARISON)
        if isinstance(listing, dict) and isinstance(listing.get("methods"), list):
            out.extend(p / str(m["run_dir"]) for m in listing["methods"] if m.get("run_dir"))
        elif (p / CONFIG).exists() or (p / FAILURE).exists():
            out.append(p)
        else:
            raise ParameterError(
                f"{p}: not a run directory (no {CONFIG}) nor a comparison (no {COMPARISON})"
            )
    if not out:
        raise ParameterError("no run directories to report on")
    return out


def load_record(run_dir: str | Path, *, registry: Any = None) -> RunRecord:
    """Everything the report needs from ``run_dir`` (missing pieces stay empty)."""
    run_dir = Path(run_dir)
    config = read_json_or_none(run_dir / CONFIG) or {}
    summary = read_json_or_none(run_dir / SUMMARY) or {}
    failure = read_json_or_none(run_dir / FAILURE)
    measures = read_json_or_none(run_dir / MEASURES)
    history = read_metrics(run_dir)
    method = config.get("method") or (failure or {}).get("method") or summary.get("method")
    if isinstance(failure, dict):
        # An interruption is partial (a checkpoint to resume) or not run, as in a sweep.
        status = trial_state(run_dir) if failure.get("status") == "interrupted" else FAILED
        reason = str(failure.get("reason") or "unknown error")
    elif summary.get("status"):
        status, reason = str(summary["status"]), None
    else:
        status, reason = (
            ("incomplete", "the run left no summary")
            if not config
            else (
                "running",
                None,
            )
        )
    if not isinstance(measures, dict):
        measures = (
            _measures_from_history(history)
            if status in (FAILED, PARTIAL, NOT_RUN)
            else _measure_run(run_dir, history, registry)
        )
    figures = {name: run_dir / name for name, _, _ in FIGURES if (run_dir / name).is_file()}
    own_update = None
    if method and registry is not None and method in registry:
        own_update = bool(getattr(registry.get(method), "own_update", False))
    return RunRecord(
        name=str(method or run_dir.name),
        run_dir=run_dir,
        status=status,
        reason=reason,
        method=method,
        method_params=dict(config.get("method_params") or {}),
        train=dict(config.get("train") or {}),
        data=dict(config.get("data") or {}),
        measures=measures,
        history=history,
        figures=figures,
        own_update=own_update,
    )


# --------------------------------------------------------------------------- the table


def _float(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def format_value(column: Column, value: Any) -> str:
    """A table cell: the number in the column's format, ``—`` when missing."""
    return format_number(value, column.fmt)


def _best(records: Sequence[RunRecord]) -> dict[str, float]:
    best: dict[str, float] = {}
    for column in shown_columns(records):
        if not column.better:
            continue
        values = [
            r.measures.get(column.key)
            for r in records
            if not r.failed
            and is_number(r.measures.get(column.key))
            and math.isfinite(r.measures[column.key])
        ]
        if len(values) > 1:
            best[column.key] = min(values) if column.better == "low" else max(values)
    return best


def table_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One dict per run: ``method``, ``status`` and every column's raw value."""
    columns = shown_columns(records)
    return [
        {"method": r.name, "status": r.status, **{c.key: r.measures.get(c.key) for c in columns}}
        for r in records
    ]


def csv_text(records: Sequence[RunRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = shown_columns(records)
    writer.writerow(["method", "status", *(c.key for c in columns), "reason"])
    for r in records:
        row = [r.name, r.status]
        for c in columns:
            value = r.measures.get(c.key)
            row.append("" if not is_number(value) else repr(value))
        row.append(r.reason or "")
        writer.writerow(row)
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(records: Sequence[RunRecord]) -> str:
    """The measures as a GitHub-flavoured Markdown table (failed runs say why below it)."""
    columns = shown_columns(records)
    headers = ["method", "status", *(c.header for c in columns)]
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(["---", "---", *("---:" for _ in columns)]) + " |",
    ]
    for r in records:
        cells = [_md_cell(r.name), _md_cell(r.status)]
        cells += [format_value(c, r.measures.get(c.key)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in records if r.failed]
    if failed:
        lines.append("")
        lines += [
            f"- **{_md_cell(r.name)}** {r.status}: {_md_cell(r.reason or '')}" for r in failed
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; --fg: #1d232a; --muted: #5b6672; --line: #d8dee4;
  --bg: #ffffff; --card: #f6f8fa; --ok: #1a7f37; --bad: #cf222e; --best: #dafbe1; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica,
  Arial, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0; }
h3 { font-size: 14px; margin: 0 0 6px; color: var(--muted); font-weight: 600;
  text-transform: uppercase; letter-spacing: .04em; }
.meta { color: var(--muted); margin: 0 0 18px; }
.settings { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 10px 0 22px; padding: 0;
  list-style: none; }
.settings li { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 2px 10px; }
.settings b { font-weight: 600; }
.warning { border: 1px solid #d4a72c; background: #fff8c5; border-radius: 6px;
  padding: 8px 12px; margin: 12px 0; }
table.measures { border-collapse: collapse; width: 100%; margin: 8px 0 4px;
  font-variant-numeric: tabular-nums; }
table.measures th, table.measures td { border-bottom: 1px solid var(--line);
  padding: 6px 10px; text-align: right; white-space: nowrap; }
table.measures th { font-size: 13px; color: var(--muted); font-weight: 600;
  border-bottom: 2px solid var(--line); vertical-align: bottom; white-space: normal; }
table.measures th:first-child, table.measures td:first-child,
table.measures th:nth-child(2), table.measures td:nth-child(2) { text-align: left; }
table.measures td.best { background: var(--best); font-weight: 600; }
table.measures tr.failed td { color: var(--muted); }
.note { color: var(--muted); font-size: 13px; margin: 4px 0 28px; }
.badge { display: inline-block; font-size: 12px; font-weight: 600; border-radius: 999px;
  padding: 1px 9px; margin-left: 8px; vertical-align: middle; color: #fff; background: var(--ok); }
.badge.failed { background: var(--bad); }
.badge.other { background: #9a6700; }
section.run { border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px;
  margin: 22px 0; background: var(--bg); }
section.run.failed { border-color: var(--bad); }
.run-head { display: flex; align-items: baseline; flex-wrap: wrap; gap: 4px 14px; }
.params { color: var(--muted); font-family: ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; font-size: 13px; }
.reason { border-left: 4px solid var(--bad); background: #ffebe9; padding: 8px 12px;
  margin: 12px 0 4px; white-space: pre-wrap; font-family: ui-monospace, SFMono-Regular,
  Menlo, Consolas, monospace; font-size: 13px; }
.figures { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 18px;
  margin-top: 14px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 10px 12px; }
figure img { display: block; width: 100%; height: auto; margin: 0 auto; background: #000; }
figure img.pixels { image-rendering: pixelated; max-width: 420px; }
figure img.pixels.wide { max-width: 100%; }
figure img.plot { background: #fff; max-width: 560px; }
.figures.across { grid-template-columns: 1fr; }
.figures.across figure img.plot { max-width: 100%; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.missing { color: var(--muted); font-style: italic; }
nav.toc { margin: 0 0 8px; }
nav.toc a { margin-right: 12px; }
a { color: #0969da; }
.overview { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
  gap: 12px; margin: 10px 0 24px; }
.overview figure { padding: 8px; }
.overview figcaption { text-align: center; font-weight: 600; color: var(--fg); }
@media (max-width: 760px) { .figures { grid-template-columns: 1fr; } }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(path: Path) -> str | None:
    mime = _MIME.get(path.suffix.lower())
    try:
        payload = path.read_bytes()
    except OSError:
        return None
    if mime is None or not payload:
        return None
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _anchor(name: str, used: set[str]) -> str:
    base = "run-" + ("".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "x")
    anchor, n = base, 2
    while anchor in used:
        anchor, n = f"{base}-{n}", n + 1
    used.add(anchor)
    return anchor


def _params_text(record: RunRecord) -> str:
    parts = [f"{k}={v}" for k, v in record.method_params.items()]
    train = record.train
    if record.own_update and "lr" in train:
        parts.append(f"own update, lr={train['lr']}")  # no optimizer involved
    elif train.get("optimizer"):
        parts.append(f"{train['optimizer']} lr={train.get('lr')}")
    if "tied" in train:
        parts.append("tied" if train["tied"] else "untied")
    return ", ".join(parts)


_SHARED = ("hidden", "epochs", "batch_size", "seed", "dtype")


def _shared_settings(records: Sequence[RunRecord]) -> tuple[list[tuple[str, str]], list[str]]:
    """The settings common to the runs, and the names of those that differ."""
    shown: list[tuple[str, str]] = []
    differ: list[str] = []
    with_config = [r for r in records if r.train or r.data]
    if not with_config:
        return shown, differ
    data_names = {str(r.data.get("name", "?")) for r in with_config}
    sizes = {str(r.data.get("n", "?")) for r in with_config}
    if len(data_names) == 1:
        shown.append(("data", data_names.pop()))
    else:
        differ.append("data")
    if len(sizes) == 1:
        shown.append(("samples", sizes.pop()))
    else:
        differ.append("samples")
    for key in _SHARED:
        values = {json.dumps(r.train.get(key)) for r in with_config}
        if len(values) == 1:
            shown.append((key.replace("_", " "), str(with_config[0].train.get(key))))
        else:
            differ.append(key.replace("_", " "))
    return shown, differ


def _table_html(records: Sequence[RunRecord], anchors: Mapping[int, str]) -> str:
    best = _best(records)
    columns = shown_columns(records)
    head = "".join(f'<th title="{_e(c.help)}">{_e(c.header)}</th>' for c in columns)
    rows = []
    for i, r in enumerate(records):
        cells = []
        for c in columns:
            value = r.measures.get(c.key)
            is_best = not r.failed and c.key in best and is_number(value) and value == best[c.key]
            cls = ' class="best"' if is_best else ""
            cells.append(f"<td{cls}>{_e(format_value(c, value))}</td>")
        status = "finished" if r.status == "finished" else r.status
        rows.append(
            f'<tr class="{"failed" if r.failed else "ok"}" data-method="{_e(r.name)}">'
            f'<td><a href="#{anchors[i]}">{_e(r.name)}</a></td><td>{_e(status)}</td>'
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<table class="measures" id="measures"><thead><tr><th>method</th><th>status</th>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _section_html(record: RunRecord, anchor: str) -> str:
    if record.failed:
        badge = f'<span class="badge failed">{_e(record.status)}</span>'
    elif record.status == "finished":
        badge = '<span class="badge">finished</span>'
    else:
        badge = f'<span class="badge other">{_e(record.status)}</span>'
    parts = [
        f'<section class="run{" failed" if record.failed else ""}" id="{_e(anchor)}" '
        f'data-method="{_e(record.name)}" data-status="{_e(record.status)}">',
        f'<div class="run-head"><h2>{_e(record.name)}{badge}</h2>'
        f'<span class="params">{_e(_params_text(record))}</span></div>',
    ]
    if record.failed:
        parts.append(f'<div class="reason">{_e(record.reason or "unknown error")}</div>')
    epochs = record.measures.get("epochs", len(record.history))
    planned = record.train.get("epochs")
    facts = [f"{epochs} of {planned} epochs" if planned else f"{epochs} epochs"]
    if record.measures.get("evaluated_on"):
        facts.append(f"measured on {record.measures['evaluated_on']}")
    facts.append(f"run directory {record.run_dir}")
    parts.append(f'<p class="note">{_e("; ".join(facts))}</p>')
    figures = []
    for name, title, caption in FIGURES:
        path = record.figures.get(name)
        uri = _data_uri(path) if path is not None else None
        if uri is None:
            continue
        cls = {CURVES: "plot", RECONSTRUCTIONS: "pixels wide"}.get(name, "pixels")
        if name == FILTERS and record.status != "finished":
            title = "Filters when the run stopped"
        figures.append(
            f'<figure><h3>{_e(title)}</h3><img class="{cls}" src="{uri}" '
            f'alt="{_e(title)} of {_e(record.name)}"><figcaption>{_e(caption)}</figcaption>'
            "</figure>"
        )
    if figures:
        parts.append('<div class="figures">' + "".join(figures) + "</div>")
    else:
        what = "the run failed before its first figure" if record.failed else "no figures"
        parts.append(f'<p class="missing">{_e(what)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


#: Plots across runs, written beside the report: (file suffix, title, caption, keys, log values).
ACROSS_FIGURES = (
    (
        "curves",
        "Loss and reconstruction error",
        "every method's training loss and reconstruction MSE per epoch (logarithmic epochs)",
        ("loss", "mse"),
        True,
    ),
    (
        "seconds",
        "Seconds per epoch",
        "training time of each epoch (methods trained in parallel share the CPUs)",
        ("seconds",),
        False,
    ),
)


def write_across_figures(records: Sequence[RunRecord], html: Path) -> list[tuple[str, str, Path]]:
    """The plots of :data:`ACROSS_FIGURES` as ``<report>-<suffix>.png`` beside ``html``:
    ``(title, caption, path)`` of each one drawn (none for fewer than two runs)."""
    histories = {r.name: r.history for r in records if r.history}
    if len(histories) < 2:
        return []
    out = []
    for suffix, title, caption, keys, log_values in ACROSS_FIGURES:
        path = html.with_name(f"{html.stem}-{suffix}.png")
        if plot_methods(histories, path, keys=keys, log_values=log_values) is not None:
            out.append((title, caption, path))
    return out


#: The page. ``$notices``, ``$figures`` and ``$sections`` are whole lines (each ending in a
#: newline) or nothing, so that a page without them has no blank line in their place; the
#: values are HTML already (escaped where they hold text).
_PAGE = string.Template(
    """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head><body><main>
<h1>$title</h1>
<p class="meta">$summary</p>
${notices}<h2>Measures</h2>
$table
<p class="note">MSE, variance explained, active and dead units and coherence are \
measured on the training data with the final weights; the best value of each column \
is highlighted. Seconds per epoch count training only; total seconds include data \
loading, figures and checkpoints. Methods trained in parallel share the CPUs.</p>
${figures}$toc
${sections}</main></body></html>
"""
)


def render_html(
    records: Sequence[RunRecord],
    *,
    title: str = "sparsekit report",
    across: Sequence[tuple[str, str, Path]] = (),
) -> str:
    """The report as one HTML document (no external resources, no script)."""
    used: set[str] = set()
    anchors = {i: _anchor(r.name, used) for i, r in enumerate(records)}
    figures = _across_html(across) + _tradeoff_html(records) + _overview_html(records, anchors)
    return _PAGE.substitute(
        csp=_CSP,
        title=_e(title),
        css=_CSS,
        summary=_summary_text(records),
        notices=_lines(_notices_html(records, anchors)),
        table=_table_html(records, anchors),
        figures=_lines(figures),
        toc=_toc_html(records, anchors),
        sections=_lines([_section_html(r, anchors[i]) for i, r in enumerate(records)]),
    )


def _lines(parts: Sequence[str]) -> str:
    """``parts`` as lines of the page: each followed by a newline."""
    return "".join(part + "\n" for part in parts)


def _summary_text(records: Sequence[RunRecord]) -> str:
    """How many runs, finished and failed; when and by which sparsekit the page was made."""
    failed = sum(1 for r in records if r.status == FAILED)
    finished = sum(1 for r in records if r.status == FINISHED)
    # The rest (partial, not run, stopped, running) by their own state, not as "finished".
    others: dict[str, int] = {}
    for r in records:
        if r.status not in (FAILED, FINISHED):
            others[r.status] = others.get(r.status, 0) + 1
    rest = "".join(f", {n} {_e(status)}" for status, n in others.items())
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"{len(records)} run{'s' if len(records) != 1 else ''}, "
        f"{finished} finished, {failed} failed{rest} · generated "
        f"{_e(generated)} by sparsekit {_e(__version__)}"
    )


def _notices_html(records: Sequence[RunRecord], anchors: Mapping[int, str]) -> list[str]:
    """The settings the runs share, a warning when some differ, and the runs that failed."""
    shown, differ = _shared_settings(records)
    out = []
    if shown:
        out.append(
            '<ul class="settings">'
            + "".join(f"<li><b>{_e(k)}</b> {_e(v)}</li>" for k, v in shown)
            + "</ul>"
        )
    if differ:
        out.append(
            '<p class="warning">These runs were not trained under the same settings: they '
            f"differ in {_e(', '.join(differ))}.</p>"
        )
    failed = [r for r in records if r.failed]
    if failed:
        out.append(
            '<p class="warning">'
            + ("Failed: " if all(r.status == "failed" for r in failed) else "Did not finish: ")
            + "; ".join(
                f'<a href="#{anchors[i]}">{_e(r.name)}</a> ({_e(r.reason or "unknown error")})'
                for i, r in enumerate(records)
                if r.failed
            )
            + "</p>"
        )
    return out


def _across_html(across: Sequence[tuple[str, str, Path]]) -> list[str]:
    """The plots across methods (:func:`write_across_figures`) that could be read back."""
    plots = [(t, c, uri) for t, c, p in across if (uri := _data_uri(p)) is not None]
    if not plots:
        return []
    return [
        "<h2>Across methods</h2>",
        # one chart per row at the page's width: a chart of eleven methods is unreadable as
        # a half-width thumbnail
        '<div class="figures across">'
        + "".join(
            f'<figure><h3>{_e(t)}</h3><img class="plot" src="{uri}" alt="{_e(t)}">'
            f"<figcaption>{_e(c)}</figcaption></figure>"
            for t, c, uri in plots
        )
        + "</div>",
    ]


def _tradeoff_html(records: Sequence[RunRecord]) -> list[str]:
    """Variance explained against L0, on data with a ground truth (:mod:`.tradeoff`)."""
    if len(shown_columns(records)) <= len(COLUMNS):  # no truth columns: no trade-off plot
        return []
    png = tradeoff_png(records)
    if png is None:
        return []
    uri = f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
    return [
        "<h2>Variance explained against L0</h2>",
        f'<figure class="tradeoff"><img class="plot" id="tradeoff" src="{uri}" '
        'alt="Variance explained against L0, one point per method"><figcaption>one '
        "point per method, measured as in the table: up and to the left is better"
        "</figcaption></figure>",
    ]


def _overview_html(records: Sequence[RunRecord], anchors: Mapping[int, str]) -> list[str]:
    """Every run's final filters side by side, each linking to its section."""
    overview = [
        (i, r, _data_uri(r.figures[FILTERS])) for i, r in enumerate(records) if FILTERS in r.figures
    ]
    overview = [(i, r, uri) for i, r, uri in overview if uri is not None]
    if not overview:
        return []
    return [
        "<h2>Final filters side by side</h2>",
        '<div class="overview">'
        + "".join(
            f'<figure><a href="#{anchors[i]}"><img class="pixels" src="{uri}" '
            f'alt="Final filters of {_e(r.name)}"></a><figcaption>{_e(r.name)}'
            f"{' (' + _e(r.status) + ')' if r.status != 'finished' else ''}</figcaption>"
            "</figure>"
            for i, r, uri in overview
        )
        + "</div>",
    ]


def _toc_html(records: Sequence[RunRecord], anchors: Mapping[int, str]) -> str:
    """Links to each run's section."""
    return (
        '<nav class="toc">'
        + "".join(f'<a href="#{anchors[i]}">{_e(r.name)}</a>' for i, r in enumerate(records))
        + "</nav>"
    )


# --------------------------------------------------------------------------- writing


def _comparison_title(run_dirs: Sequence[str | Path]) -> str | None:
    """The stored title when ``run_dirs`` is one comparison directory."""
    if len(run_dirs) != 1:
        return None
    listing = read_json_or_none(Path(run_dirs[0]) / COMPARISON)
    title = listing.get("title") if isinstance(listing, dict) else None
    return title if isinstance(title, str) and title else None


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path = REPORT,
    *,
    title: str | None = None,
    registry: Any = None,
) -> dict[str, Path]:
    """Write ``out`` (HTML) and the table beside it as ``.csv`` and ``.md``.

    ``run_dirs`` are run directories or comparison directories (which stand for their
    runs). Returns ``{"html": ..., "csv": ..., "markdown": ...}``.
    """
    if registry is None:
        try:
            registry = load_registry()
        except SparsekitError:
            registry = None  # the report does not need methods; it only shows them better
    records = [load_record(p, registry=registry) for p in expand_run_dirs(run_dirs)]
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = out.with_name(out.name + ".html")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    paths = {"html": out, "csv": out.with_suffix(".csv"), "markdown": out.with_suffix(".md")}
    heading = title or _comparison_title(run_dirs) or "sparsekit report"
    across = write_across_figures(records, out)
    write_atomic(paths["html"], render_html(records, title=heading, across=across).encode("utf-8"))
    write_atomic(paths["csv"], csv_text(records).encode("utf-8"))
    write_atomic(paths["markdown"], (f"# {heading}\n\n" + markdown_table(records)).encode("utf-8"))
    return paths
