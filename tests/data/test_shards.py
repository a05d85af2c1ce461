"""Shard folders: the three layouts read right, their manifest, and bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shard_folders import npy_folder, saelens_cache, safetensors_folder

from sparsekit.data import load_dataset
from sparsekit.data.shards import ShardFolder, check_manifest
from sparsekit.data.stream import StreamDataset
from sparsekit.errors import DataError


def _all_rows(ds: StreamDataset) -> np.ndarray:
    return ds.take(np.arange(len(ds)), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_npy_folder_reads_every_row_in_order(tmp_path, dtype):
    expected = npy_folder(tmp_path / "f", dtype=dtype)
    ds = load_dataset(str(tmp_path / "f"))
    assert isinstance(ds, StreamDataset) and ds.streamed
    assert (len(ds), ds.dim) == expected.shape
    np.testing.assert_array_equal(_all_rows(ds), expected.astype(np.float32))
    # reads of row ranges hit the right bytes (second shard, an inner range)
    np.testing.assert_array_equal(ds.folder.read(1, 5, 9), expected[305:309])


def test_safetensors_folder_picks_the_named_tensor(tmp_path):
    expected = safetensors_folder(tmp_path / "st")
    with pytest.raises(DataError, match="holds 2 tensors.*DIR:name"):
        load_dataset(str(tmp_path / "st"))
    ds = load_dataset(f"{tmp_path / 'st'}:acts")
    np.testing.assert_array_equal(_all_rows(ds), expected)
    with pytest.raises(DataError, match="no tensor 'nope'"):
        load_dataset(f"{tmp_path / 'st'}:nope")


def test_saelens_cache_one_row_per_token(tmp_path):
    expected = saelens_cache(tmp_path / "cache")
    ds = load_dataset(str(tmp_path / "cache"))
    assert ds.folder.kind == "arrow" and ds.dim == 12
    np.testing.assert_array_equal(_all_rows(ds), expected)


def test_manifest_names_each_shard_and_notices_a_change(tmp_path):
    npy_folder(tmp_path / "f")
    first = ShardFolder(tmp_path / "f").manifest()
    assert [s["name"] for s in first["shards"]] == [f"shard_{i:03d}.npy" for i in range(4)]
    assert first["rows"] == 1000 and first["dtype"] == "float32" and first["width"] == 12
    json.dumps(first)
    check_manifest(ShardFolder(tmp_path / "f").manifest(), first)
    np.save(tmp_path / "f" / "shard_002.npy", np.zeros((310, 12), np.float32))
    with pytest.raises(DataError, match="shard shard_002.npy changed"):
        check_manifest(ShardFolder(tmp_path / "f").manifest(), first)
    (tmp_path / "f" / "shard_001.npy").unlink()
    with pytest.raises(DataError, match="shard shard_001.npy is gone"):
        check_manifest(ShardFolder(tmp_path / "f").manifest(), first)


def test_split_holds_out_segments_training_never_reads(tmp_path):
    npy_folder(tmp_path / "f")
    train = load_dataset(str(tmp_path / "f"), split="train", test_fraction=0.2, seed=3)
    test = load_dataset(str(tmp_path / "f"), split="test", test_fraction=0.2, seed=3)
    assert len(train) + len(test) == 1000 and 0 < len(test) < 1000
    seen = {tuple(s) for s in train.segments.tolist()}
    assert not seen & {tuple(s) for s in test.segments.tolist()}
    again = load_dataset(str(tmp_path / "f"), split="test", test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.segments, test.segments)
    with pytest.raises(DataError, match="no held-out split"):
        load_dataset(str(tmp_path / "f"), split="test", test_fraction=0)


def test_statistics_from_the_stated_rows(tmp_path):
    expected = npy_folder(tmp_path / "f")
    ds = load_dataset(str(tmp_path / "f"), stats_rows=10_000)  # more than there are: all
    np.testing.assert_allclose(ds.mean(), expected.astype(np.float64).mean(axis=0), atol=1e-12)
    few = load_dataset(str(tmp_path / "f"), stats_rows=100)
    assert few.statistics()[2] == 100
    scaled = load_dataset(str(tmp_path / "f"), norm_scale=True, stats_rows=10_000)
    norms = np.linalg.norm(_all_rows(scaled).astype(np.float64), axis=1)
    assert norms.mean() == pytest.approx(np.sqrt(12), rel=1e-5)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_bad_folders_are_refused_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no shards") as exc:
        load_dataset(str(empty))
    _one_line(exc)

    npy_folder(tmp_path / "w")
    np.save(tmp_path / "w" / "shard_009.npy", np.zeros((5, 13), np.float32))
    with pytest.raises(DataError, match=r"shard_009.npy: rows of 13 features") as exc:
        load_dataset(str(tmp_path / "w"))
    _one_line(exc)

    npy_folder(tmp_path / "d")
    np.save(tmp_path / "d" / "shard_009.npy", np.zeros((5, 12), np.float16))
    with pytest.raises(DataError, match=r"shard_009.npy: dtype float16") as exc:
        load_dataset(str(tmp_path / "d"))

    npy_folder(tmp_path / "i")
    np.save(tmp_path / "i" / "shard_009.npy", np.zeros((5, 12), np.int32))
    with pytest.raises(DataError, match=r"not float32 or float16"):
        load_dataset(str(tmp_path / "i"))

    npy_folder(tmp_path / "t")
    path = tmp_path / "t" / "shard_001.npy"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard_001.npy: truncated") as exc:
        load_dataset(str(tmp_path / "t"))
    _one_line(exc)


def test_corrupt_arrow_file_is_refused(tmp_path):
    saelens_cache(tmp_path / "c")
    path = tmp_path / "c" / "data-00001-of-00002.arrow"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match=r"data-00001-of-00002.arrow: not a readable Arrow") as exc:
        load_dataset(str(tmp_path / "c"))
    _one_line(exc)


def test_non_finite_rows_are_named_by_shard_and_row(tmp_path):
    expected = npy_folder(tmp_path / "f")
    expected[300 + 250 + 17, 3] = np.nan  # shard 2, row 17
    np.save(tmp_path / "f" / "shard_002.npy", expected[550:860])
    ds = load_dataset(str(tmp_path / "f"))
    with pytest.raises(DataError, match=r"shard_002.npy: row 17 contains NaN") as exc:
        for j in range(len(ds.segments)):
            ds.read_segment(j)
    _one_line(exc)


def test_take_any_rows_in_any_order(tmp_path):
    expected = npy_folder(tmp_path / "f")
    ds = load_dataset(str(tmp_path / "f"))
    idx = np.random.default_rng(0).integers(0, 1000, size=300)
    idx[:3] = [299, 300, 299]  # across a shard boundary, and a repeat
    np.testing.assert_array_equal(ds.take(idx, np.float64), expected[idx].astype(np.float64))


def test_both_splits_are_scaled_as_training_is(tmp_path):
    npy_folder(tmp_path / "f")
    kw = dict(norm_scale=True, test_fraction=0.3, seed=1)
    train = load_dataset(str(tmp_path / "f"), split="train", **kw)
    test = load_dataset(str(tmp_path / "f"), split="test", **kw)
    assert train.scale == test.scale != 1.0
    np.testing.assert_array_equal(train.mean(), test.mean())
