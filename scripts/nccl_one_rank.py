"""gpu-check's data-parallel step: one MPI rank whose gradient sums go through NCCL.

A job of one rank (no ``mpiexec`` needed) trains topk for two epochs on the GPU and must give
the one-process model to 1e-10 (float64), with its sums taken by NCCL, not host copies.
``--simulated`` runs the same on the simulated device, where the sums are the simulated
NCCL's. Exit status 0 when both hold, or when mpi4py is missing (said, and skipped).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulated", action="store_true", help="the simulated device")
    args = parser.parse_args(argv)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        print("nccl_one_rank: mpi4py missing (pip install 'sparsekit[mpi]'): skipped")
        return 0
    from sparsekit.backend.simulated import simulated_backend
    from sparsekit.parallel import MPICommunicator
    from sparsekit.training.settings import resolve_config
    from sparsekit.training.trainer import Trainer, make_method

    data = np.random.default_rng(0).uniform(size=(2000, 64))

    def run(comm):
        method = make_method("topk", k=8, k_aux=16, dead_after=500)
        config = resolve_config(
            method, hidden=256, epochs=2, batch_size=250, gpu=True, dtype="float64"
        )
        backend = simulated_backend("float64") if args.simulated else None
        trainer = Trainer(method, data, config, comm=comm, backend=backend)
        return trainer, trainer.fit()

    trainer, ranked = run(MPICommunicator())
    through = trainer.parallel.comm.name
    _, alone = run(None)
    worst = max(
        float(np.abs(ranked.backend.to_numpy(ranked.params[k]) - alone.backend.to_numpy(v)).max())
        / float(np.abs(alone.backend.to_numpy(v)).max())
        for k, v in alone.params.items()
    )
    print(f"nccl_one_rank: sums through {through}: largest relative weight difference {worst:.1e}")
    expected = "simulated-nccl" if args.simulated else "nccl"
    if through != expected:
        print(f"nccl_one_rank: expected {expected}, got {through} (nvidia-nccl installed?)")
        return 1
    return 0 if worst < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
