"""What each built-in learns from natural-image patches (Olshausen & Field 1996).

Data: ``--dataset patches`` (whitened, contrast-normalised 12×12 patches of the photographs
bundled with scikit-image; ``range=unit`` for the sigmoid-output methods). Every method
trains the same number of units; the script draws each one's decoder atoms and measures
them with :func:`sparsekit.data.patches.orientation_selectivity` and
:func:`~sparsekit.data.patches.localisation`, beside two references that are not sparse
codes: the random initial filters and the leading principal components of the patches.

    python -m experiments.patches_filters                     # writes docs/results/patches-*.png
    python -m experiments.patches_filters --n 5000 --epochs 2 --png-dir /tmp/p   # quick check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from experiments.common import Clock, machine, write_result
from sparsekit.data import load_dataset
from sparsekit.data.patches import localisation, orientation_selectivity
from sparsekit.methods.registry import load_registry
from sparsekit.evaluation.figures import save_filter_grid
from sparsekit.training.trainer import train

#: (method, data range, method parameters, learning rate): linear-output methods read the
#: zero-mean patches, sigmoid-output ones the [0.1, 0.9] version (CS294A's convention).
SETTINGS = (
    ("ksparse", "none", {"k": 5}, 3e-3),
    ("relu-l1", "none", {"l1": 1.0}, 3e-3),
    ("arora", "none", {}, None),
    ("kl", "unit", {"rho": 0.01, "beta": 3.0, "weight_decay": 1e-4}, 3e-3),
    ("l2", "unit", {}, 3e-3),
    ("plain", "unit", {}, 3e-3),
)
#: A filter counts as a localised oriented edge when both measures pass these.
OSI_EDGE, LOC_EDGE = 0.5, 0.25


def measures(filters: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    osi = orientation_selectivity(filters, shape)
    loc = localisation(filters, shape)
    return {
        "osi_median": float(np.median(osi)),
        "loc_median": float(np.median(loc)),
        "edge_fraction": float(np.mean((osi > OSI_EDGE) & (loc > LOC_EDGE))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--png-dir", default="docs/results")
    parser.add_argument("--out", default=None, help="result JSON (default experiments/results)")
    args = parser.parse_args(argv)

    shape = (args.size, args.size)
    base = f"patches:size={args.size},n={args.n},seed={args.seed}"
    installed = {info.name for info in load_registry()}
    rows: dict[str, dict] = {}
    png_dir = Path(args.png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)

    plain = load_dataset(base).to_array(np.float64)
    rng = np.random.default_rng(args.seed)
    r = np.sqrt(6.0) / np.sqrt(args.hidden + plain.shape[1] + 1)
    rows["random (initial filters)"] = measures(
        rng.uniform(-r, r, (args.hidden, plain.shape[1])), shape
    )
    _, _, vt = np.linalg.svd(plain - plain.mean(axis=0), full_matrices=False)
    rows["PCA (leading components)"] = measures(vt[: args.hidden], shape)
    save_filter_grid(png_dir / "patches-pca.png", vt[: args.hidden], shape, scale=2)
    print("references", rows, flush=True)

    for name, data_range, params, lr in SETTINGS:
        if args.methods and name not in args.methods:
            continue
        if name not in installed:
            print(f"{name}: not installed, skipped", flush=True)
            continue
        spec = base + (f",range={data_range}" if data_range != "none" else "")
        ds = load_dataset(spec)
        clock = Clock()
        model = train(name, ds, hidden=args.hidden, epochs=args.epochs, lr=lr, seed=args.seed,
                      **params)  # fmt: skip
        seconds = clock.lap("train")
        x = ds.to_array()[:5000]
        codes = model.encode(x)
        recon = model.decode(codes)
        atoms = model.decoder_weights
        row = {
            "data": spec,
            "params": params,
            "lr": lr,
            **measures(atoms, shape),
            "mse": float(np.mean((recon - x) ** 2)),
            "mean_active": float((codes != 0).sum(axis=1).mean()),
            "dead_units": int(((codes != 0).sum(axis=0) == 0).sum()),
            "seconds": seconds,
        }
        rows[name] = row
        save_filter_grid(png_dir / f"patches-{name}.png", atoms, shape, scale=2)
        print(name, row, flush=True)

    result = {"settings": vars(args), "machine": machine(), "rows": rows}
    print(write_result("patches-filters", result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
