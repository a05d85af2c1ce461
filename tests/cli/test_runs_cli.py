"""``sparsekit train`` run directories and ``export`` / ``encode`` / ``show``, end to end
(real subprocesses, real MNIST)."""

from __future__ import annotations

import io
import json
import subprocess
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

import sparsekit
from sparsekit.data import load_mnist
from sparsekit.evaluation.figures import filter_grid
from sparsekit.testing import mnist_data_dir

DATA_DIR = mnist_data_dir()


sk = partial(run_cli, env={"COLUMNS": "120"})


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {DATA_DIR}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    out = tmp_path_factory.mktemp("runs")
    result = sk(
        "train", "ksparse", "--data", str(DATA_DIR), "--subset", "600", "--epochs", "3",
        "--hidden", "16", "--k", "5", "--snapshot-every", "2", "--out", str(out),
        "--no-download",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def test_train_leaves_every_figure_and_a_summary(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json", "metrics.jsonl", "summary.json", "filters.png", "progression.gif",
        "reconstructions.png", "curves.png", "checkpoint.npz",
    } <= names  # fmt: skip
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "ksparse" and summary["epochs"] == 3
    assert summary["status"] == "finished"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_spec"]["spec"] == "mnist" and config["data_spec"]["subset"] == 600
    assert config["run"]["snapshot_every"] == 2
    with Image.open(run_dir / "progression.gif") as gif:
        assert gif.n_frames == 3  # epochs 0, 2 and the last, 3
        assert gif.size == (4 * 28 + 5, 4 * 28 + 5)  # 16 filters: 4x4 tiles
    with Image.open(run_dir / "curves.png") as image:
        assert image.size[0] > 300


def test_export_redraws_the_figures_from_the_checkpoint(run_dir, tmp_path):
    result = sk(
        "export", str(run_dir), "--cols", "8", "--scale", "3", "--max-filters", "12",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted(Path(line).name for line in result.stdout.split())
    assert written == ["curves.png", "filters.png", "progression.gif", "reconstructions.png"]
    model = sparsekit.load_run(run_dir)
    expected = filter_grid(model.encoder_weights, (28, 28), cols=8, scale=3, max_filters=12)
    with Image.open(tmp_path / "filters.png") as image:
        assert np.array_equal(np.asarray(image), expected)
    with Image.open(tmp_path / "progression.gif") as gif:
        assert gif.size == (expected.shape[1], expected.shape[0]) and gif.n_frames == 3
    # Exporting into the run directory with the defaults reproduces what training drew.
    before = (run_dir / "filters.png").read_bytes()
    assert sk("export", str(run_dir)).returncode == 0
    with Image.open(run_dir / "filters.png") as a, Image.open(io.BytesIO(before)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_encode_writes_codes(run_dir, tmp_path):
    out = tmp_path / "codes.npy"
    result = sk(
        "encode", str(run_dir), "mnist", str(out), "--data", str(DATA_DIR), "--split", "test",
        "--subset", "50",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    codes = np.load(out, allow_pickle=False)
    assert codes.shape == (50, 16) and codes.dtype == np.float32
    # Encoding keeps alpha*k = 15 units (of 16); the same as the library's model.encode.
    images = load_mnist(DATA_DIR, split="test", subset=50).to_array(np.float32)
    assert np.array_equal(codes, sparsekit.load_run(run_dir).encode(images))

    # Any file load_dataset reads: a .npy of uint8 images.
    raw = tmp_path / "digits.npy"
    np.save(raw, (images[:7].reshape(7, 28, 28) * 255).round().astype(np.uint8))
    result = sk("encode", str(run_dir), str(raw), str(tmp_path / "c2.npy"))
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "c2.npy").shape == (7, 16)


def test_encode_errors_are_one_line(run_dir, tmp_path):
    bad = tmp_path / "wide.npy"
    np.save(bad, np.zeros((3, 10), np.float32))
    line = one_line_error(sk("encode", str(run_dir), str(bad), str(tmp_path / "c.npy")))
    assert "10 features" in line and "expects 784" in line
    line = one_line_error(sk("encode", str(run_dir), str(bad), str(tmp_path / "c.txt")))
    assert ".npy" in line
    line = one_line_error(sk("encode", str(tmp_path / "none"), "mnist", str(tmp_path / "c.npy")))
    assert "no such run directory" in line


def test_show_prints_a_summary(run_dir):
    result = sk("show", str(run_dir))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    for words in ("ksparse", "k=5", "hidden 16", "3 of 3", "mnist-train (600 samples)"):
        assert words in text, text
    assert f"{summary['final']['loss']:.5f}" in text
    assert f"{summary['final']['mse']:.5f}" in text
    assert "dead units" in text and "seconds" in text
