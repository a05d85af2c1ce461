"""Check that the peers in bench_train.py train the same models: the same losses, step by step.

    .venv/bin/python bench/peers_agree.py                     # torch eager vs jax, 20 steps
    .venv/bin/python bench/peers_agree.py --compile           # and torch.compile (slow start)

Every method starts from the same initial parameters (sparsekit's ``init_params``) and sees
the same minibatches of MNIST; the losses of PyTorch eager, ``torch.compile`` and JAX are
printed with their largest relative difference from PyTorch eager. float32 and different
summation orders mean they drift apart slowly; a different model would differ at step 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

METHODS = ("plain", "l2", "kl", "arora", "ksparse")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=BENCH.parents[1] / "shared" / "data")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--compile", action="store_true", help="also torch.compile")
    args = p.parse_args()

    import torch
    from jax_models import JaxModel
    from torch_models import make_model

    from sparsekit.data import load_mnist
    from sparsekit.methods.registry import load_registry
    from sparsekit.training.settings import resolve_config

    data = load_mnist(args.data, subset=256 * args.steps)
    pixels = np.ascontiguousarray(np.asarray(data._data).reshape(len(data), -1))
    scale = float(data._scale)
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.permutation(len(data))[:256]) for _ in range(args.steps)]
    worst = 0.0
    for name in METHODS:
        method = load_registry().create(name, **({"k_start": 25} if name == "ksparse" else {}))
        cfg = resolve_config(
            method, hidden=1000, batch_size=256, epochs=1, dtype="float32", seed=0,
            optimizer=None if method.own_update else "adam",
        )  # fmt: skip
        init = method.init_params(np.random.default_rng(0), data.dim, 1000, cfg.tied, None)
        settings = {**method.get_params(), "lr": cfg.lr}
        images = torch.from_numpy(pixels)
        runs = {"torch": make_model(name, init, "cpu", settings)}
        if args.compile:
            compiled = make_model(name, init, "cpu", settings)
            attr = "step" if name == "arora" else "loss"
            setattr(compiled, attr, torch.compile(getattr(compiled, attr), dynamic=False))
            runs["compile"] = compiled
        losses = {key: [] for key in [*runs, "jax"]}
        jax_model = JaxModel(name, init, pixels, scale, settings)
        for rows in batches:
            x = images[torch.from_numpy(rows)].to(torch.float32) * scale
            for key, model in runs.items():
                losses[key].append(float(model.step(x)))
            losses["jax"].append(float(jax_model.step(rows)))
        ref = np.array(losses["torch"])
        line = [f"{name:<8} torch {ref[0]:.5f} -> {ref[-1]:.5f}"]
        for key in losses:
            if key != "torch":
                diff = float(np.max(np.abs(np.array(losses[key]) - ref) / np.abs(ref)))
                first = abs(losses[key][0] - ref[0]) / abs(ref[0])
                worst = max(worst, diff)
                line.append(f"{key}: step-1 rel. diff {first:.1e}, largest {diff:.1e}")
        print("; ".join(line))
    print(f"largest relative loss difference from PyTorch eager: {worst:.1e}")
    return 0 if worst < 1e-2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
