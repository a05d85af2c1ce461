"""The communicator protocol and its two host implementations (one process; MPI).

Every operation is collective: every rank calls it, in the same order, with arrays of the same
shape and dtype. Sums are MPI's ``Allreduce`` (one implementation, one algorithm for a given
number of ranks and message size, so two runs with the same N give the same bits, and every
rank receives the same sum); gathers and broadcasts of small Python objects go through
mpi4py's pickled ``allgather`` / ``bcast``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sparsekit.errors import MissingDependencyError, SparsekitError
from sparsekit.files import one_line_reason

#: What ``pip install`` gives an MPI on a laptop (a cluster uses its own MPI under mpi4py).
INSTALL_HINT = "pip install 'sparsekit[mpi]'"


@runtime_checkable
class Communicator(Protocol):
    """The collective operations data-parallel training needs; ``rank`` in ``[0, size)``."""

    rank: int
    size: int
    #: Whether there is more than one rank (a :class:`LocalCommunicator` is not).
    distributed: bool

    def allreduce_sum(self, array: Any) -> Any:
        """The element-wise sum of ``array`` over every rank (a new array, same shape)."""
        ...

    def allgather(self, value: Any) -> list[Any]:
        """``[value of rank 0, value of rank 1, ...]`` on every rank (small objects)."""
        ...

    def broadcast(self, value: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``value`` on every rank."""
        ...

    def abort(self, code: int) -> None:
        """End every rank of the job now with exit status ``code``."""
        ...


class LocalCommunicator:
    """One process: every collective is the identity (and free)."""

    rank = 0
    size = 1
    distributed = False
    name = "local"

    def allreduce_sum(self, array: Any) -> Any:
        return array

    def allgather(self, value: Any) -> list[Any]:
        return [value]

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        return [value]

    def broadcast(self, value: Any, root: int = 0) -> Any:
        return value

    def abort(self, code: int) -> None:
        sys.exit(code)


class MPICommunicator:
    """The ranks of ``MPI.COMM_WORLD`` (or ``comm``), through mpi4py.

    mpi4py is imported here, not on import of sparsekit: without ``--distributed`` nothing
    loads it. It initialises MPI on import (a job started without ``mpiexec`` is a job of one).
    """

    name = "mpi"

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise MissingDependencyError(
                f"--distributed needs mpi4py and an MPI library: {INSTALL_HINT}"
            ) from None
        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self.distributed = self.size > 1
        #: Seconds spent inside collectives (the benchmark reads it).
        self.seconds = 0.0

    def allreduce_sum(self, array: Any) -> Any:
        send = np.ascontiguousarray(array).reshape(np.shape(array))  # (keeps a 0-d one 0-d)
        out = np.empty_like(send)
        start = time.perf_counter()
        self.comm.Allreduce(send, out, op=self._mpi.SUM)
        self.seconds += time.perf_counter() - start
        return out

    def allgather(self, value: Any) -> list[Any]:
        start = time.perf_counter()
        values = list(self.comm.allgather(value))
        self.seconds += time.perf_counter() - start
        return values

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        """Every rank's ``value`` on rank ``root`` (``None`` on the others)."""
        start = time.perf_counter()
        values = self.comm.gather(value, root=root)
        self.seconds += time.perf_counter() - start
        return None if values is None else list(values)

    def local_rank(self) -> int:
        """This rank's number among the ranks on its own machine (one GPU each)."""
        local = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
        try:
            return int(local.Get_rank())
        finally:
            local.Free()

    def broadcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.bcast(value, root=root)

    def abort(self, code: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # The launcher relays each rank's output through a pipe, and MPI_Abort tears the job
        # down at once: a line written just before could be lost (seen once in CI, the
        # error line of tests/parallel/test_faults.py). A moment lets the launcher relay it.
        time.sleep(ABORT_GRACE_SECONDS)
        self.comm.Abort(code)


#: Seconds a failing rank waits after flushing its output before MPI_Abort ends the job.
ABORT_GRACE_SECONDS = 0.2


def share_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``total`` items: the first
    ``total % size`` ranks take one item more (shares differ by at most one; one may be
    empty when ``total < size``)."""
    base, extra = divmod(total, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def on_every_rank(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised by every rank alike (a refusal at start, decided from facts
    every rank gathered): :func:`abort_on_error` then lets every rank exit with one line
    written by rank 0, instead of aborting the job."""
    exc.every_rank = True  # type: ignore[attr-defined]
    return exc


@contextmanager
def same_on_every_rank(comm: Communicator | None) -> Iterator[None]:
    """Code whose user errors depend only on what every rank was given alike (the command
    line, the settings: checked before any data is read): a :class:`SparsekitError` raised
    inside is marked :func:`on_every_rank` when ``comm`` is not ``None``."""
    try:
        yield
    except SparsekitError as exc:
        if comm is not None:
            on_every_rank(exc)
        raise


@contextmanager
def abort_on_error(
    comm: Communicator, write: Callable[[str], Any] = lambda line: print(line, file=sys.stderr)
) -> Iterator[None]:
    """End the whole job when this rank raises: one line naming the rank and the cause, then
    ``comm.abort`` (MPI_Abort: the other ranks, waiting in a collective, are ended too).

    An error marked :func:`on_every_rank` is raised by every rank alike: rank 0 writes its
    line and every rank exits with its code. ``SystemExit(0)`` passes.
    """
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        if isinstance(exc, KeyboardInterrupt):
            line, code = "interrupted", 130
        else:
            line = one_line_reason(exc)
            code = exc.exit_code if isinstance(exc, SparsekitError) else 1
        if getattr(exc, "every_rank", False):
            if comm.rank == 0:
                write(f"sparsekit: error: {line}")
            raise SystemExit(code) from None
        write(f"sparsekit: error: rank {comm.rank} of {comm.size}: {line}")
        comm.abort(code)
        raise
