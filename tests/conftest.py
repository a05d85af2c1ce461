"""Shared fixtures: the real MNIST files (see sparsekit.testing.mnist_data_dir), small subsets."""

from __future__ import annotations

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
