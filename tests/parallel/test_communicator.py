"""The communicator seam: shares, the one-process communicator, one-line failures."""

from __future__ import annotations

import numpy as np
import pytest

from sparsekit.data.dataset import ArrayDataset
from sparsekit.errors import ParameterError
from sparsekit.parallel import LocalCommunicator, abort_on_error, on_every_rank, share_bounds
from sparsekit.training.batches import BatchPlan


@pytest.mark.parametrize(("total", "size"), [(10, 3), (45, 2), (2, 4), (0, 2), (7, 7)])
def test_shares_are_contiguous_cover_everything_and_differ_by_at_most_one(total, size):
    bounds = [share_bounds(total, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_each_rank_reads_its_share_of_the_same_global_batch():
    data = np.arange(50.0).reshape(25, 2)
    plans = [
        BatchPlan(ArrayDataset(data), 10, np.random.default_rng(4), share=(rank, 2))
        for rank in range(2)
    ]
    whole = BatchPlan(ArrayDataset(data), 10, np.random.default_rng(4))
    assert {p.start_epoch() for p in plans} == {whole.start_epoch()} == {3}
    for step in range(3):
        parts = [p.batch(step, np.float64) for p in plans]
        assert np.array_equal(np.concatenate(parts), whole.batch(step, np.float64))
        assert len(parts[0]) - len(parts[1]) in (0, 1)


def test_the_local_communicator_is_the_identity():
    comm = LocalCommunicator()
    x = np.arange(3.0)
    assert comm.allreduce_sum(x) is x
    assert comm.allgather("a") == ["a"] and comm.broadcast(5) == 5
    assert (comm.rank, comm.size, comm.distributed) == (0, 1, False)


class Recorder(LocalCommunicator):
    def __init__(self, rank: int = 0) -> None:
        self.rank, self.aborted = rank, None

    def abort(self, code: int) -> None:
        self.aborted = code


def test_a_rank_that_raises_writes_one_line_naming_it_and_aborts():
    lines: list[str] = []
    comm = Recorder(rank=0)
    with pytest.raises(RuntimeError), abort_on_error(comm, write=lines.append):
        raise RuntimeError("boom\nsecond line")
    assert lines == ["sparsekit: error: rank 0 of 1: RuntimeError: boom"]
    assert comm.aborted == 1


@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_of_every_rank_is_written_once_and_exits_without_abort(rank):
    lines: list[str] = []
    comm = Recorder(rank=rank)
    with pytest.raises(SystemExit) as exit_, abort_on_error(comm, write=lines.append):
        raise on_every_rank(ParameterError("bad setting"))
    assert exit_.value.code == ParameterError.exit_code
    assert lines == (["sparsekit: error: bad setting"] if rank == 0 else [])
    assert comm.aborted is None
