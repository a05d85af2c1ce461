"""Collectives on the backend's own arrays: NCCL for CuPy (one rank per GPU), else host copies.

Data-parallel training sums gradients across ranks. On the CPU the MPI communicator of
:mod:`sparsekit.parallel` works on the NumPy arrays directly. On a GPU the sums run in NCCL
(``cupy.cuda.nccl``) on the device, the communicator's unique id broadcast over MPI (the
ChainerMN pattern); MPI stays the launcher, the rendezvous and the channel for small Python
objects. Where NCCL is absent (no ``nvidia-nccl-cu12``/``-cu13`` package, no system NCCL) or
the device is the simulated one, each sum copies to the host, goes through MPI and comes back
(:class:`HostStagedCommunicator`), and the log says so once.

Status: the NCCL path has not been run on a GPU in this repository's tests (no GPU in CI);
the host-staged path runs in the tests with the simulated device.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sparsekit.backend import Backend
from sparsekit.backend.simulated import SimulatedBackend, SimulatedCollectives
from sparsekit.parallel import Communicator

log = logging.getLogger("sparsekit")


class HostStagedCommunicator:
    """``comm`` (a host communicator) for device arrays: each sum copied to the host and back."""

    def __init__(self, comm: Communicator, backend: Backend) -> None:
        self.comm, self.backend = comm, backend
        self.rank, self.size, self.distributed = comm.rank, comm.size, comm.distributed
        self.name = f"{getattr(comm, 'name', 'host')}+host-copies"

    def allreduce_sum(self, array: Any) -> Any:
        host = self.backend.xp.asnumpy(array)  # an explicit copy to the host
        return self.backend.xp.asarray(self.comm.allreduce_sum(host))

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def broadcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.broadcast(value, root)

    def abort(self, code: int) -> None:
        self.comm.abort(code)


class NCCLCommunicator:
    """Sums of CuPy arrays in NCCL, one rank per GPU; other collectives go through ``comm``.

    The GPU is chosen from the rank's place on its machine (``comm.local_rank()`` modulo the
    visible devices); rank 0 creates the NCCL unique id and ``comm`` broadcasts it.
    """

    def __init__(self, comm: Any, backend: Backend) -> None:
        from cupy.cuda import nccl  # ImportError / AttributeError: no NCCL in this CuPy

        cupy = backend.xp
        devices = cupy.cuda.runtime.getDeviceCount()
        local = comm.local_rank() if hasattr(comm, "local_rank") else comm.rank
        cupy.cuda.Device(local % devices).use()
        uid = comm.broadcast(nccl.get_unique_id() if comm.rank == 0 else None)
        self._nccl, self._cupy = nccl, cupy
        self.nccl = nccl.NcclCommunicator(comm.size, uid, comm.rank)
        self.comm, self.backend = comm, backend
        self.rank, self.size, self.distributed = comm.rank, comm.size, comm.distributed
        self.name = "nccl"
        self._types = {
            np.dtype(np.float32): nccl.NCCL_FLOAT32,
            np.dtype(np.float64): nccl.NCCL_FLOAT64,
            np.dtype(np.int32): nccl.NCCL_INT32,
            np.dtype(np.int64): nccl.NCCL_INT64,
        }

    def allreduce_sum(self, array: Any) -> Any:
        cupy = self._cupy
        send = cupy.ascontiguousarray(array)
        if send.dtype == np.bool_:
            send = send.astype(np.int32)
        out = cupy.empty_like(send)
        stream = cupy.cuda.get_current_stream()
        self.nccl.allReduce(
            send.data.ptr,
            out.data.ptr,
            send.size,
            self._types[send.dtype],
            self._nccl.NCCL_SUM,
            stream.ptr,
        )
        return out

    def allgather(self, value: Any) -> list[Any]:
        return self.comm.allgather(value)

    def broadcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.broadcast(value, root)

    def abort(self, code: int) -> None:
        self.comm.abort(code)


def device_communicator(comm: Communicator, backend: Backend) -> Communicator:
    """``comm`` for ``backend``'s arrays: itself on the CPU, NCCL on CuPy where it can,
    else host copies (said once in the log); on the simulated device, its simulated NCCL."""
    if not backend.is_gpu:
        return comm
    if isinstance(backend, SimulatedBackend):  # CI's stand-in for a GPU: NCCL's part, simulated
        return SimulatedCollectives(comm)
    if backend.name == "cupy":
        try:
            return NCCLCommunicator(comm, backend)
        except (ImportError, AttributeError, RuntimeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = f"the {backend.name} device has no NCCL"
    if comm.rank == 0:
        log.warning("sparsekit: no NCCL (%s): gradients are summed through host copies", reason)
    return HostStagedCommunicator(comm, backend)
