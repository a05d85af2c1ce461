"""Why Arora's step is only as fast as its BLAS, and whether sparse products would help.

    .venv/bin/python bench/arora_products.py            # -> bench/results/arora-products.json

Arora et al.'s step (``sparsekit/methods/arora.py``) is three dense products, S = Y Wᵀ,
X W and sgn(X)ᵀ R, plus a threshold pass and the atom update. This probe, at the settings of
``bench_train.py`` (60,000 MNIST images, hidden 1000, batch 256, float32, τ = 1, η = 0.1,
random unit atoms, seed 0), measures:

1. ``blas``: each of the three products at its exact shape and memory layout, in NumPy
   (its bundled OpenBLAS) and in PyTorch (MKL), on 1 and 2 threads, each library in its own
   process (their thread pools never share one);
2. ``density``: how many entries of the code X = S ∘ 1[|S| ≥ τ] are non-zero, on a fixed
   sample of 10,000 images, at initialisation and after each of three epochs of sparsekit's
   own training (the benchmark times epochs 2 and 3), and every 47 steps on one minibatch;
3. ``sparse``: with the atoms after two epochs and real minibatches, X W and sgn(X)ᵀ R as
   SciPy CSR products (the CSR built from the threshold mask, included in the time) against
   the dense products, at τ = 1 and at other thresholds to map cost against density.

Timings are medians of process CPU seconds by default (``--clock cpu``): for one-thread work
they barely depend on what else runs on a busy machine; on an idle one, ``--clock wall``
also times the two-thread products.

It changes nothing in sparsekit; it is the evidence for ``docs/performance.md`` ("Intel").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
B, D, H = 256, 784, 1000
PRODUCTS = ("S = Y Wt", "X W", "sgn(X)t R")


#: "cpu": process CPU seconds, which other processes on a busy machine barely change for
#: one-thread work (the default); "wall": wall-clock seconds (for 2 threads on an idle box).
CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["cpu"]


def _median_seconds(fn: Any, reps: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(reps):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def _operands(np: Any) -> dict[str, Any]:
    """Operands with the shapes, layouts and (roughly) the density of the real step."""
    rng = np.random.default_rng(0)
    y = rng.random((B, D), dtype=np.float32)
    w = rng.standard_normal((H, D), dtype=np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    s = y @ w.T
    code = s * (np.abs(s) >= np.quantile(np.abs(s), 0.99))
    residual = code @ w - y
    return {"y": y, "w": w, "code": code, "sgn": np.sign(code), "residual": residual}


def worker_blas(lib: str, threads: int, reps: int) -> dict[str, Any]:
    """Median seconds of each product (as the step writes it) in one library."""
    import numpy as np

    ops = _operands(np)
    if lib == "torch":
        import torch

        torch.set_num_threads(threads)
        t = {k: torch.from_numpy(v) for k, v in ops.items()}
        fns = [
            lambda: t["y"] @ t["w"].T,
            lambda: t["code"] @ t["w"],
            lambda: t["sgn"].T @ t["residual"],
        ]
        version = f"torch {torch.__version__}, MKL {torch.backends.mkl.is_available()}"
    else:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(threads)
        fns = [
            lambda: ops["y"] @ ops["w"].T,
            lambda: ops["code"] @ ops["w"],
            lambda: ops["sgn"].T @ ops["residual"],
        ]
        info = [p for p in threadpool_info() if p["user_api"] == "blas"]
        version = f"numpy {np.__version__}, " + ", ".join(
            f"{p['internal_api']} {p['version']} {p.get('architecture')}" for p in info
        )
    seconds = {name: _median_seconds(fn, reps) for name, fn in zip(PRODUCTS, fns, strict=True)}
    return {"lib": lib, "threads": threads, "version": version, "seconds": seconds}


def _spawn(args: list[str], threads: int) -> dict[str, Any]:
    env = dict(os.environ, ARORA_PROBE_CLOCK=clock_name())
    env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clock_name() -> str:
    return next(name for name, fn in CLOCK.items() if fn is clock)


def _density(np: Any, w: Any, y: Any, tau: float) -> dict[str, float]:
    s = y @ w.T
    per_row = (np.abs(s) >= tau).sum(axis=1)
    return {
        "density": float(per_row.mean() / w.shape[0]),
        "per_row_mean": float(per_row.mean()),
        "per_row_p50": float(np.median(per_row)),
        "per_row_p99": float(np.quantile(per_row, 0.99)),
        "per_row_max": int(per_row.max()),
        "rows_empty": float((per_row == 0).mean()),
    }


def _csr(sp: Any, np: Any, values: Any, mask: Any) -> Any:
    """CSR of values at mask, straight from the mask (rows of np.nonzero come sorted)."""
    counts = mask.sum(axis=1)
    indptr = np.zeros(mask.shape[0] + 1, dtype=np.int32)
    np.cumsum(counts, out=indptr[1:])
    cols = np.nonzero(mask)[1].astype(np.int32)
    return sp.csr_matrix((values[mask], cols, indptr), shape=mask.shape)


def sparse_products(np: Any, w: Any, batches: list[Any], tau: float, reps: int) -> dict:
    """Dense against CSR for X W and sgn(X)ᵀ R on real minibatches (medians over batches).

    Both on one thread (SciPy's CSR products are single-threaded; BLAS is limited to one).
    """
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _sparse_products(np, sp, w, batches, tau, reps)


def _sparse_products(np: Any, sp: Any, w: Any, batches: list[Any], tau: float, reps: int) -> dict:

    dense_t, sparse_t, build_t, dens = [], [], [], []
    for y in batches:
        s = y @ w.T
        mask = np.abs(s) >= tau
        code = s * mask
        sgn = np.sign(code)
        residual = code @ w - y

        def dense(code=code, sgn=sgn, residual=residual) -> tuple[Any, Any]:
            return code @ w, sgn.T @ residual

        def build(s=s, mask=mask) -> tuple[Any, Any]:
            x = _csr(sp, np, s, mask)
            return x, sp.csr_matrix((np.sign(x.data), x.indices, x.indptr), shape=x.shape)

        def sparse(s=s, mask=mask, residual=residual) -> tuple[Any, Any]:
            x, sx = build(s, mask)
            return x @ w, sx.T @ residual  # csr @ dense; csrᵀ (a csc view) @ dense

        got, want = sparse(), dense()
        scale = max(1.0, float(np.abs(want[1]).max()))
        assert np.allclose(got[0], want[0], atol=1e-4 * scale), "X W differs"
        assert np.allclose(got[1], want[1], atol=1e-3 * scale), "sgn(X)ᵀ R differs"
        dense_t.append(_median_seconds(dense, reps))
        sparse_t.append(_median_seconds(sparse, reps))
        build_t.append(_median_seconds(build, reps))
        dens.append(float(mask.mean()))
    return {
        "tau": tau,
        "density": statistics.median(dens),
        "dense_seconds": statistics.median(dense_t),
        "csr_seconds": statistics.median(sparse_t),
        "csr_build_seconds": statistics.median(build_t),
        "csr_vs_dense": statistics.median(sparse_t) / statistics.median(dense_t),
    }


def run_training(data_dir: Path, epochs: int, reps: int, taus: list[float]) -> dict:
    """Train sparsekit's Arora at the benchmark's settings; density and the sparse probe."""
    import numpy as np

    from sparsekit.data import load_mnist
    from sparsekit.methods.registry import load_registry
    from sparsekit.training.settings import resolve_config
    from sparsekit.training.trainer import Callback, Trainer

    data = load_mnist(data_dir)
    method = load_registry().create("arora")
    cfg = resolve_config(
        method, hidden=H, batch_size=B, epochs=epochs, dtype="float32", seed=0, optimizer=None
    )
    rng = np.random.default_rng(1)
    sample = data.take(np.sort(rng.choice(len(data), 10000, replace=False)), np.float32)
    probe = sample[:B]
    tau = method.tau
    steps_seen: list[dict[str, Any]] = []

    class StepDensity(Callback):
        def on_step_end(self, trainer: Any, step: int, steps: int) -> None:
            if step % 47 == 1:
                w = np.asarray(trainer.params["W_enc"])
                d = _density(np, w, probe, tau)["density"]
                steps_seen.append({"epoch": trainer.epoch + 1, "step": step, "density": d})

    trainer = Trainer(method, data, cfg, callbacks=[StepDensity()])
    epochs_seen = [{"epoch": 0, **_density(np, np.asarray(trainer.params["W_enc"]), sample, tau)}]
    sparse_rows = []
    for epoch in range(1, epochs + 1):
        trainer.train_epoch()
        w = np.array(trainer.params["W_enc"])
        epochs_seen.append({"epoch": epoch, **_density(np, w, sample, tau)})
        if epoch == 2:  # the benchmark's first timed epoch starts from these atoms
            batches = [sample[i * B : (i + 1) * B] for i in range(5)]
            sparse_rows = [sparse_products(np, w, batches, t, reps) for t in taus]
    return {"tau": tau, "epochs": epochs_seen, "steps": steps_seen, "sparse": sparse_rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--blas-worker", nargs=3, help=argparse.SUPPRESS)
    p.add_argument(
        "--data", type=Path, default=Path(os.environ.get("SPARSEKIT_DATA", DEFAULT_DATA))
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=50, help="repetitions per timing (median)")
    p.add_argument("--taus", default="0.5,0.75,1,1.5,2,3")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCK),
        default=os.environ.get("ARORA_PROBE_CLOCK", "cpu"),
        help="process CPU seconds (default; robust on a busy machine, exact for one thread)"
        " or wall-clock seconds",
    )
    p.add_argument("--threads", default="1,2", help="BLAS threads to time the products on")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "arora-products.json")
    args = p.parse_args()
    global clock
    clock = CLOCK[args.clock]
    if args.blas_worker:
        lib, threads, reps = args.blas_worker
        print(json.dumps(worker_blas(lib, int(threads), int(reps))))
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    blas = [
        _spawn(["--blas-worker", lib, str(threads), str(args.reps)], threads)
        for threads in [int(t) for t in args.threads.split(",")]
        for lib in ("numpy", "torch")
    ]
    print(f"one product, median {args.clock} ms (B = 256, D = 784, H = 1000, float32)")
    print(f"{'library':<8} {'threads':>7} " + " ".join(f"{n:>11}" for n in PRODUCTS) + "  sum")
    for row in blas:
        ms = [row["seconds"][n] * 1e3 for n in PRODUCTS]
        print(
            f"{row['lib']:<8} {row['threads']:>7} "
            + " ".join(f"{v:>11.3f}" for v in ms)
            + f"  {sum(ms):.3f}"
        )
    for row in blas:
        print(f"  {row['lib']} ({row['threads']}): {row['version']}")
    taus = [float(t) for t in args.taus.split(",")]
    trained = run_training(args.data, args.epochs, max(5, args.reps // 5), taus)
    print(f"\ncode density at tau = {trained['tau']} on 10,000 training images")
    for row in trained["epochs"]:
        print(
            f"  after epoch {row['epoch']}: {100 * row['density']:.2f}% "
            f"({row['per_row_mean']:.1f} of {H} a row; median {row['per_row_p50']:.0f}, "
            f"99th percentile {row['per_row_p99']:.0f}, max {row['per_row_max']}; "
            f"{100 * row['rows_empty']:.1f}% of rows empty)"
        )
    print(
        f"\nX W + sgn(X)t R, one thread, median {args.clock} ms: dense (OpenBLAS) vs SciPy CSR"
        " (the CSR built from the mask, included)"
    )
    print(
        f"{'tau':>5} {'density %':>9} {'dense ms':>9} {'CSR ms':>8} {'build ms':>9} {'CSR/dense':>9}"
    )
    for row in trained["sparse"]:
        print(
            f"{row['tau']:>5} {100 * row['density']:>9.2f} {row['dense_seconds'] * 1e3:>9.3f} "
            f"{row['csr_seconds'] * 1e3:>8.3f} {row['csr_build_seconds'] * 1e3:>9.3f} "
            f"{row['csr_vs_dense']:>9.2f}"
        )
    result = {
        "started": started,
        "load_average": os.getloadavg(),
        "settings": {
            "B": B,
            "D": D,
            "H": H,
            "epochs": args.epochs,
            "reps": args.reps,
            "clock": args.clock,
        },  # fmt: skip
        "blas": blas,
        **trained,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
