"""Data-parallel training, 1 against 2 ranks, and the cost model's prediction for 8 and 64.

    OMP_NUM_THREADS=1 python bench/distributed_speed.py [--rows 6000] [--wide]

For each shape it launches ``mpiexec -n 1`` (one process, no collectives), ``mpiexec -n 2``
data parallel and ``mpiexec -n 2`` with the latents sharded (in alternation, ``--repeats`` times; one BLAS thread a rank),
each training one epoch on the same global batches, and prints, from rank 0: samples per
second of the whole job, the seconds spent inside MPI's collectives (sums and gathers:
communication plus the time a rank waits for the slower one) and the bytes the model says a
rank sends. Shapes:

* ``ksparse`` on MNIST (784 → 1,000, k 25, batch 128; ``SPARSEKIT_TEST_DATA`` or the cache);
* ``topk`` 256 → 4,096 (k 32, batch 1,024) on uniform random data;
* with ``--wide``, ``topk`` 768 → 16,384 (k 32, batch 1,024).

Then the cost model of ``docs/distributed.md`` for N = 8 and 64 ranks on a 100 Gb/s network
(12.5 GB/s, 5 µs a message), from the 1-rank step time measured here: data parallel
(compute / N + ring all-reduce of the gradients, 2·(N−1)/N·4·P bytes, P the parameters) and,
for comparison, latent sharding (the B·D partial reconstructions all-reduced, plus the N·B·k
candidates gathered; not implemented).

The machine of the measurement may be shared with other work: compare the two columns of one
run, not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
NETWORK = 12.5e9  # bytes/s: 100 Gb/s
LATENCY = 5e-6  # s a message

SHAPES = {
    "ksparse-mnist": {"method": "ksparse", "dim": 784, "hidden": 1000, "k": 25, "batch": 128},
    "topk-256x4096": {"method": "topk", "dim": 256, "hidden": 4096, "k": 32, "batch": 1024},
    "topk-768x16384": {"method": "topk", "dim": 768, "hidden": 16384, "k": 32, "batch": 1024},
}


def worker(shape: str, rows: int, strategy: str) -> None:
    """One rank: train one epoch, then rank 0 prints its numbers as JSON."""
    from sparsekit.parallel import MPICommunicator
    from sparsekit.training.settings import resolve_config
    from sparsekit.training.sharded import fit_sharded
    from sparsekit.training.trainer import Trainer, make_method

    spec = SHAPES[shape]
    comm = MPICommunicator()
    if spec["method"] == "ksparse":
        from sparsekit.data import load_dataset

        data_dir = os.environ.get("SPARSEKIT_TEST_DATA")
        data = load_dataset("mnist", data_dir, split="train", subset=rows)
        settings = {"k": spec["k"], "k_start": spec["k"]}
    else:
        data = np.random.default_rng(0).uniform(size=(rows, spec["dim"])).astype(np.float32)
        settings = {"k": spec["k"], "aux_coef": 0.0}  # (sharding has no AuxK)
    method = make_method(spec["method"], **settings)
    config = resolve_config(method, hidden=spec["hidden"], batch_size=spec["batch"], epochs=1)
    trainer = Trainer(method, data, config, comm=comm if strategy == "data" else None)
    setup = comm.seconds  # the start's agreement: not a step's
    if strategy == "sharded":
        fit_sharded(trainer, comm)
    else:
        trainer.fit()
    # The epoch's steps alone (not the start, not the epoch's metrics such as the coherence,
    # a 2·H²·D product every rank computes).
    seconds = trainer.history[-1]["seconds"]
    if comm.rank == 0:
        print(json.dumps({"wall": seconds, "comm": comm.seconds - setup, "rows": rows}))


def launch(ranks: int, shape: str, rows: int, strategy: str = "data") -> dict:
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [mpiexec, "-n", str(ranks), sys.executable, str(HERE), "--worker", shape,
         "--rows", str(rows), "--strategy", strategy],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def sent_bytes(spec: dict, ranks: int) -> tuple[float, float]:
    """Bytes a rank sends a step (ring all-reduce, gather): data parallel, latent sharding."""
    d, h, b, k = spec["dim"], spec["hidden"], spec["batch"], spec["k"]
    tied = spec["method"] == "ksparse"
    params = (1 if tied else 2) * d * h + h + d
    ring = 2 * (ranks - 1) / ranks
    data_parallel = ring * 4 * params
    sharded = ring * 4 * b * d + (ranks - 1) * b * (k / ranks + 1) * 12  # values + indices
    return data_parallel, sharded


def predict(spec: dict, step_seconds: float, ranks: int) -> tuple[float, float]:
    """Samples/s of data parallel and of latent sharding on ``ranks`` ranks (the model)."""
    data_parallel, sharded = sent_bytes(spec, ranks)
    compute = step_seconds / ranks
    dp = compute + data_parallel / NETWORK + 2 * (ranks - 1) * LATENCY * 4
    sh = compute + sharded / NETWORK + 2 * (ranks - 1) * LATENCY * 2
    return spec["batch"] / dp, spec["batch"] / sh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="data", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--wide", action="store_true", help="also topk 768 -> 16,384")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.strategy)
        return
    shapes = [s for s in SHAPES if args.wide or s != "topk-768x16384"]
    print(f"rows {args.rows}, one epoch's steps, one BLAS thread a rank; {os.cpu_count()} CPUs")
    print(f"{'shape':16} {'ranks':>5} {'strategy':9} {'samples/s':>10} {'comm s':>7} "
          f"{'steps s':>7} {'MB sent a step (model)':>22}")  # fmt: skip
    runs_of = {(1, "one"): "one", (2, "data"): "data", (2, "sharded"): "sharded"}
    for shape in shapes:
        spec = SHAPES[shape]
        results: dict[tuple[int, str], list[dict]] = {key: [] for key in runs_of}
        for _ in range(args.repeats):
            for ranks, strategy in runs_of:
                results[ranks, strategy].append(launch(ranks, shape, args.rows, strategy))
        for (ranks, strategy), runs in results.items():
            best = min(runs, key=lambda r: r["wall"])
            rate = best["rows"] / best["wall"]
            sent = sent_bytes(spec, ranks)[strategy == "sharded"] / 1e6
            print(
                f"{shape:16} {ranks:5d} {runs_of[ranks, strategy]:9} {rate:10.0f} "
                f"{best['comm']:7.2f} {best['wall']:7.2f} {sent:22.2f}"
            )
        one = min(results[1, "one"], key=lambda r: r["wall"])
        step = one["wall"] / (one["rows"] / spec["batch"])
        for ranks in (8, 64):
            dp, sh = predict(spec, step, ranks)
            print(
                f"{shape:16} {ranks:5d} predicted on 100 Gb/s: data parallel {dp:9.0f}/s, "
                f"latent sharding {sh:9.0f}/s"
            )


if __name__ == "__main__":
    main()
