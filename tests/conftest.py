"""Shared fixtures: the real MNIST files from the shared data folder, small subsets of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

#: The folder that holds mnist/ (CI points SPARSEKIT_TEST_DATA at ../shared/data).
DATA_DIR = Path(
    os.environ.get("SPARSEKIT_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {DATA_DIR}/mnist: set SPARSEKIT_TEST_DATA to ../shared/data"
        )
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist_2000(data_dir: Path) -> np.ndarray:
    """The first 2,000 MNIST training images, float32 in [0, 1], 2000×784."""
    from sparsekit.data import load_mnist

    return load_mnist(data_dir, split="train", subset=2000).to_array(np.float32)
