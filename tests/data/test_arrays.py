""".npy / .npz / raw IDX files as data sets, load_dataset, and streaming a file larger than
the memory the reading process is allowed to use."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sparsekit.data import (
    ArrayFileDataset,
    load_array_file,
    load_dataset,
    write_idx,
)
from sparsekit.errors import DataError, ParameterError

REPO = Path(__file__).resolve().parents[2]


def _one_line(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text
    return text


def test_npy_is_memory_mapped_and_read_by_rows(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    ds = load_dataset(path)
    assert isinstance(ds, ArrayFileDataset)
    assert isinstance(ds._data, np.memmap)
    assert (len(ds), ds.dim, ds.name) == (50, 7, "x")
    idx = np.array([3, 3, 49, 0, -1, 10, 11, 12])
    np.testing.assert_array_equal(ds.take(idx), x[idx])
    assert ds.take(idx, np.float64).dtype == np.float64
    assert ds.take(np.array([], dtype=np.intp)).shape == (0, 7)
    with pytest.raises(IndexError):
        ds.take(np.array([50]))
    assert ds.describe()["source"] == {"path": str(path), "format": "npy"}
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.take(idx), x[idx])


def test_uint8_images_scaled(tmp_path: Path) -> None:
    x = np.arange(4 * 3 * 2, dtype=np.uint8).reshape(4, 3, 2) * 10
    np.save(tmp_path / "img.npy", x)
    ds = load_dataset(tmp_path / "img.npy")
    assert ds.image_shape == (3, 2) and ds.dim == 6
    np.testing.assert_allclose(ds.take(np.arange(4)), x.reshape(4, 6) / 255, rtol=1e-6)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_named_arrays(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 5))
    b = rng.standard_normal((10, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, a=a, b=b, y=y)
    first = load_dataset(path)
    assert first.dim == 5
    np.testing.assert_array_equal(first.take(np.arange(20), np.float64), a)
    np.testing.assert_array_equal(first.labels, y)
    assert isinstance(first._data, np.memmap) != compressed
    by_spec = load_dataset(f"{path}:b")
    np.testing.assert_array_equal(by_spec.take(np.array([9, 0])), b[[9, 0]])
    assert by_spec.labels is None
    assert load_array_file(path, key="b").dim == 3
    with pytest.raises(DataError) as excinfo:
        load_dataset(f"{path}:missing")
    _one_line(excinfo, "no array named 'missing'", "a, b, y")


def test_npz_default_key_x(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, other=np.ones((3, 2)), x=np.zeros((4, 2)))
    assert len(load_dataset(path)) == 4


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[1, "a"]], dtype=object), "Python objects"),
        (np.zeros((0, 4)), "empty"),
        (np.zeros((3, 0)), "empty"),
        (np.array([["a", "b"]]), "numeric"),
        (np.zeros((2, 2), dtype=np.complex64), "numeric"),
        (np.zeros(5), "shape (5,)"),
        (np.zeros((2, 2, 2, 2)), "shape (2, 2, 2, 2)"),
        (np.zeros(3, dtype=[("a", "f4")]), "numeric"),
    ],
)
@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_bad_arrays(tmp_path: Path, array: np.ndarray, message: str, fmt: str) -> None:
    path = tmp_path / f"bad.{fmt}"
    if fmt == "npy":
        np.save(path, array, allow_pickle=True)
    else:
        np.savez(path, x=array)
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    _one_line(excinfo, str(path), message)


def test_not_an_array_file(tmp_path: Path) -> None:
    for name, content in [("a.npy", b"hello"), ("a.npz", b"hello"), ("a.npy", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError) as excinfo:
            load_dataset(path)
        _one_line(excinfo, str(path))
    txt = tmp_path / "a.txt"
    txt.write_text("1,2,3\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_dataset(txt)
    with pytest.raises(DataError, match="no such file") as excinfo:
        load_dataset(tmp_path / "nope.npy")
    _one_line(excinfo, "mnist", "synthetic")
    # a folder is a shard folder now (tests/data/test_shards.py): one without shards says so
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no shards"):
        load_dataset(tmp_path / "empty")


def test_nan_in_memory_checked_at_load(tmp_path: Path) -> None:
    x = np.ones((10, 3))
    x[7, 1] = np.nan
    path = tmp_path / "n.npz"
    np.savez_compressed(path, x=x)
    with pytest.raises(DataError) as excinfo:
        load_dataset(path)
    _one_line(excinfo, "row 7", "NaN")


def test_inf_in_memmap_checked_per_batch(tmp_path: Path) -> None:
    x = np.ones((10, 3), dtype=np.float32)
    x[7, 1] = np.inf
    path = tmp_path / "n.npy"
    np.save(path, x)
    ds = load_dataset(path)  # loading does not scan the file
    assert ds.take(np.arange(5)).shape == (5, 3)
    with pytest.raises(DataError) as excinfo:
        ds.take(np.array([1, 7, 2]))
    _one_line(excinfo, str(path), "row 7")


@pytest.mark.parametrize("compress", [False, True])
def test_idx_file(tmp_path: Path, compress: bool) -> None:
    x = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3) - 30
    path = write_idx(tmp_path / ("x.idx.gz" if compress else "x.idx"), x)
    ds = load_dataset(path)
    assert ds.image_shape == (4, 3)
    np.testing.assert_array_equal(ds.take(np.array([4, 0]), np.float64), x[[4, 0]].reshape(2, 12))
    assert (ds._file is not None) != compress  # raw IDX files are read by rows
    one_d = write_idx(tmp_path / "labels.idx", np.arange(5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \(5,\)"):
        load_dataset(one_d)


def test_splits_of_a_file(tmp_path: Path) -> None:
    x = np.arange(100, dtype=np.float64)[:, None] * np.ones((1, 2))
    path = tmp_path / "x.npy"
    np.save(path, x)
    train = load_dataset(path, split="train", seed=3)
    test = load_dataset(path, split="test", seed=3)
    assert (len(train), len(test)) == (90, 10)
    rows = np.concatenate([train.to_array(np.float64)[:, 0], test.to_array(np.float64)[:, 0]])
    assert sorted(rows) == list(range(100))
    again = load_dataset(path, split="test", seed=3)
    np.testing.assert_array_equal(again.to_array(), test.to_array())
    other = load_dataset(path, split="test", seed=4)
    assert not np.array_equal(other.to_array(), test.to_array())
    assert len(load_dataset(path, split="train", subset=7)) == 7
    with pytest.raises(ParameterError, match="split"):
        load_dataset(path, split="valid")


def test_synthetic_by_name() -> None:
    ds = load_dataset("synthetic:n=200,dim=8,atoms=12,k=2", split="train")
    assert (len(ds), ds.dim) == (200, 8)
    test = load_dataset("synthetic:n=200,dim=8,atoms=12,k=2", split="test")
    assert test.dim == 8 and test.name == "synthetic-test"
    assert len(load_dataset("synthetic:n=200,dim=8,atoms=12,k=2", subset=20)) == 20
    with pytest.raises(ParameterError, match="bad synthetic data option"):
        load_dataset("synthetic:colour=blue")


READER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from sparsekit.data import load_dataset

    def peak_kib():  # VmHWM, not ru_maxrss: that one keeps the forking parent's peak
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    ds = load_dataset(sys.argv[1])
    before = peak_kib()
    perm = np.random.default_rng(0).permutation(len(ds))
    total = 0.0
    for start in range(0, len(ds), 1024):
        total += float(ds.take(perm[start : start + 1024]).sum(dtype=np.float64))
    after = peak_kib()
    print(json.dumps({"before_kib": before, "peak_kib": after, "total": total}))
    """
)

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np

    n, d = int(sys.argv[2]), int(sys.argv[3])
    out = np.lib.format.open_memmap(sys.argv[1], mode="w+", dtype=np.float32, shape=(n, d))
    step = (8 << 20) // (4 * d)
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = (np.arange(start, stop, dtype=np.float32) % 7)[:, None]
        out.flush()
    del out
    """
)


def test_streaming_a_large_npy_keeps_rss_small(tmp_path: Path) -> None:
    """A 400 MB .npy, read minibatch by minibatch in random order in a fresh process: the
    process's peak resident memory stays far below the file size."""
    n, d = 400 * 1024, 256  # 400 MiB of float32
    path = tmp_path / "big.npy"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", WRITER, str(path), str(n), str(d)], check=True, env=env)
    size = path.stat().st_size
    assert size > 400 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", READER, str(path)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    expected = d * sum((i % 7) for i in range(7)) * (n // 7) + d * sum(i % 7 for i in range(n % 7))
    assert stats["total"] == pytest.approx(expected)
    peak_bytes = stats["peak_kib"] * 1024
    assert peak_bytes < size / 4, stats
    assert (stats["peak_kib"] - stats["before_kib"]) * 1024 < 64 * 1024 * 1024, stats
