"""Processes that train one model together: the communicator seam of data-parallel training.

:class:`Communicator` is what the trainer, the step and the upkeep call when a batch-wide
quantity must be summed, gathered or broadcast across ranks; :class:`LocalCommunicator`
(one process, the default) does nothing and costs nothing; :class:`MPICommunicator` runs on
mpi4py, imported only when one is constructed. The NCCL communicator for CuPy arrays lives in
:mod:`sparsekit.backend.nccl` (the only floor that may know CuPy). This floor sits below the
backend and imports only the leaves (errors, files).
"""

from sparsekit.parallel.communicator import (
    Communicator,
    LocalCommunicator,
    MPICommunicator,
    abort_on_error,
    on_every_rank,
    same_on_every_rank,
    share_bounds,
)

__all__ = [
    "Communicator",
    "LocalCommunicator",
    "MPICommunicator",
    "abort_on_error",
    "on_every_rank",
    "same_on_every_rank",
    "share_bounds",
]
