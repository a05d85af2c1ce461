"""Why Adam costs more inside a training step than alone: a probe.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/adam_after_product.py

Inside a step of an untied autoencoder (hidden 1000, batch 256, MNIST-sized inputs) the fused
Adam update of each 1000×784 weight matrix takes about 1.6× as long as the same update
timed alone. This probe repeats a cut-down step, the two weight-gradient products then
Adam on both matrices, and prints the microseconds per matrix update and each case's ratio
to the first, all measured in one run:

* ``gradients only``: the two gradient products, then the two updates;
* ``+ forward products``: first also X W_encᵀ and A W_dec, which read the weights (as every
  step does);
* ``+ forward products on copies``: the same products on copies of the weights;
* ``+ 16 MiB of writes``: the gradient products plus 16 MiB written elsewhere.

On the machine of ``docs/performance.md`` the second case is about 1.6× the first, the other
two are within 1.2× of it: the update is slowed by the weights having just been read by the
multi-threaded products, not by cache capacity.
"""

from __future__ import annotations

import argparse
import time

# isort: off
# sparsekit first: it sets OpenBLAS's thread timeout, read when NumPy loads OpenBLAS
from sparsekit.backend import fused, process, threads
from sparsekit.training.optim import _adam_loop
import numpy as np

# isort: on


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if not fused.enabled():
        raise SystemExit("the fused loops are off (Numba missing or SPARSEKIT_JIT=0)")
    process.tune_process()  # as the command does
    rng = np.random.default_rng(0)
    b, d, h = args.batch, args.dim, args.hidden
    x = rng.random((b, d), dtype=np.float32)
    code = rng.random((b, h), dtype=np.float32)
    d_out = rng.standard_normal((b, d), dtype=np.float32) * 1e-3
    d_code = rng.standard_normal((b, h), dtype=np.float32) * 1e-3
    w_enc = rng.standard_normal((h, d), dtype=np.float32) * 0.05
    w_dec = w_enc.copy()
    copies = (w_enc.copy(), w_dec.copy())
    moments = [np.zeros_like(w_enc) for _ in range(4)]
    scratch = np.zeros(16 << 18, np.float32)
    scalars = (0.0, 0.9, 0.999, 1e-8, 1e-3)

    cases = {
        "gradients only": lambda: None,
        "+ forward products": lambda: (x @ w_enc.T, code @ w_dec),
        "+ forward products on copies": lambda: (x @ copies[0].T, code @ copies[1]),
        "+ 16 MiB of writes": lambda: scratch.fill(1.0),
    }
    results = {}
    for name, before in cases.items():
        total, warm = 0.0, 50
        for step in range(args.steps + warm):
            before()
            g_enc = d_code.T @ x
            g_dec = code.T @ d_out
            start = time.perf_counter()
            fused.run_sum(_adam_loop, (w_enc, g_enc, *moments[:2]), scalars)
            fused.run_sum(_adam_loop, (w_dec, g_dec, *moments[2:]), scalars)
            if step >= warm:
                total += time.perf_counter() - start
        results[name] = total / (2 * args.steps) * 1e6
    base = results["gradients only"]
    print(f"Adam on a {h}×{d} float32 matrix, {threads.cpu_threads()} thread(s), µs per update")
    for name, us in results.items():
        print(f"  {name:<30} {us:8.0f}  {us / base:5.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
