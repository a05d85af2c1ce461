"""Every way a user can get it wrong: one line on stderr, a non-zero exit code, no traceback.

The cases live in ``scripts/error_table.py`` (which also writes the table in
``docs/errors.md`` from the same runs). Each case is a real ``sparsekit`` process run in a
folder of broken input files. Also here: divergence keeps the last good checkpoint, and
untrusted files (pickles in ``.npy``/``.npz`` data or checkpoints) never run code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_error_table():
    spec = importlib.util.spec_from_file_location(
        "error_table", ROOT / "scripts" / "error_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["error_table"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


error_table = _load_error_table()
CASES = {case.id: case for case in error_table.CASES}


@pytest.fixture(scope="module")
def case_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("error-cases")
    error_table.make_fixtures(folder)
    yield folder
    error_table.cleanup_fixtures(folder)


@pytest.fixture(scope="module")
def results(case_folder):
    """All cases, run a few at a time (each is its own process)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = pool.map(lambda c: error_table.run_case(c, case_folder), CASES.values())
        return {r.case.id: r for r in done}


@pytest.mark.parametrize("case_id", list(CASES))
def test_error_case(results, case_id):
    r = results[case_id]
    if r.skipped:
        pytest.skip(r.skipped)
    assert r.returncode != 0
    assert r.returncode == r.case.exit_code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.error_lines) == 1, r.stderr
    if r.case.before_training:
        assert len(r.lines) == 1, r.stderr  # nothing but the error
    else:
        assert r.lines[-1].startswith(error_table.ERROR_PREFIX), r.stderr
    assert r.case.expect in r.message
    assert r.problems() == []


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(results, case_folder):
    from sparsekit.training.checkpoint import load_checkpoint

    r = results["disk-full-checkpoint"]
    if r.skipped:
        pytest.skip(r.skipped)
    (run,) = (case_folder / "runs-full-ckpt").iterdir()
    assert load_checkpoint(run)["meta"]["epoch"] == 1  # the write for epoch 2 failed
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]


def test_cases_have_unique_ids_and_the_doc_lists_them():
    ids = [c.id for c in error_table.CASES]
    assert len(ids) == len(set(ids))
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for case in error_table.CASES:
        assert case.command().replace("|", "\\|") in doc, f"{case.id}: run scripts/error_table.py"


def test_debug_shows_the_traceback(case_folder):
    env = error_table._env(case_folder)
    env["SPARSEKIT_DEBUG"] = "1"
    proc = subprocess.run(
        [*error_table.sparsekit_command(), "train", "plain", "--dataset", "nan.npy"],
        cwd=case_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "DataError: nan.npy: row 7 contains NaN or infinite values" in proc.stderr


# -- divergence ------------------------------------------------------------------------------


def _sparsekit(args, cwd, timeout=120):
    env = error_table._env(Path(cwd))
    return subprocess.run(
        [*error_table.sparsekit_command(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("method", "good_epochs"),
    [("ksparse", 0), ("l2", 1)],  # ksparse blows up in epoch 1, l2 in epoch 2
)
def test_divergence_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path, data_dir, method, good_epochs
):
    from sparsekit.runs.restore import load_run
    from sparsekit.runs.writer import read_metrics
    from sparsekit.training.checkpoint import load_checkpoint

    proc = _sparsekit(
        [
            "train",
            method,
            "--data",
            str(data_dir),
            "--no-download",
            "--subset",
            "600",
            "--hidden",
            "32",
            "--epochs",
            "4",
            "--lr",
            "1e6",
            "--optimizer",
            "sgd",
            "--out",
            str(tmp_path / "runs"),
        ],  # fmt: skip
        tmp_path,
    )
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sparsekit: error:")]
    assert len(errors) == 1
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert re.search(r"training diverged at epoch \d+, step \d+", errors[0]), errors[0]
    (run,) = (tmp_path / "runs").iterdir()
    ckpt = load_checkpoint(run)  # loads: finite, complete
    assert ckpt["meta"]["epoch"] == good_epochs
    assert len(read_metrics(run)) == good_epochs
    assert json.loads((run / "config.json").read_text())["method"] == method
    model = load_run(run)
    assert all(np.isfinite(v).all() for v in model.numpy_params().values())
    assert not list(run.glob(".*tmp*"))  # no temporary files left behind


# -- untrusted files -------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the folder ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_array(marker: Path) -> np.ndarray:
    arr = np.empty((2, 2), dtype=object)
    arr[0, 0] = _Payload(marker)
    return arr


def test_data_files_with_pickles_are_refused_without_running_code(tmp_path):
    from sparsekit.data import load_dataset
    from sparsekit.errors import DataError

    marker = tmp_path / "code-ran"
    np.save(tmp_path / "evil.npy", _evil_array(marker), allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=_evil_array(marker))
    np.savez_compressed(tmp_path / "evilc.npz", x=_evil_array(marker))
    for name in ("evil.npy", "evil.npz", "evilc.npz"):
        with pytest.raises(DataError, match="Python objects"):
            load_dataset(tmp_path / name)
        proc = _sparsekit(["train", "plain", "--dataset", name, "--out", "runs"], tmp_path)
        assert proc.returncode == 3
        assert proc.stderr.strip().count("\n") == 0
        assert "Traceback" not in proc.stderr
    assert not marker.exists()
    # the payload is real: numpy would run it if asked to
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()


def test_checkpoints_with_pickles_are_refused_without_running_code(case_folder, tmp_path):
    from sparsekit.errors import CheckpointError
    from sparsekit.runs.restore import load_run
    from sparsekit.training.checkpoint import load_checkpoint

    marker = tmp_path / "code-ran"
    source = case_folder / "run-ksparse" / "checkpoint.npz"
    with np.load(source) as archive:
        members = {k: archive[k] for k in archive.files}
    for key in ("params/W_enc", "meta", "extra/holdout"):
        evil = dict(members)
        evil[key] = _evil_array(marker)
        path = tmp_path / f"evil-{key.replace('/', '-')}.npz"
        np.savez(path, **evil)
        with pytest.raises(CheckpointError, match="pickled object array"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError):
            load_run(path)
    assert not marker.exists()


def test_no_pickle_anywhere_in_the_package():
    """Every np.load in sparsekit passes allow_pickle=False; nothing imports pickle."""
    calls = 0
    for path in (ROOT / "sparsekit").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(
            r"^\s*(import pickle|from pickle|import dill|import joblib)", text, re.M
        ), path
        for match in re.finditer(r"\bnp\.load\(", text):
            calls += 1
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            call = text[match.start() : end + 1]
            assert "allow_pickle=False" in call, f"{path}: {call}"
    assert calls > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_an_in_memory_array_is_a_data_error_not_divergence(bad):
    import sparsekit
    from sparsekit.errors import DataError

    x = np.random.default_rng(0).random((50, 4, 4)).astype(np.float32)
    x[31, 2, 1] = bad
    with pytest.raises(DataError, match="array: row 31 contains NaN or infinite values"):
        sparsekit.train("l2", x, hidden=8, epochs=1)
