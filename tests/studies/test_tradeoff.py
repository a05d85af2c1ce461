"""The report on data with a ground truth: the MCC column and variance explained against L0."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image

from sparsekit.errors import ParameterError
from sparsekit.studies.report import COLUMNS, RunRecord, csv_text, markdown_table, render_html
from sparsekit.studies.tradeoff import plot_tradeoff, tradeoff_png, tradeoff_points


def _record(name: str, status: str = "finished", **measures: float) -> RunRecord:
    return RunRecord(name=name, run_dir=Path("/tmp") / name, status=status, measures=measures)


def test_tradeoff_points_take_finished_runs_with_both_values():
    records = [
        _record("topk", mean_active=16.0, fve=0.8),
        _record("gated", mean_active=30.0),  # no variance explained
        _record("broken", status="failed", mean_active=5.0, fve=0.1),
        _record("nan", mean_active=float("nan"), fve=0.5),
    ]
    assert tradeoff_points(records) == [("topk", 16.0, 0.8)]


def test_plot_tradeoff_writes_a_png_and_refuses_no_points(tmp_path):
    path = plot_tradeoff([("topk", 16.0, 0.8), ("jumprelu", 12.0, 0.7)], tmp_path / "t.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
    buffer = io.BytesIO()
    plot_tradeoff([("topk", 16.0, 0.8)], buffer)
    assert buffer.getvalue().startswith(b"\x89PNG")
    with pytest.raises(ParameterError, match="no"):
        plot_tradeoff([], tmp_path / "none.png")
    assert tradeoff_png([_record("x", status="failed", mean_active=1.0, fve=0.1)]) is None


def test_mcc_column_and_tradeoff_figure_appear_only_with_a_ground_truth():
    with_truth = [
        _record("topk", mean_active=16.0, fve=0.8, mcc=0.71),
        _record("batchtopk", mean_active=15.0, fve=0.78, mcc=0.74),
    ]
    without = [_record("ksparse", mean_active=25.0, fve=0.9)]

    rows = list(csv.DictReader(io.StringIO(csv_text(with_truth))))
    assert [r["mcc"] for r in rows] == ["0.71", "0.74"]
    assert "mcc" not in next(csv.DictReader(io.StringIO(csv_text(without))))
    assert "| MCC |" in markdown_table(with_truth)
    assert "MCC" not in markdown_table(without)

    page = render_html(with_truth)
    assert 'id="tradeoff"' in page and "Variance explained against L0" in page
    assert '<td class="best">0.740</td>' in page  # higher MCC is better
    plain = render_html(without)
    assert 'id="tradeoff"' not in plain and ">MCC<" not in plain
    assert len(COLUMNS) == len(markdown_table(without).splitlines()[0].split("|")) - 4


@pytest.mark.slow
def test_compare_on_synthetic_sae_reports_mcc_and_the_tradeoff(tmp_path):
    spec = "synthetic-sae:features=256,dim=32,n=2048,roots=4,depth=2"
    result = run_cli(
        "compare", "ksparse", "plain", "--dataset", spec, "--epochs", "1", "--hidden", "64",
        "-p", "ksparse.k=4", "--jobs", "1", "--out", str(tmp_path),
        env={"OPENBLAS_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "MCC" in result.stderr  # the measures table (the report paths go to stdout)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    rows = list(csv.DictReader(io.StringIO((folder / "report.csv").read_text())))
    assert {r["method"] for r in rows} == {"ksparse", "plain"}
    assert all(0.1 < float(r["mcc"]) <= 1.0 for r in rows)
    assert 'id="tradeoff"' in (folder / "report.html").read_text()
