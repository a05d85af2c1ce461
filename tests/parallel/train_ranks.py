"""Run by ``mpiexec -n N python train_ranks.py OUT.npz METHOD JSON_SETTINGS``: every rank trains
the same small problem with ``distributed=True``; rank 0 saves the weights and the metrics.
(A script, not a test: tests/parallel/test_data_parallel.py launches it.)"""

import json
import sys

import numpy as np

import sparsekit

out, method, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
data = np.random.default_rng(7).uniform(size=(settings.pop("rows", 300), 20))
if method == "relu-l1":  # the plugin, by its class
    from sparsekit_relu_l1 import ReluL1

    method = ReluL1
check = settings.pop("check_replicas", True)
model = sparsekit.train(method, data, distributed=True, check_replicas=check, **settings)
from mpi4py import MPI  # noqa: E402  (already initialised by sparsekit)

if MPI.COMM_WORLD.Get_rank() == 0:
    arrays = {k: np.asarray(v) for k, v in model.params.items()}
    np.savez(out, **arrays)
