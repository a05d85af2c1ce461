"""The stream plan: every row once an epoch, seeded, bounded windows, exact from any step."""

from __future__ import annotations

import numpy as np
import pytest
from shard_folders import npy_folder

import sparsekit
from sparsekit.data import load_dataset
from sparsekit.data.stream import WINDOWS_IN_MEMORY
from sparsekit.errors import DataError, ParameterError
from sparsekit.training.batches import BatchPlan, StreamPlan, plan_for


@pytest.fixture
def folder(tmp_path):
    expected = npy_folder(tmp_path / "f")
    return tmp_path / "f", expected


def _epoch(plan, dtype=np.float32):
    steps = plan.start_epoch()
    return [plan.batch(s, dtype) for s in range(steps)]


def test_the_plan_is_declared_by_the_data_set(folder):
    ds = load_dataset(str(folder[0]))
    rng = np.random.default_rng(0)
    assert isinstance(plan_for(ds, 10, rng), StreamPlan)
    assert isinstance(plan_for(sparsekit.data.ArrayDataset(folder[1]), 10, rng), BatchPlan)


def test_each_epoch_reads_every_row_once_in_a_seeded_order(folder):
    path, expected = folder
    ds = load_dataset(str(path))
    ds.window_segments = 3  # several windows, batches spanning two of them
    plan = StreamPlan(ds, 64, np.random.default_rng(5))
    first = _epoch(plan)
    second = _epoch(plan)
    for epoch in (first, second):
        rows = np.concatenate(epoch)
        assert len(rows) == len(expected)
        got = rows[np.lexsort(rows.T)]
        np.testing.assert_array_equal(got, expected[np.lexsort(expected.T)])
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    again = StreamPlan(ds, 64, np.random.default_rng(5))
    for a, b in zip(first, _epoch(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_windows_stay_inside_the_memory_budget(tmp_path):
    npy_folder(tmp_path / "big", sizes=(5000,) * 4, dim=64)
    ds = load_dataset(str(tmp_path / "big"), stream_memory=4)
    window_bytes = ds.window_segments * ds.segment_rows * ds.dim * 4
    assert window_bytes <= (4 << 20) // WINDOWS_IN_MEMORY
    assert 1 < len(ds.epoch_windows(0)) < len(ds.segments)
    with pytest.raises(ParameterError, match=r"--stream-memory 1 MiB is too small.*at least 2"):
        load_dataset(str(tmp_path / "big"), stream_memory=1)


def test_a_plan_restored_mid_epoch_gives_the_same_batches(folder):
    ds = load_dataset(str(folder[0]))
    ds.window_segments = 2
    plan = StreamPlan(ds, 50, np.random.default_rng(1))
    steps = plan.start_epoch()
    batches = [plan.batch(s, np.float32) for s in range(7)]
    state = plan.state_dict()
    rest = [plan.batch(s, np.float32) for s in range(7, steps)]
    assert state["next_step"] == 7 and len(batches) == 7
    other = StreamPlan(ds, 50, np.random.default_rng(99))
    other.load_state_dict(state)
    for s, expected in zip(range(7, steps), rest, strict=True):
        np.testing.assert_array_equal(other.batch(s, np.float32), expected)


def test_float16_shards_are_converted_per_batch(tmp_path):
    expected = npy_folder(tmp_path / "h", dtype=np.float16)
    plan = StreamPlan(load_dataset(str(tmp_path / "h")), 100, np.random.default_rng(0))
    batches = _epoch(plan, np.float32)
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    assert np.concatenate(batches).sum() == pytest.approx(expected.astype(np.float64).sum(), rel=1e-6)


def test_a_bad_row_met_by_the_reader_stops_training_naming_it(folder):
    path, expected = folder
    bad = expected[300:550].copy()
    bad[40, 0] = np.inf
    np.save(path / "shard_001.npy", bad)
    with pytest.raises(DataError, match=r"shard_001.npy: row 40 contains NaN or infinite"):
        sparsekit.train("topk", load_dataset(str(path)), hidden=16, k=2, epochs=1, batch_size=32)


def test_streamed_training_on_the_simulated_device_matches_numpy(folder):
    """The GPU path: batches from the stream are uploaded like any other (no transfer in a
    step), and training gives NumPy's weights to float32 rounding."""
    from sparsekit.backend.simulated import simulated_backend

    ds = load_dataset(str(folder[0]))
    common = dict(hidden=16, k=4, epochs=1, batch_size=64, seed=0, center=True)
    gpu = sparsekit.train("topk", ds, backend=simulated_backend(), **common)
    cpu = sparsekit.train("topk", ds, **common)
    for name, value in cpu.numpy_params().items():
        np.testing.assert_allclose(gpu.numpy_params()[name], value, rtol=1e-3, atol=1e-5)
