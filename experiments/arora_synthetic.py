"""Arora, Ge, Ma & Moitra (2015) neural sparse coding on synthetic data: recovery vs samples.

Data: ``make_sparse_coding`` (D×H dictionary of unit Gaussian columns, codes with k non-zeros
of ±1, no noise). The analysis needs a start already close to the truth, so every run starts
from the true atoms plus Gaussian noise (``--init-noise`` per entry, renormalised), decodes
with τ = 0.5 (C = 1) and steps with η = 1.0, for the same number of minibatch updates
whatever the number of samples (``--steps``), i.e. ``ceil(steps·batch/n)`` epochs. Reports
max and mean matched distance to the truth (unit atoms; 0 = same direction, √2 = orthogonal)
before and after, and the fraction of atoms within 0.1.

    python -m experiments.arora_synthetic                  # D=64, H=100, k=3 and k=10
    python -m experiments.arora_synthetic --k 3 --samples 1000 10000
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from experiments.common import Clock, machine, write_result
from sparsekit.training.settings import resolve_config
from sparsekit.data import make_sparse_coding, recovery_summary
from sparsekit.evaluation.measures import coherence
from sparsekit.training.trainer import Trainer, make_method


def run_one(n: int, dim: int, atoms: int, k: int, args: argparse.Namespace, seed: int) -> dict:
    problem = make_sparse_coding(n=n, dim=dim, atoms=atoms, k=k, seed=seed)
    truth = problem.dictionary
    rng = np.random.default_rng([seed, 1])
    if args.init_noise is None:  # a random start
        start = rng.standard_normal(truth.T.shape)
    else:
        start = truth.T + args.init_noise * rng.standard_normal(truth.T.shape)
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    before = recovery_summary(truth, start.T)
    epochs = max(1, math.ceil(args.steps * args.batch_size / n))
    method = make_method("arora", tau=args.tau)
    config = resolve_config(
        method, hidden=atoms, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
        dtype="float64",
    )  # fmt: skip
    trainer = Trainer(method, problem.dataset, config)
    trainer.params["W_enc"] = trainer.backend.asarray(start)
    clock = Clock()
    model = trainer.fit()
    seconds = clock.lap("train")
    after = recovery_summary(truth, model.decoder_weights.T)
    return {
        "n": n,
        "dim": dim,
        "atoms": atoms,
        "k": k,
        "seed": seed,
        "epochs": epochs,
        "steps": epochs * math.ceil(n / args.batch_size),
        "truth_coherence": coherence(truth.T),
        "before": before,
        "after": after,
        "final_fve": trainer.history[-1]["fve"],
        "final_mean_active": trainer.history[-1]["mean_active"],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--atoms", type=int, default=100)
    ap.add_argument("--k", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--samples", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=400, help="minibatch updates per run")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--init-noise", type=float, default=0.045, help="per entry; <0: random start")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.init_noise is not None and args.init_noise < 0:
        args.init_noise = None
    clock = Clock()
    rows = []
    print("  k        n  seed  epochs  before max/mean  after max/mean  recovered", flush=True)
    for k in args.k:
        for n in args.samples:
            for seed in args.seeds:
                r = run_one(n, args.dim, args.atoms, k, args, seed)
                rows.append(r)
                b, a = r["before"], r["after"]
                print(
                    f"{k:>3} {n:>8} {seed:>5} {r['epochs']:>7}  {b['max']:.3f}/{b['mean']:.3f}"
                    f"     {a['max']:.3f}/{a['mean']:.3f}     {a['recovered']:.2f}",
                    flush=True,
                )
    clock.lap("total")
    name = "arora-synthetic" if args.init_noise is not None else "arora-synthetic-random-init"
    result = {
        "experiment": name,
        "command": "python -m experiments.arora_synthetic "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {
            k: getattr(args, k)
            for k in ("dim", "atoms", "steps", "batch_size", "lr", "tau", "init_noise")
        },
        "rows": rows,
        "seconds": clock.times,
        "machine": machine(),
    }
    path = write_result(name, result, args.out)
    print(f"written {path}")
    return result


if __name__ == "__main__":
    main()
