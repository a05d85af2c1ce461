"""``mpiexec -n N python train_ranks.py OUT.npz CASES_JSON``: every rank trains each case
(``[name, method, settings]``) on the same small array with ``distributed=True``; rank 0
saves every case's weights (``NAME/PARAM``) and, where there is one, its method state.
A script, not a test: ``tests/parallel/test_data_parallel.py`` launches it."""

import json
import sys

import numpy as np

import sparsekit
from sparsekit.backend.simulated import simulated_backend
from sparsekit.parallel import MPICommunicator
from sparsekit.training.sharded import train_sharded


def problem(settings: dict):
    """The training data of a case (the test builds the same in one process): a streamed
    shard folder when the case names one, else a small array."""
    rows = settings.pop("rows", 300)
    folder = settings.pop("folder", None)
    stats_rows = settings.pop("stats_rows", 100_000)
    if folder is not None:
        from sparsekit.data import load_dataset

        return load_dataset(folder, split="train", stats_rows=stats_rows)
    return np.random.default_rng(7).uniform(size=(rows, 20))


def method_of(name: str):
    if name == "relu-l1":  # the plugin, by its class
        from sparsekit_relu_l1 import ReluL1

        return ReluL1
    return name


if __name__ == "__main__":
    out, cases = sys.argv[1], json.loads(sys.argv[2])
    comm = MPICommunicator()
    saved = {}
    for name, method, settings in cases:
        data = problem(settings)
        if settings.pop("simulated", False):  # the GPU path, on the simulated device
            settings["backend"] = simulated_backend(settings.pop("dtype"))
        if settings.pop("sharded", False):  # latents sharded across the ranks
            model = train_sharded(method_of(method), data, comm=comm, **settings)
        else:
            model = sparsekit.train(
                method_of(method), data, distributed=comm, check_replicas=True, **settings
            )
        for key, value in model.params.items():
            saved[f"{name}/{key}"] = model.backend.to_numpy(value)
        threshold = getattr(model.method, "threshold", None)
        if threshold is not None:
            saved[f"{name}/threshold"] = np.asarray(threshold)
    if comm.rank == 0:
        np.savez(out, **saved)
