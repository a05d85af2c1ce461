"""Data-parallel training: N processes train one model, exactly the one a process trains.

Every rank holds the whole model and the same random generators (the seed is shared), so
every rank draws the same permutation of the rows each epoch; of each global batch of B rows,
rank r reads only its contiguous share of b_r rows (:class:`~sparsekit.training.batches.
BatchPlan`). A method declares how its step reads the batch
(:attr:`~sparsekit.core.contract.BaseMethod.batch_reduction`):

* ``ROW_MEAN`` – each rank runs the ordinary step on its b_r rows, as if they were the
  batch; its loss and gradients, weighted by b_r/B, are summed over the ranks
  (:meth:`DataParallel.weighted_sum`). A mean over rows of per-row terms is exactly that
  weighted sum; a term that does not depend on the batch (a weight penalty) is computed
  identically by every rank and its weights b_r/B sum to one. Weight decay is folded into
  the optimizer after the sum; then every rank applies the same update to the same weights.
* ``COLUMN_MEANS`` – as ``ROW_MEAN``, and the step sums the code's column sums over the
  ranks before the penalty (KL's ρ̂; :class:`~sparsekit.core.step.BatchShare`).

An undeclared method, or a setting whose step reads the batch in a way not summed here (AuxK's
variance-normalised weight, resampling from the batch's worst rows, BatchTopK's batch-wide
selection), is refused with one line (:func:`refusal`): never trained as something else.

Upkeep that counts over the batch (which units fired: the dead-unit window) uses the global
counts; the epoch's metrics (loss, MSE, FVE, L0, dead units) are the global ones; the data
sample for data-dependent initialisation (b_dec's mean or geometric median) is drawn from the
shared seed, the same rows on every rank, so every rank starts from the same weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from sparsekit._version import __version__
from sparsekit.backend import Backend
from sparsekit.backend.nccl import device_communicator
from sparsekit.core.contract import BATCH_REDUCTIONS, BaseMethod, UpdateMethod
from sparsekit.core.declarations import Upkeep
from sparsekit.core.step import BatchShare
from sparsekit.errors import ParameterError
from sparsekit.parallel import Communicator, LocalCommunicator, on_every_rank, share_bounds
from sparsekit.training.metrics import VarianceAccumulator


def refusal(method: BaseMethod, upkeep: Upkeep) -> str | None:
    """Why ``method`` (with its settings) cannot train data-parallel exactly, or ``None``."""
    declared = method.batch_reduction
    if declared is None:
        reason = method.distributed_refusal
        return f"{method.name} cannot train with --distributed: " + (
            reason
            if reason
            else "it does not declare how its step reads the batch (batch_reduction; "
            "see docs/distributed.md)"
        )
    if declared not in BATCH_REDUCTIONS:
        return (
            f"{method.name} declares batch_reduction {declared!r}, which is none of "
            f"{', '.join(BATCH_REDUCTIONS)}"
        )
    if upkeep.resample_every:
        return (
            f"{method.name} cannot train with --distributed while resampling dead units (it "
            "draws from the batch's worst rows): leave --resample-every at 0"
        )
    return None


class DataParallel:
    """One trainer's view of the job: its communicator, its share, the sums over ranks."""

    def __init__(self, comm: Communicator, backend: Backend, *, check_replicas: bool = False):
        self.host = comm
        # One rank on the CPU: the sums are the identity (no copies through MPI).
        one = comm.size == 1 and not backend.is_gpu
        self.comm = LocalCommunicator() if one else device_communicator(comm, backend)
        self.backend = backend
        self.rank, self.size = comm.rank, comm.size
        #: Compare a checksum of the weights across ranks after every epoch (debug mode).
        self.check_replicas = check_replicas

    # -- the share --------------------------------------------------------------------------

    def share(self, rows: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's part of a global batch of ``rows`` rows."""
        return share_bounds(rows, self.rank, self.size)

    def batch_share(self, local_rows: int, total: int) -> BatchShare:
        return BatchShare(self.comm, local_rows, total)

    def check_batches(self, n: int, batch_size: int) -> None:
        """Refuse a batch that would leave a rank without rows (one line)."""
        last = n % batch_size or batch_size
        smallest = min(batch_size, n, last)
        if smallest < self.size:
            raise on_every_rank(
                ParameterError(
                    f"--distributed with {self.size} ranks: a batch of {smallest} rows (the last of"
                    f" each epoch of {n} rows at --batch-size {batch_size}) leaves a rank without "
                    "rows; pick a batch size or --subset so every batch has at least one row a rank"
                )
            )

    # -- sums over ranks --------------------------------------------------------------------

    def weighted_sum(self, value: Any, local_rows: int, total: int) -> Any:
        """Σ_r (b_r/B)·value_r: the global batch's row mean from each rank's own."""
        xp = self.backend.xp
        scaled = value * xp.asarray(local_rows / total, dtype=value.dtype)
        return self.comm.allreduce_sum(scaled)

    def weighted_sums(self, values: dict[str, Any], local_rows: int, total: int) -> dict[str, Any]:
        """:meth:`weighted_sum` of every array of ``values`` (one dtype) in one all-reduce:
        packed into one buffer, so a step pays one message latency, not one a parameter."""
        xp = self.backend.xp
        arrays = {n: xp.asarray(v, dtype=self.backend.dtype) for n, v in values.items()}
        flat = xp.concatenate([a.reshape(-1) for a in arrays.values()])
        summed = self.weighted_sum(flat, local_rows, total)
        out, at = {}, 0
        for name, array in arrays.items():
            shape = tuple(array.shape)
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = summed[at : at + size].reshape(shape)
            at += size
        return out

    def data_mean(self, dataset: Any, chunk: int = 1024) -> np.ndarray:
        """The mean sample of ``dataset`` (float64), each rank reading only its contiguous
        share of the rows: the ranks' sums are added (the same on every rank)."""
        start, stop = share_bounds(len(dataset), self.rank, self.size)
        total = np.zeros(dataset.dim, dtype=np.float64)
        for first in range(start, stop, chunk):
            rows = np.arange(first, min(first + chunk, stop))
            total += dataset.take(rows, np.float64).sum(axis=0)
        return self.host.allreduce_sum(total) / len(dataset)

    def reducer(self, local_rows: int, total: int) -> Any:
        """:meth:`weighted_sum` as a one-argument function (an UpdateMethod's ``reduce``)."""
        return lambda value: self.weighted_sum(value, local_rows, total)

    def sum(self, value: Any) -> Any:
        return self.comm.allreduce_sum(value)

    def merge_variance(self, acc: VarianceAccumulator) -> VarianceAccumulator:
        """The ranks' accumulators merged in rank order (Chan et al.), the same everywhere."""
        to_numpy = self.backend.to_numpy
        mine = (
            acc.n,
            None if acc.mean is None else to_numpy(acc.mean),
            None if acc.m2 is None else to_numpy(acc.m2),
        )
        merged = VarianceAccumulator(np)
        for n, mean, m2 in self.host.allgather(mine):
            if not n:
                continue
            if merged.n == 0:
                merged.n, merged.mean, merged.m2 = n, mean, m2
                continue
            total = merged.n + n
            delta = mean - merged.mean
            merged.mean = merged.mean + delta * (n / total)
            merged.m2 = merged.m2 + m2 + delta * delta * (merged.n * n / total)
            merged.n = total
        out = VarianceAccumulator(self.backend.xp)
        out.n = merged.n
        out.mean = self.backend.xp.asarray(merged.mean, dtype=np.float64)
        out.m2 = self.backend.xp.asarray(merged.m2, dtype=np.float64)
        return out

    # -- agreement ----------------------------------------------------------------------------

    def agree(self, facts: dict[str, Any]) -> None:
        """Refuse to start when a rank's ``facts`` (data checksum, settings, version...) differ
        from rank 0's: every rank raises the same one line, naming the rank and the fact."""
        mine = {k: _digest(v) for k, v in {**facts, "sparsekit version": __version__}.items()}
        everyone = self.host.allgather(mine)
        for rank, theirs in enumerate(everyone[1:], start=1):
            for key, value in everyone[0].items():
                if theirs.get(key) != value:
                    raise on_every_rank(
                        ParameterError(
                            f"--distributed: rank {rank}'s {key} differs from rank 0's; every rank "
                            "must run the same sparsekit on the same data with the same settings"
                        )
                    )

    def check_weights(self, params: dict[str, Any], epoch: int) -> None:
        """Debug mode: every rank's weights must be the same bits (one line if not)."""
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(params):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.backend.to_numpy(params[name])).tobytes())
        sums = self.host.allgather(h.hexdigest())
        differing = [r for r, s in enumerate(sums) if s != sums[0]]
        if differing:
            raise on_every_rank(
                ParameterError(
                    f"--distributed: after epoch {epoch} the weights of rank {differing[0]} differ "
                    "from rank 0's (replica checksum)"
                )
            )

    def is_update_method(self, method: BaseMethod) -> bool:
        return isinstance(method, UpdateMethod)


def _digest(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.blake2b(value, digest_size=16).hexdigest()
    if isinstance(value, np.ndarray):
        return hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()
    return json.dumps(value, sort_keys=True, default=str)
