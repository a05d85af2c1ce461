"""One state per trial (finished, partial, failed, not run), the same in every place that
shows it; checked on fake run directories, without training anything (fast)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sparsekit.studies.jobs import MethodJob
from sparsekit.studies.settings import CompareSettings
from sparsekit.studies.sweep import _settle_summaries, results_rows, trial_status
from sparsekit.studies.sweep_report import write_sweep_report
from sparsekit.studies.sweep_types import (
    FAILED,
    FINISHED,
    NOT_RUN,
    PARTIAL,
    TRIAL_STATES,
    Sweep,
    SweepPlan,
    Trial,
    trial_state,
)


def _interrupted(run_dir: Path) -> None:
    (run_dir / "failure.json").write_text(
        json.dumps({"method": "ksparse", "status": "interrupted", "reason": "interrupted"})
    )


def _fake_runs(tmp_path: Path) -> dict[str, Path]:
    """Run directories as a Ctrl-C leaves them: one finished, one stopped with a checkpoint
    (its failure.json says interrupted, its summary.json still says running), one failed,
    one stopped before anything was saved."""
    runs = {name: tmp_path / name for name in ("done", "half", "broken", "never")}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for run_dir in runs.values():
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"status": "running"}))
    (runs["done"] / "measures.json").write_text(json.dumps({"fve": 0.5, "epochs": 2}))
    (runs["half"] / "checkpoint.npz").write_bytes(b"not read")
    _interrupted(runs["half"])
    (runs["broken"] / "checkpoint.npz").write_bytes(b"not read")
    (runs["broken"] / "failure.json").write_text(
        json.dumps({"method": "ksparse", "status": "failed", "reason": "loss is NaN"})
    )
    _interrupted(runs["never"])
    return runs


EXPECTED = {"done": FINISHED, "half": PARTIAL, "broken": FAILED, "never": NOT_RUN}


def _plan(runs: dict[str, Path]) -> SweepPlan:
    settings = CompareSettings(dataset="synthetic", hidden=8, epochs=2)
    trials = [
        Trial(
            id=name,
            job=MethodJob("ksparse", {"k": 2}, {}, settings, str(run_dir)),
            label={"k": 2},
        )
        for name, run_dir in runs.items()
    ]
    return SweepPlan(name="fake", trials=trials)


def test_the_four_states_are_defined_once():
    assert TRIAL_STATES == ("finished", "partial", "failed", "not run")


def test_a_checkpoint_wins_over_an_interruption(tmp_path):
    runs = _fake_runs(tmp_path)
    assert {name: trial_state(d) for name, d in runs.items()} == EXPECTED
    assert {name: trial_status(d) for name, d in runs.items()} == EXPECTED
    assert trial_state(tmp_path / "missing") == NOT_RUN


def test_an_unreadable_failure_is_a_failure(tmp_path):
    (tmp_path / "failure.json").write_text("{torn")
    assert trial_state(tmp_path) == FAILED


def test_results_csv_says_the_state_on_disk_even_without_results(tmp_path):
    runs = _fake_runs(tmp_path)
    rows = results_rows(_plan(runs), {})  # Ctrl-C: no result came back
    assert {row["trial"]: row["status"] for row in rows} == EXPECTED


def test_summary_json_and_the_report_agree(tmp_path):
    runs = _fake_runs(tmp_path)
    plan = _plan(runs)
    _settle_summaries(plan)
    for name, run_dir in runs.items():
        assert json.loads((run_dir / "summary.json").read_text())["status"] == EXPECTED[name]
    sweep = Sweep(directory=tmp_path, plan=plan, results={})
    paths = write_sweep_report(sweep)
    with open(paths["csv"], newline="", encoding="utf-8") as fh:
        states = {row["method"]: row["status"] for row in csv.DictReader(fh)}
    assert states == EXPECTED
    page = paths["html"].read_text(encoding="utf-8")
    assert "1 finished, 1 failed, 1 partial, 1 not run" in page


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_shows_the_same_state(tmp_path, name, monkeypatch):
    from rich.console import Console

    from sparsekit.cli.sweep_cmd import _list_trials

    runs = _fake_runs(tmp_path / "fake")
    printed: list[str] = []
    monkeypatch.setattr(Console, "print", lambda self, table: printed.append(table))
    _list_trials(_plan(runs), tmp_path, Console())
    table = printed[0]
    trials = list(table.columns[0].cells)
    states = list(table.columns[3].cells)
    assert states[trials.index(name)] == EXPECTED[name]


# --------------------------------------------------------------------------- compare


def test_an_interrupted_compare_lists_each_methods_state(data_dir, tmp_path, monkeypatch):
    from sparsekit.studies import compare as compare_module

    def stopped(planned, *args):
        # plain stopped part way (its checkpoint), l2 never started: then Ctrl-C.
        (Path(planned[0].run_dir) / "checkpoint.npz").write_bytes(b"not read")
        _interrupted(Path(planned[0].run_dir))
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "_run_planned", stopped)
    with pytest.raises(KeyboardInterrupt):
        compare_module.compare(
            ["plain", "l2"], out=tmp_path, data=str(data_dir), subset=100, hidden=8, epochs=1
        )
    (directory,) = tmp_path.glob("compare-*")
    listing = json.loads((directory / "comparison.json").read_text())
    assert [m["status"] for m in listing["methods"]] == [PARTIAL, NOT_RUN]


def test_an_interrupted_compare_says_how_to_continue(tmp_path):
    from sparsekit.cli.compare_cmd import _continue_lines

    methods = [
        {"method": "plain", "run_dir": "plain", "status": "finished"},
        {"method": "kl", "run_dir": "kl", "status": "partial"},
        {"method": "l2", "run_dir": "l2", "status": "not run"},
    ]
    (tmp_path / "comparison.json").write_text(json.dumps({"methods": methods}))
    lines = _continue_lines(tmp_path)
    assert f"continue kl: sparsekit train --resume {tmp_path / 'kl'}" in lines
    assert any(line.startswith("not started: l2") for line in lines)
    assert lines[-1].endswith(f"sparsekit report {tmp_path}")
    assert not any("plain" in line for line in lines)
