"""MNIST on the real files in the shared data folder (read-only), and the loader's errors."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparsekit.data import (
    ArrayFileDataset,
    ChecksumError,
    load_dataset,
    load_mnist,
    read_idx,
    resolve_data_dir,
    write_idx,
)
from sparsekit.data.paths import DATA_ENV, default_data_dir
from sparsekit.data.sources import MNIST
from sparsekit.errors import DataError, ParameterError
from sparsekit.testing import mnist_data_dir

SHARED = mnist_data_dir()


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (SHARED / "mnist").is_dir():
        pytest.fail(
            f"MNIST not found in {SHARED}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA to a folder holding mnist/"
        )
    return SHARED


@pytest.fixture(scope="module")
def train(data_dir: Path) -> ArrayFileDataset:
    return load_mnist(data_dir, split="train")


def test_published_checksums_of_shared_files(data_dir: Path) -> None:
    for spec in MNIST.files():
        digest = hashlib.sha256()
        read_idx(data_dir / "mnist" / spec.name, digest=digest)
        assert digest.hexdigest() == spec.sha256, spec.name


def test_train_split(train: ArrayFileDataset) -> None:
    assert len(train) == 60000
    assert train.dim == 784
    assert train.image_shape == (28, 28)
    assert train.name == "mnist-train"
    x = train.to_array(np.float64)
    assert x.shape == (60000, 784)
    assert x.min() == 0.0 and x.max() == 1.0
    assert x.mean() == pytest.approx(33.3184 / 255, abs=1e-6)
    assert train.labels is not None
    assert train.labels.shape == (60000,)
    assert set(np.unique(train.labels)) == set(range(10))
    assert train._data.dtype == np.uint8  # pixels stay bytes in memory


def test_take_is_float_in_order(train: ArrayFileDataset) -> None:
    idx = np.array([5, 0, 59999, 5])
    rows = train.take(idx)
    assert rows.dtype == np.float32 and rows.flags.c_contiguous
    assert rows.shape == (4, 784)
    np.testing.assert_array_equal(rows[0], rows[3])
    np.testing.assert_allclose(rows[1], train.to_array()[0])


def test_test_split_and_subset(data_dir: Path) -> None:
    test = load_mnist(data_dir, split="test")
    assert (len(test), test.dim, test.name) == (10000, 784, "mnist-test")
    assert test.labels is not None and test.labels.max() == 9 and test.labels.min() == 0
    small = load_mnist(data_dir, split="test", subset=100)
    assert len(small) == 100
    np.testing.assert_array_equal(small.labels, test.labels[:100])
    np.testing.assert_array_equal(small.take(np.arange(100)), test.take(np.arange(100)))
    desc = small.describe()
    assert desc["n"] == 100 and desc["source"]["subset"] == 100
    with pytest.raises(ParameterError, match="larger than"):
        load_mnist(data_dir, split="test", subset=10001)
    with pytest.raises(ParameterError):
        load_mnist(data_dir, split="test", subset=0)
    with pytest.raises(ParameterError, match="split"):
        load_mnist(data_dir, split="validation")
    with pytest.raises(ParameterError, match="unknown data set"):
        load_mnist(data_dir, kind="cifar")


def test_load_dataset_by_name(data_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir, split="test", subset=10)
    assert (len(ds), ds.dim, ds.name) == (10, 784, "mnist-test")


def test_env_var_and_precedence(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(data_dir))
    assert resolve_data_dir() == data_dir
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")
    assert len(load_mnist(split="test", subset=3)) == 3
    monkeypatch.delenv(DATA_ENV)
    assert resolve_data_dir() == default_data_dir()
    assert "sparsekit" in str(default_data_dir())


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path, split="train")
    text = str(excinfo.value)
    assert "\n" not in text
    assert str(tmp_path / "mnist") in text
    assert "train-images-idx3-ubyte.gz" in text and "train-labels-idx1-ubyte.gz" in text
    assert "sparsekit download mnist" in text and "--download" in text
    with pytest.raises(DataError, match="fashion-mnist"):
        load_mnist(tmp_path, kind="fashion-mnist")


def _copy_test_split(data_dir: Path, dest: Path, *, decompress: bool = False) -> Path:
    folder = dest / "mnist"
    folder.mkdir(parents=True)
    for spec in MNIST.splits["test"]:
        src = data_dir / "mnist" / spec.name
        if decompress:
            (folder / spec.name[:-3]).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copyfile(src, folder / spec.name)
    return folder


def test_uncompressed_files_accepted(data_dir: Path, tmp_path: Path) -> None:
    _copy_test_split(data_dir, tmp_path, decompress=True)
    ds = load_mnist(tmp_path, split="test")
    ref = load_mnist(data_dir, split="test")
    np.testing.assert_array_equal(ds.take(np.arange(50)), ref.take(np.arange(50)))
    assert ds.describe()["source"]["files"] == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]


def test_wrong_content_detected(data_dir: Path, tmp_path: Path) -> None:
    folder = _copy_test_split(data_dir, tmp_path)
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    labels[0] = (labels[0] + 1) % 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ChecksumError, match="not the published MNIST file") as excinfo:
        load_mnist(tmp_path, split="test")
    assert "\n" not in str(excinfo.value)
    # without verification the (structurally fine) file loads
    assert len(load_mnist(tmp_path, split="test", verify=False)) == 10000


def test_swapped_and_mismatched_files(data_dir: Path, tmp_path: Path) -> None:
    folder = _copy_test_split(data_dir, tmp_path)
    images = folder / "t10k-images-idx3-ubyte.gz"
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    images.rename(folder / "tmp")
    labels.rename(images)
    (folder / "tmp").rename(labels)
    with pytest.raises(DataError, match=r"a labels file\?"):
        load_mnist(tmp_path, split="test", verify=False)
    labels.rename(folder / "tmp")
    images.rename(labels)
    (folder / "tmp").rename(images)
    write_idx(labels, np.zeros(9999, dtype=np.uint8))
    with pytest.raises(DataError, match="10000 images but .* 9999 labels"):
        load_mnist(tmp_path, split="test", verify=False)
    write_idx(labels, np.full(10000, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="labels must be 0..9"):
        load_mnist(tmp_path, split="test", verify=False)


def test_corrupt_file_is_one_line_data_error(data_dir: Path, tmp_path: Path) -> None:
    folder = _copy_test_split(data_dir, tmp_path)
    path = folder / "t10k-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path, split="test")
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)


def test_missing_files_message_names_the_test_files_too(tmp_path: Path) -> None:
    # Issue 27: offline, the error named only the training files; eval then failed on the
    # test files. One message now names every missing file of every split.
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path, split="train")
    text = str(excinfo.value)
    assert "\n" not in text
    for spec in (*MNIST.splits["train"], *MNIST.splits["test"]):
        assert spec.name in text
