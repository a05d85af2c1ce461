"""Arora's two code products by the code's nonzeros against BLAS's dense products.

    .venv/bin/python bench/nonzero_products.py      # -> bench/results/nonzero-products.json

X W (256×1000 · 1000×784) and sgn(X)ᵀ R (1000×256 · 256×784) at the benchmark's shapes, for
codes of several densities (random supports, N(0, 1) values; Arora's code is about 1.7%
nonzero from its first epoch on, ``bench/arora_products.py``): the fused kernels of
``sparsekit.backend.sparse_code`` (finding the nonzeros included) against the same products
as ``sparsekit.backend.threads.matmul`` computes them in the trainer, on one and two
threads, wall-clock medians. Above ``NONZERO_DENSITY`` the kernels hand the product to BLAS,
so the last rows show the threshold's cost (one scan of X).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from sae_compare import cpu_model  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/nonzero-products.json")
    args = parser.parse_args()

    from sparsekit.backend import sparse_code
    from sparsekit.backend.process import own_threads
    from sparsekit.backend.threads import matmul

    b, h, d = 256, 1000, 784
    rng = np.random.default_rng(0)
    w = rng.standard_normal((h, d), dtype=np.float32)
    r = rng.standard_normal((b, d), dtype=np.float32)

    def median_us(fn) -> float:
        fn()
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6

    rows = []
    for threads in (1, 2):
        os.environ["SPARSEKIT_NUM_THREADS"] = str(threads)
        for density in (0.005, 0.017, 0.03, 0.045, 0.06, 0.1):
            x = rng.standard_normal((b, h), dtype=np.float32)
            x[rng.random(x.shape) >= density] = 0
            with own_threads():  # as in the trainer: BLAS on one thread, sparsekit's split
                dense = median_us(lambda: (matmul(x, w), matmul(x.T, r)))  # noqa: B023
                nonzero = median_us(
                    lambda: (  # noqa: B023
                        sparse_code.nonzero_times(np, x, w),  # noqa: B023
                        sparse_code.nonzero_transpose_times(np, x, r),  # noqa: B023
                    )
                )
            row = {
                "threads": threads,
                "density": round(float((x != 0).mean()), 4),
                "dense_us": round(dense, 1),
                "nonzero_us": round(nonzero, 1),
                "ratio": round(nonzero / dense, 3),
            }
            rows.append(row)
            print(row, flush=True)
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "threshold": sparse_code.NONZERO_DENSITY,
        "shapes": {"B": b, "H": h, "D": d},
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
