"""Shared fixtures: the real MNIST files (see sparsekit.testing.mnist_data_dir), small subsets,
and :func:`run_cli`, the one way tests run the command line in a subprocess.

Test modules import the helper itself (``from conftest import run_cli``: pytest puts ``tests/``
on ``sys.path``, as for ``failing_plugin``) where they need it outside a test, e.g. in a
module-scoped fixture; a test may take the ``sparsekit_cli`` fixture instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from sparsekit.testing import mnist_data_dir

#: The folder that holds mnist/ ($SPARSEKIT_TEST_DATA, else where sparsekit downloads MNIST).
DATA_DIR = mnist_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {DATA_DIR}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_2000(data_dir: Path) -> np.ndarray:
    """The first 2,000 MNIST training images, float32 in [0, 1], 2000×784."""
    from sparsekit.data import load_mnist

    return load_mnist(data_dir, split="train", subset=2000).to_array(np.float32)



# -- the lasso problems of the coder tests (tests/coders/) -----------------------------------


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def random_problem() -> tuple[np.ndarray, np.ndarray, float]:
    """30 random rows coded on 48 random unit atoms of 24 features, α = 0.5."""
    rng = np.random.default_rng(0)
    dictionary = _unit_rows(rng.standard_normal((48, 24)))
    x = rng.standard_normal((30, 24))
    return x, dictionary, 0.5


@pytest.fixture(scope="module")
def mnist_problem(mnist_2000: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """40 MNIST rows coded on 100 other (normalised) rows: a coherent dictionary."""
    data = mnist_2000.astype(np.float64)
    return data[:40], _unit_rows(data[1000:1100]), 1.0


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    autoload: bool = False,
    clean: bool = False,
    cwd: Path | str | None = None,
    timeout: float = 300,
    **kwargs,
) -> subprocess.CompletedProcess:
    """``python -m sparsekit.cli.main ARGS`` in a subprocess; its output captured as text.

    The environment is this process's with ``SPARSEKIT_DEBUG`` removed (it would turn the
    one-line errors the tests check into tracebacks) and, unless ``autoload``,
    ``SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD=1`` (plugins installed in the environment must not
    change what the built-ins do). ``clean`` drops every ``SPARSEKIT_*`` variable first, for
    tests that set the plugin switches themselves. ``env`` is added last; ``kwargs`` go to
    :func:`subprocess.run`.
    """
    environ = {
        key: value
        for key, value in os.environ.items()
        if key != "SPARSEKIT_DEBUG" and not (clean and key.startswith("SPARSEKIT_"))
    }
    if not autoload:
        environ["SPARSEKIT_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sparsekit.cli.main", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="session")
def sparsekit_cli():
    """:func:`run_cli`, as a fixture."""
    return run_cli


def sigint_by_default() -> None:
    """``preexec_fn`` for a child that must get SIGINT as a terminal delivers it, even when
    this suite runs as a background job of a non-interactive shell, which starts with SIGINT
    ignored (and then so does sparsekit, rightly: ``cli/stop.py``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
