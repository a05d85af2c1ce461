"""``sparsekit compare`` and ``sparsekit report``: real worker processes on a small MNIST subset."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import failing_plugin
import pytest
from conftest import run_cli, sigint_by_default

from sparsekit.errors import ParameterError, PluginError, UnknownMethodError
from sparsekit.studies.compare import (
    CompareSettings,
    ComparisonError,
    compare,
    parse_param_specs,
    plan_jobs,
)
from sparsekit.studies.report import COLUMNS, RunRecord, load_record, render_html, write_report

BUILTINS = ["plain", "l2", "kl", "arora", "ksparse"]
SMALL = {"subset": 1000, "hidden": 32, "epochs": 2, "batch_size": 100}
PLUGIN_FILE = Path(failing_plugin.__file__).resolve()


cli = run_cli


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture(scope="module")
def builtins_comparison(data_dir, tmp_path_factory):
    """All five built-ins, 1000 images, 32 hidden units, 2 epochs, two at a time."""
    events = []
    result = compare(
        BUILTINS,
        settings=CompareSettings(dataset="mnist", data=str(data_dir), **SMALL),
        params=["ksparse.k=10", "kl.rho=0.05", "arora.lr=0.05"],
        out=tmp_path_factory.mktemp("compare"),
        jobs=2,
        on_event=events.append,
    )
    return result, events


def test_every_builtin_is_compared_under_identical_settings(builtins_comparison):
    comparison, _ = builtins_comparison
    assert [r.method for r in comparison.results] == BUILTINS
    assert all(r.ok for r in comparison.results), [(r.method, r.reason) for r in comparison.failed]
    configs = {
        r.method: json.loads((Path(r.run_dir) / "config.json").read_text())
        for r in comparison.results
    }
    shared = {
        (c["train"]["hidden"], c["train"]["epochs"], c["train"]["batch_size"], c["train"]["seed"])
        for c in configs.values()
    }
    assert shared == {(32, 2, 100, 0)}
    assert {c["data"]["n"] for c in configs.values()} == {1000}
    assert configs["ksparse"]["method_params"]["k"] == 10
    assert configs["kl"]["method_params"]["rho"] == 0.05
    assert configs["arora"]["train"]["lr"] == 0.05
    for r in comparison.results:
        run_dir = Path(r.run_dir)
        assert run_dir.parent == comparison.directory and run_dir.name == r.method
        for name in ("progression.gif", "filters.png", "reconstructions.png", "curves.png"):
            assert (run_dir / name).stat().st_size > 0, (r.method, name)
    listing = json.loads((comparison.directory / "comparison.json").read_text())
    assert [m["status"] for m in listing["methods"]] == ["finished"] * 5


def test_table_has_one_row_per_method_with_finite_values(builtins_comparison):
    comparison, _ = builtins_comparison
    paths = comparison.report
    assert set(paths) == {"html", "csv", "markdown"}
    rows = read_csv(paths["csv"])
    assert [row["method"] for row in rows] == BUILTINS
    for row in rows:
        assert row["status"] == "finished"
        for column in COLUMNS:
            assert math.isfinite(float(row[column.key])), (row["method"], column.key)
        assert 0 <= float(row["dead_units"]) <= 32
        assert 0 < float(row["mean_active"]) <= 32
        assert 0 <= float(row["coherence"]) <= 1 + 1e-9
        assert float(row["fve"]) <= 1
    by_method = {row["method"]: row for row in rows}
    assert float(by_method["ksparse"]["mean_active"]) == pytest.approx(10)  # k units kept

    markdown = paths["markdown"].read_text(encoding="utf-8")
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 2 + 5  # header, rule, one row per method
    assert all(f"| {m} | finished |" in markdown for m in BUILTINS)

    html_text = paths["html"].read_text(encoding="utf-8")
    body_rows = re.findall(r'<tr class="ok" data-method="([^"]+)"', html_text)
    assert body_rows == BUILTINS


def test_html_is_self_contained(builtins_comparison):
    comparison, _ = builtins_comparison
    text = comparison.report["html"].read_text(encoding="utf-8")
    sources = re.findall(r'\ssrc="([^"]*)"', text)
    # Per method: progression, filters, reconstructions, curves; the filters overview; and
    # the two plots across methods (loss and error, seconds per epoch).
    assert len(sources) == 5 * 4 + 5 + 2
    assert all(s.startswith(("data:image/gif;base64,", "data:image/png;base64,")) for s in sources)
    assert "data:image/gif;base64," in text
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert "Content-Security-Policy" in text


def test_the_chart_across_methods_is_full_width_not_a_thumbnail(builtins_comparison):
    """Issue 27: the loss/MSE chart sat in a half-width cell, its legend over the lines."""
    from PIL import Image

    comparison, _ = builtins_comparison
    html = comparison.report["html"]
    assert '<div class="figures across">' in html.read_text(encoding="utf-8")
    with Image.open(html.with_name(f"{html.stem}-curves.png")) as chart:
        assert chart.size[0] >= 1200  # two panels and the legend beside them


def test_one_progress_stream_reports_every_method(builtins_comparison):
    _, events = builtins_comparison
    for method in BUILTINS:
        kinds = [e.kind for e in events if e.method == method]
        assert kinds[0] == "queued" and kinds[-1] == "finished", (method, kinds)
        assert "started" in kinds and kinds.count("epoch") == 2
        done = [e.data["done"] for e in events if e.method == method and e.kind == "progress"]
        assert done == sorted(done) and done[-1] == 2 * 10  # 1000 images / 100 per batch


def test_report_rebuilds_from_existing_runs(builtins_comparison, tmp_path):
    comparison, _ = builtins_comparison
    # One run as `sparsekit train` leaves it (no measures.json): measured from its checkpoint.
    copy = tmp_path / "ksparse-copy"
    shutil.copytree(Path(comparison.results[-1].run_dir), copy)
    (copy / "measures.json").unlink()
    out = tmp_path / "out" / "side-by-side.html"
    result = cli(
        "report", str(comparison.directory), str(copy), "--out", str(out), "--title", "Again"
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip().splitlines()[-1]) == out
    rows = read_csv(out.with_suffix(".csv"))
    assert [r["method"] for r in rows] == [*BUILTINS, "ksparse"]
    original = read_csv(comparison.report["csv"])
    assert rows[:5] == original
    recomputed, stored = rows[-1], original[-1]
    for key in ("mse", "fve", "mean_active", "dead_units", "coherence"):
        assert float(recomputed[key]) == pytest.approx(float(stored[key]), rel=1e-6), key
    assert out.with_suffix(".md").read_text().startswith("# Again\n")
    assert "<title>Again</title>" in out.read_text(encoding="utf-8")


def test_failing_methods_are_marked_and_the_report_still_written(data_dir, tmp_path):
    result = cli(
        "compare", "plain", "explode", "crash", "--plugin", str(PLUGIN_FILE),
        "--data", str(data_dir), "--no-download", "--subset", "300", "--hidden", "16",
        "--epochs", "1", "--out", str(tmp_path), "--jobs", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning: 3 methods: 1 finished, 2 failed" in result.stderr
    report = Path(result.stdout.strip().splitlines()[-1])
    assert report.name == "report.html" and report.exists()
    rows = {r["method"]: r for r in read_csv(report.with_suffix(".csv"))}
    assert rows["plain"]["status"] == "finished" and math.isfinite(float(rows["plain"]["mse"]))
    assert rows["explode"]["status"] == "failed"
    assert failing_plugin.EXPLODE_MESSAGE in rows["explode"]["reason"]
    assert rows["crash"]["status"] == "failed"
    assert "exited with code 3" in rows["crash"]["reason"]

    text = report.read_text(encoding="utf-8")
    for method in ("explode", "crash"):
        assert re.search(rf'<section class="run failed" id="[^"]+" data-method="{method}"', text)
    assert '<section class="run" id="run-plain"' in text
    assert failing_plugin.EXPLODE_MESSAGE not in text  # markup in the reason is escaped
    assert "deliberate failure on the first step &lt;b&gt;&amp;&lt;/b&gt;" in text
    failure = json.loads((report.parent / "explode" / "failure.json").read_text())
    assert "RuntimeError" in failure["traceback"]

    strict = cli(
        "compare", "plain", "explode", "--plugin", str(PLUGIN_FILE), "--strict",
        "--data", str(data_dir), "--no-download", "--subset", "200", "--hidden", "8",
        "--epochs", "1", "--out", str(tmp_path / "strict"), "--jobs", "2",
    )  # fmt: skip
    assert strict.returncode == ComparisonError.exit_code, strict.stderr
    assert "1 failed (explode:" in strict.stderr


def test_every_method_failing_is_an_error_but_the_report_is_written(data_dir, tmp_path):
    comparison = compare(
        ["explode"],
        plugins=[failing_plugin],
        settings=CompareSettings(data=str(data_dir), subset=100, hidden=8, epochs=1),
        out=tmp_path,
    )
    assert [r.status for r in comparison.results] == ["failed"]
    assert comparison.report["html"].exists()

    result = cli(
        "compare", "explode", "--plugin", "failing_plugin", "--data", str(data_dir),
        "--no-download", "--subset", "100", "--hidden", "8", "--epochs", "1",
        "--out", str(tmp_path / "cli"),
    )  # fmt: skip
    # The module form of --plugin needs the module on the path: a clear error without it...
    assert result.returncode == PluginError.exit_code, result.stderr
    assert "cannot load plugin 'failing_plugin'" in result.stderr
    # ... and from tests/ it loads, in the parent and in every worker.
    result = cli(
        "compare", "explode", "--plugin", "failing_plugin", "--data", str(data_dir),
        "--no-download", "--subset", "100", "--hidden", "8", "--epochs", "1",
        "--out", str(tmp_path / "cli"), cwd=PLUGIN_FILE.parent,
    )  # fmt: skip
    assert result.returncode == ComparisonError.exit_code, result.stderr
    assert "every method failed" in result.stderr
    assert list((tmp_path / "cli").glob("compare-*/report.html"))


# --------------------------------------------------------------------------- no training


def test_param_specs_and_planning_are_checked_before_training(tmp_path):
    assert parse_param_specs(["ksparse.k=40", "kl.rho=0.05", "relu-l1.l1=0.1"]) == {
        "ksparse": {"k": "40"},
        "kl": {"rho": "0.05"},
        "relu-l1": {"l1": "0.1"},
    }
    for bad in ("k=40", "ksparse.k", ".k=1", "ksparse.=1"):
        with pytest.raises(ParameterError, match="METHOD.NAME=VALUE"):
            parse_param_specs([bad])
    settings = CompareSettings(hidden=32)
    with pytest.raises(UnknownMethodError, match="available"):
        plan_jobs(["nope"], settings, None, [], tmp_path)
    with pytest.raises(ParameterError, match="shared by every method"):
        plan_jobs(["ksparse"], settings, ["ksparse.hidden=10"], [], tmp_path)
    with pytest.raises(ParameterError, match="has no parameter 'kk' .did you mean k\\? "):
        plan_jobs(["ksparse"], settings, ["ksparse.kk=10"], [], tmp_path)
    with pytest.raises(ParameterError, match="did you mean alpha\\? "):
        plan_jobs(["ksparse"], settings, ["ksparse.alfa=3"], [], tmp_path)
    with pytest.raises(ParameterError, match="not compared"):
        plan_jobs(["plain"], settings, ["kl.rho=0.1"], [], tmp_path)
    with pytest.raises(ParameterError, match="k must be between 1 and the hidden size"):
        plan_jobs(["ksparse"], settings, ["ksparse.k=100"], [], tmp_path)
    with pytest.raises(ParameterError, match="named twice"):
        plan_jobs(["plain", "plain"], settings, None, [], tmp_path)
    jobs = plan_jobs(None, settings, {"arora": {"lr": "0.2"}}, [str(PLUGIN_FILE)], tmp_path)
    names = [j.method for j in jobs]
    assert names[:5] == BUILTINS and {"explode", "crash"} <= set(names)
    assert next(j for j in jobs if j.method == "arora").train == {"lr": 0.2}


def test_cli_errors_before_training_leave_nothing_behind(data_dir, tmp_path):
    result = cli(
        "compare", "plain", "ksparse", "--param", "ksparse.k=999", "--hidden", "16",
        "--data", str(data_dir), "--no-download", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == ParameterError.exit_code
    assert result.stderr.strip().splitlines()[-1].startswith("sparsekit: error: ksparse: --k ")
    assert not list(tmp_path.iterdir())


def test_html_escapes_every_text(tmp_path):
    nasty = '<img src=x onerror="alert(1)">'
    record = RunRecord(
        name=nasty,
        run_dir=tmp_path / nasty.replace("/", "_"),
        status="failed",
        reason=f"boom {nasty} & more",
        method_params={"k": nasty},
        measures={"loss": float("nan"), "mse": 0.5},
    )
    text = render_html([record], title=f"title {nasty}")
    assert nasty not in text and 'onerror="alert' not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert text.count("<img") == 0  # no figures for this run


def test_load_record_of_an_empty_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    record = load_record(tmp_path)
    assert record.name == tmp_path.name and record.measures.get("epochs") == 0
    paths = write_report([tmp_path], tmp_path / "r")
    assert paths["html"].name == "r.html" and paths["csv"].exists()


def test_ctrl_c_stops_the_workers_and_records_it(data_dir, tmp_path):
    import signal
    import time

    process = subprocess.Popen(
        [
            sys.executable, "-m", "sparsekit.cli.main", "compare", "plain", "l2",
            "--data", str(data_dir), "--no-download", "--subset", "1000", "--hidden", "16",
            "--epochs", "500", "--jobs", "1", "--out", str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD": "1"},
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        preexec_fn=sigint_by_default,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in tmp_path.glob("compare-*/plain/metrics.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    (directory,) = tmp_path.glob("compare-*")
    assert f"sparsekit report {directory}" in stderr
    # A new directory each time: the command that continues is printed per method.
    assert f"continue plain: sparsekit train --resume {directory / 'plain'}" in stderr
    assert "not started: l2" in stderr
    plain = json.loads((directory / "plain" / "failure.json").read_text())
    later = json.loads((directory / "l2" / "failure.json").read_text())
    assert plain["status"] == later["status"] == "interrupted"
    assert later["reason"].startswith("not started")
    # One state per method: partial (a checkpoint to resume) or not run, as in a sweep.
    listing = json.loads((directory / "comparison.json").read_text())
    assert [m["status"] for m in listing["methods"]] == ["partial", "not run"]
    paths = write_report([directory], directory / "report.html")
    rows = read_csv(paths["csv"])
    assert [r["status"] for r in rows] == ["partial", "not run"]


# --------------------------------------------------------------------------- presets


def _tiny_preset():
    from sparsekit.studies.compare import Preset

    return Preset(
        name="tiny-study",
        description="two methods, a few hundred images",
        methods=("plain", "ksparse"),
        settings={"hidden": 16, "epochs": 1, "batch_size": 50, "subset": 300},
        params={"ksparse": {"k": 4, "k_start": 4, "center": False}},
        title="tiny study",
    )


def _weights(run_dir: Path) -> dict:
    from sparsekit.training.checkpoint import load_checkpoint

    return load_checkpoint(run_dir)["state"]["params"]


def test_seed_study_preset_is_the_write_ups_settings():
    from sparsekit.studies.compare import PRESETS

    study = PRESETS["seed-study"]
    assert study.methods == ("plain", "l2", "kl", "arora", "ksparse")
    assert study.settings["epochs"] == 500
    assert study.settings["hidden"] == 196
    assert study.params["ksparse"] == {"center": False}  # the same raw pixels for all five


def test_a_preset_continues_where_it_stopped(data_dir, tmp_path):
    from sparsekit.studies.compare import compare

    preset = _tiny_preset()
    first = compare(preset=preset, out=tmp_path / "a", data=str(data_dir), jobs=1)
    directory = tmp_path / "a" / "tiny-study"
    assert first.directory == directory and len(first.succeeded) == 2
    assert json.loads((directory / "comparison.json").read_text())["title"] == "tiny study"

    # Longer: both runs resume from their checkpoints (epoch 1) and end where a run that was
    # never stopped ends, bit for bit.
    longer = compare(preset=preset, out=tmp_path / "a", data=str(data_dir), jobs=1, epochs=3)
    straight = compare(preset=preset, out=tmp_path / "b", data=str(data_dir), jobs=1, epochs=3)
    assert len(longer.succeeded) == len(straight.succeeded) == 2
    for method in ("plain", "ksparse"):
        resumed, reference = _weights(directory / method), _weights(straight.directory / method)
        for key, value in reference.items():
            assert (resumed[key] == value).all(), (method, key)
        assert len((directory / method / "metrics.jsonl").read_text().splitlines()) == 3

    # Finished runs are kept as they are: nothing is trained again.
    stamp = (directory / "plain" / "checkpoint.npz").stat().st_mtime_ns
    again = compare(preset=preset, out=tmp_path / "a", data=str(data_dir), jobs=1, epochs=3)
    assert [r.status for r in again.results] == ["finished", "finished"]
    assert (directory / "plain" / "checkpoint.npz").stat().st_mtime_ns == stamp


def test_an_interrupted_preset_run_resumes(data_dir, tmp_path):
    from sparsekit.studies.compare import compare

    preset = _tiny_preset()
    compare(preset=preset, out=tmp_path, data=str(data_dir), jobs=1, epochs=2)
    run = tmp_path / "tiny-study" / "plain"
    reference = _weights(run)
    # As a Ctrl-C after the first epoch leaves it: a checkpoint at epoch 1 and failure.json.
    compare(preset=preset, out=tmp_path / "stopped", data=str(data_dir), jobs=1, epochs=1)
    stopped = tmp_path / "stopped" / "tiny-study" / "plain"
    (stopped / "measures.json").unlink()
    (stopped / "failure.json").write_text('{"status": "interrupted", "reason": "interrupted"}')
    result = compare(preset=preset, out=tmp_path / "stopped", data=str(data_dir), jobs=1, epochs=2)
    assert [r.status for r in result.results] == ["finished", "finished"]
    assert not (stopped / "failure.json").exists()
    for key, value in reference.items():
        assert (_weights(stopped)[key] == value).all(), key


def test_a_preset_refuses_other_settings_in_its_directory(data_dir, tmp_path):
    from sparsekit.studies.compare import compare

    preset = _tiny_preset()
    compare(preset=preset, out=tmp_path, data=str(data_dir), jobs=1)
    with pytest.raises(ParameterError, match="was run with hidden = 16, not 8"):
        compare(preset=preset, out=tmp_path, data=str(data_dir), hidden=8)
    with pytest.raises(ParameterError, match="unknown preset 'nope'"):
        compare(preset="nope", out=tmp_path, data=str(data_dir))


def test_compare_command_takes_a_preset(data_dir, tmp_path):
    result = cli(
        "compare", "--preset", "seed-study", "--hidden", "9", "--epochs", "1", "--subset",
        "200", "--data", str(data_dir), "--out", str(tmp_path), "--no-download",
        "-p", "ksparse.k=3", "-p", "ksparse.k_start=3", "plain", "ksparse",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listing = json.loads((tmp_path / "seed-study" / "comparison.json").read_text())
    assert [m["method"] for m in listing["methods"]] == ["plain", "ksparse"]
    assert listing["settings"]["hidden"] == 9 and listing["settings"]["snapshot_every"] == 5
    assert listing["settings"]["gif_frames"] == 25
    assert (tmp_path / "seed-study" / "report-curves.png").is_file()
    assert (tmp_path / "seed-study" / "report-seconds.png").is_file()
