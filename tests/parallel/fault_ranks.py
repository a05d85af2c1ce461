"""``mpiexec -n 2 python fault_ranks.py MODE``: a small data-parallel training in which rank 1
misbehaves as MODE says (``raise``: raises at its third step; ``kill``: kills itself with
SIGKILL there; ``data``: trains on other data; ``settings``: with another hidden size).
A script, not a test: ``tests/parallel/test_faults.py`` launches it."""

import os
import signal
import sys
import time

import numpy as np

import sparsekit
from sparsekit.parallel import MPICommunicator, abort_on_error
from sparsekit.training.trainer import Callback


class Misbehave(Callback):
    def __init__(self, mode: str, rank: int) -> None:
        self.mode, self.rank = mode, rank

    def on_step_end(self, trainer, step, steps):
        if self.rank == 1 and step == 3:
            if self.mode == "raise":
                raise RuntimeError("boom at step 3")
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)  # the other rank is well inside a later collective meanwhile


if __name__ == "__main__":
    mode = sys.argv[1]
    comm = MPICommunicator()
    data = np.random.default_rng(7).uniform(size=(400, 20))
    settings = {"hidden": 8, "epochs": 50, "batch_size": 40}
    if comm.rank == 1 and mode == "data":
        data = data.copy()
        data[5, 3] += 0.5
    if comm.rank == 1 and mode == "settings":
        settings["hidden"] = 9
    with abort_on_error(comm):
        sparsekit.train(
            "plain", data, distributed=comm, callbacks=[Misbehave(mode, comm.rank)], **settings
        )
