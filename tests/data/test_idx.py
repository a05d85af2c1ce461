"""IDX reading and writing: every data type, gzip or raw, and every way a file can be bad."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsekit.data.idx import (
    IDX_TYPES,
    is_gzip,
    read_idx,
    read_idx_header,
    sha256_uncompressed,
    write_idx,
)
from sparsekit.errors import DataError
from sparsekit.testing import mnist_data_dir

SHARED = mnist_data_dir()

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    dtype = np.dtype(arr.dtype)
    if code is None:
        code = next(c for c, d in IDX_TYPES.items() if d.newbyteorder("=") == dtype)
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(IDX_TYPES[code]).tobytes()


def _one_line_error(excinfo: pytest.ExceptionInfo, path: Path) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    assert str(path) in text
    return text


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_every_type(tmp_path: Path, dtype: type, compress: bool) -> None:
    arr = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    if np.dtype(dtype).kind == "f":
        arr = arr / 3
    name = "a.idx.gz" if compress else "a.idx"
    path = write_idx(tmp_path / name, arr)
    assert is_gzip(path) == compress
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert read_idx_header(path) == (np.dtype(dtype), (2, 3, 5))


def test_big_endian_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes([0, 0, 1, 2, 255, 255, 255, 254]))
    np.testing.assert_array_equal(read_idx(path), [258, -2])


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(_idx_bytes(arr))
    gz_named_raw = tmp_path / "compressed.idx"
    gz_named_raw.write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)


def test_mmap_of_raw_file(tmp_path: Path) -> None:
    arr = np.arange(60, dtype=np.int16).reshape(5, 12) * 300
    path = write_idx(tmp_path / "a.idx", arr)
    mapped = read_idx(path, mmap=True)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, arr)


def test_write_rejects_unsupported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot store dtype int64"):
        write_idx(tmp_path / "a.idx", np.arange(3, dtype=np.int64))
    with pytest.raises(DataError, match="empty"):
        write_idx(tmp_path / "a.idx", np.zeros((0, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "a.idx", np.uint8(3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"PK\x03\x04 some zip file", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX data type code 0x07"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x03\x00\x00\x00\x00", "empty dimension"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x04\x01\x02", "truncated"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x04", "truncated"),
        (b"\x00\x00\x08", "truncated"),
        (b"", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02\x03", "1 trailing bytes"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x02" + b"\x00" * 7, "truncated"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_bad_files(tmp_path: Path, content: bytes, message: str, compress: bool) -> None:
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(DataError, match=message) as excinfo:
        read_idx(path)
    _one_line_error(excinfo, path)


def test_huge_declared_size_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "huge.gz"
    header = bytes([0, 0, 0x0E, 3]) + np.array([2**32 - 1] * 3, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + b"\x00" * 64))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    _one_line_error(excinfo, path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.int32)))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt gzip|truncated") as excinfo:
        read_idx(truncated)
    _one_line_error(excinfo, truncated)
    crc = bytearray(good)
    crc[-8] ^= 0xFF  # CRC32 of the trailer
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(bytes(crc))
    with pytest.raises(DataError, match="corrupt gzip") as excinfo:
        read_idx(bad_crc)
    _one_line_error(excinfo, bad_crc)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match="cannot read") as excinfo:
        read_idx(tmp_path)
    assert "\n" not in str(excinfo.value)


def test_sha256_of_real_labels_file() -> None:
    path = SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not path.exists():
        pytest.fail(
            f"MNIST not found in {SHARED}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA"
        )
    assert sha256_uncompressed(path) == (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    )


# --- property tests: whatever happens to the bytes, the loader raises DataError or nothing.

_WORKDIR = Path(tempfile.mkdtemp(prefix="sparsekit-idx-hyp-"))


def _file_bytes(code: int, shape: tuple[int, ...], seed: int) -> bytes:
    itemsize = IDX_TYPES[code].itemsize
    payload = np.random.default_rng(seed).bytes(int(np.prod(shape)) * itemsize)
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes() + payload


def _mutate(data: bytes, kind: str, pos: int, value: int, extra: bytes) -> bytes:
    pos = pos % max(1, len(data))
    if kind == "flip":
        out = bytearray(data)
        out[pos] ^= value or 1
        return bytes(out)
    if kind == "truncate":
        return data[:pos]
    return data + extra


mutations = st.tuples(
    st.sampled_from(["flip", "truncate", "extend"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=16),
)


def _check_read(data: bytes) -> None:
    path = _WORKDIR / "case"
    path.write_bytes(data)
    try:
        arr = read_idx(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert arr.size > 0 and arr.dtype.isnative


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from(sorted(IDX_TYPES)),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    seed=st.integers(0, 2**16),
    mutation=mutations,
    compress=st.booleans(),
)
def test_mutated_files_only_raise_data_error(
    code: int, shape: tuple[int, ...], seed: int, mutation: tuple, compress: bool
) -> None:
    data = _file_bytes(code, shape, seed)
    if compress:
        data = gzip.compress(data, mtime=0)
    kind, pos, value, extra = mutation
    if kind == "flip" and not compress:
        pos = pos % (4 + 4 * len(shape))  # header bytes: payload flips are just other values
    _check_read(_mutate(data, kind, pos, value, extra))


@settings(max_examples=100, deadline=None)
@given(
    header=st.binary(min_size=0, max_size=24),
    payload=st.binary(min_size=0, max_size=64),
)
def test_random_headers_only_raise_data_error(header: bytes, payload: bytes) -> None:
    _check_read(b"\x00\x00" + header + payload)


@settings(max_examples=40, deadline=None)
@given(mutation=mutations)
def test_mutated_real_labels_file(mutation: tuple) -> None:
    path = SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not path.exists():
        pytest.fail(
            f"MNIST not found in {SHARED}/mnist: run `sparsekit download mnist` or set SPARSEKIT_TEST_DATA"
        )
    _check_read(_mutate(path.read_bytes(), *mutation))
