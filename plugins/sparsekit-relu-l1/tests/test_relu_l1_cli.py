"""The installed plugin from the command line: listed with its origin, checked, trained."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from sparsekit.testing import mnist_data_dir

BIN = Path(sys.executable).parent
DATA = mnist_data_dir()

pytestmark = pytest.mark.skipif(
    not any(ep.name == "relu-l1" for ep in entry_points(group="sparsekit")),
    reason="sparsekit-relu-l1 is not installed (pip install -e plugins/sparsekit-relu-l1)",
)


def sparsekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [str(BIN / "sparsekit"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_listed_with_its_origin():
    result = sparsekit("list")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "relu-l1" in line)
    assert "plugin relu-l1 (sparsekit_relu_l1)" in line
    assert "--l1 (0.05)" in result.stdout


def test_gradcheck_passes_both_layouts():
    result = sparsekit("gradcheck", "relu-l1", "--l1", "0.5")
    assert result.returncode == 0, result.stdout
    assert "code-weight penalty: ∂Ω_HW/∂W_dec" in result.stdout
    assert "relu-l1 (tied): gradients match" in result.stdout
    assert "relu-l1 (untied): gradients match" in result.stdout


def test_trains_on_mnist(tmp_path):
    if not (DATA / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {DATA}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    result = sparsekit(
        "train", "relu-l1", "--subset", "500", "--epochs", "1", "--data", str(DATA),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch   1" in result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir() and run_dir.parent == tmp_path
