"""``sparsekit eval``'s table and progress display (issue 27), on a fake result: which code
each L0 is, which probe ran, "samples" for data that are not images, a line per phase."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from sparsekit.cli.eval_cmd import PhaseDisplay, result_table


def _result(images: bool) -> dict[str, Any]:
    test = {"mse": 0.01, "fve": 0.8, "mean_active": 25.0, "dead_units": 3, "coherence": 0.5}
    probe = {
        "C": 0.01, "max_iter": 1000, "code": "encoding", "codes_error": 0.03,
        "raw_pixels_error": 0.08, "raw_pixels_cached": True,
        "train_samples": 10000, "train_samples_available": 60000,
    }  # fmt: skip
    return {
        "method": "ksparse", "n_test": 5000, "images": images, "test": test,
        "encoding_mean_active": 75.0, "probe": probe,
    }  # fmt: skip


def _render(table: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def test_eval_table_names_both_codes_and_the_probe():
    text = _render(result_table(_result(images=True), Path("run")))
    assert "test images" in text and "test samples" not in text
    assert "L0, training code" in text and "25.00" in text
    assert "L0, encoding code (probed)" in text and "75.00" in text
    assert "the first 10000 of 60000 training samples" in text and "--full-probe" in text
    assert "raw pixels" in text and "(cached)" in text


def test_eval_table_says_samples_for_data_that_are_not_images():
    text = _render(result_table(_result(images=False), Path("run")))
    assert "test samples" in text and "test images" not in text
    assert "raw inputs" in text and "raw pixels" not in text


def test_phase_display_prints_a_line_per_finished_phase():
    out = io.StringIO()
    with PhaseDisplay(Console(file=out, width=200)) as phases:
        phases("loading", "run")
        phases("pixel probe", "10000 training samples, C 0.01")
    text = out.getvalue()
    assert "loading (run):" in text and "pixel probe (10000 training samples, C 0.01):" in text
