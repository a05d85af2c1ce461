"""sparsekit's coders against scikit-learn's ``sparse_encode``, in one run, on the CPU.

    SPARSEKIT_DATA=/path/holding/mnist python bench/coders_speed.py [--gpu]

Two problems, batch 256 (float32 for sparsekit; scikit-learn gets the same float32 arrays):

* 256 atoms on 12×12 whitened patches (``sparsekit.data.patches``, needs scikit-image);
* 1,000 atoms on MNIST (pixels in [0, 1]).

The dictionaries are learned, as a coder meets them inside dictionary learning: one epoch of
``dict-learning --coder omp`` on 5,000 other rows of the same data (seeded). For the L1
problem (α = 1 on patches, 1 on MNIST) ``sparse_encode``'s ``lasso_lars`` (exact) and
``lasso_cd`` are timed against coordinate descent ("cd", ``coders.coordinate_descent``: its
tol bounds each coordinate's KKT violation), FISTA and ISTA at several tolerances, FISTA with and without
the exact active-set finish ("+p": ``polish=True``, the default; the line says how many rows
it certified); each line shows the objective's relative gap to LARS's, Σ_rows ½‖x − zD‖² + α‖z‖₁. "Equal result" is a gap of
at most 1e-4 (relative, about the float32 rounding of the objective over a batch); the
ratio is scikit-learn's faster L1 time over the fastest sparsekit coder that reaches it.
OMP (k = 10) is compared at identical supports. The machine (CPU model from
/proc/cpuinfo) is printed first; every timing is the best of ``--repeat`` runs, interleaved,
with BLAS on one thread for both sides (sparsekit's coders split their large products over
their own threads; on a busy machine a spinning multi-threaded BLAS made scikit-learn's
side no faster and sparsekit's many times slower).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from cpuinfo import cpu_model  # bench/, on the path when run as a script
from sklearn.decomposition import sparse_encode

import sparsekit
from sparsekit.backend import get_backend
from sparsekit.backend.process import own_threads
from sparsekit.coders import coordinate_descent, fista, ista, l1_objective, omp
from sparsekit.data import load_mnist
from sparsekit.data.patches import make_patches

EQUAL_GAP = 1e-4
TOLERANCES = (3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
#: Coordinate descent's tol bounds a KKT violation, not a relative change (coders/cd.py).
CD_TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)


def best_time(fn, repeat: int) -> tuple[float, object]:
    """The best of ``repeat`` calls, each with BLAS on one thread (scikit-learn's coders
    work sample by sample on short vectors; sparsekit's coders set it themselves)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        with own_threads():
            start = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - start)
    return best, out


def learned_dictionary(train: np.ndarray, hidden: int) -> np.ndarray:
    """One epoch of dict-learning (OMP coder, k = 10) on ``train``: a dictionary as coders
    meet it while learning."""
    model = sparsekit.train(
        "dict-learning",
        train,
        hidden=hidden,
        epochs=1,
        batch_size=256,
        seed=0,
        coder="omp",
        k=10,
    )
    return np.ascontiguousarray(model.decoder_weights, dtype=np.float32)


def problem(name: str, x: np.ndarray, dictionary: np.ndarray, alpha: float, args) -> float:
    xs = x.astype(np.float64)
    ds = dictionary.astype(np.float64)

    def objective(codes) -> float:
        return float(l1_objective(xs, ds, np.asarray(codes, dtype=np.float64), alpha).sum())

    print(
        f"\n== {name}: batch {x.shape[0]}, {dictionary.shape[0]} atoms of {x.shape[1]}, α={alpha}"
    )
    fista(x[:8], dictionary, alpha, max_iter=20)  # compile the fused product once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_lars, lars = best_time(
            lambda: sparse_encode(x, dictionary, algorithm="lasso_lars", alpha=alpha), args.repeat
        )
        t_cd, cd = best_time(
            lambda: sparse_encode(x, dictionary, algorithm="lasso_cd", alpha=alpha), args.repeat
        )
    exact = objective(lars)
    print(f"sklearn lasso_lars  {t_lars * 1e3:9.1f} ms   objective {exact:.6g} (reference)")
    gap_cd = objective(cd) / exact - 1
    print(f"sklearn lasso_cd    {t_cd * 1e3:9.1f} ms   gap {gap_cd:+.1e}")
    sklearn_best = min(t_lars, t_cd)
    fastest_equal = float("inf")
    coordinate_descent(x[:8], dictionary, alpha)  # compile its loop once
    for coder, polish in ((coordinate_descent, False), (fista, True), (fista, False), (ista, True)):
        name = ("cd" if coder is coordinate_descent else coder.__name__) + ("+p" if polish else "")
        for tol in CD_TOLERANCES if coder is coordinate_descent else TOLERANCES:
            t, res = best_time(
                lambda c=coder, tl=tol, p=polish: c(
                    x, dictionary, alpha, tol=tl, max_iter=20000, polish=p
                ),
                args.repeat,
            )
            gap = objective(res.codes) / exact - 1
            equal = gap <= EQUAL_GAP
            if equal:
                fastest_equal = min(fastest_equal, t)
            print(
                f"sparsekit {name:8s} tol={tol:<6g}{t * 1e3:9.1f} ms   gap {gap:+.1e}  "
                f"iterations ≤ {res.iterations:5d}  polished {res.polished:3d}/{x.shape[0]}  "
                f"ratio {sklearn_best / t:5.2f}x" + ("  (equal result)" if equal else "")
            )
    k = 10
    t_omp_sk, ref = best_time(
        lambda: sparse_encode(x, dictionary, algorithm="omp", n_nonzero_coefs=k), args.repeat
    )
    t_omp, ours = best_time(lambda: omp(x, dictionary, k), args.repeat)
    same = bool(((ours != 0) == (ref != 0)).all())
    print(
        f"OMP k={k}: sklearn {t_omp_sk * 1e3:.1f} ms, sparsekit {t_omp * 1e3:.1f} ms, "
        f"ratio {t_omp_sk / t_omp:.2f}x, same supports: {same}"
    )
    ratio = sklearn_best / fastest_equal
    print(f"L1 at equal result (gap ≤ {EQUAL_GAP:g}): {ratio:.2f}x faster than sparse_encode")
    if args.gpu:
        backend = get_backend(gpu=True, dtype="float32")
        gx, gd = backend.asarray(x), backend.asarray(dictionary)
        for coder in (fista,):
            for tol in (1e-3, 1e-4):
                coder(gx, gd, alpha, tol=tol, max_iter=20000)
                backend.synchronize()

                def run(c=coder, tl=tol):
                    out = c(gx, gd, alpha, tol=tl, max_iter=20000)
                    backend.synchronize()
                    return out

                t, res = best_time(run, args.repeat)
                gap = objective(backend.to_numpy(res.codes)) / exact - 1
                print(
                    f"GPU {coder.__name__} tol={tol:g}: {t * 1e3:.1f} ms, gap {gap:+.1e}, "
                    f"ratio to sklearn CPU {sklearn_best / t:.1f}x"
                )
        omp(gx, gd, k)

        def run_omp():
            out = omp(gx, gd, k)
            backend.synchronize()
            return out

        t, _ = best_time(run_omp, args.repeat)
        print(f"GPU omp k={k}: {t * 1e3:.1f} ms, ratio to sklearn CPU {t_omp_sk / t:.1f}x")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", default=None, help="data directory holding mnist/")
    parser.add_argument("--gpu", action="store_true", help="also time the coders on CuPy")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()}; numpy {np.__version__}; sparsekit {sparsekit.__version__}")

    patches = make_patches(size=12, n=5000 + args.batch, seed=0).to_array(np.float32)
    dictionary = learned_dictionary(patches[:5000], 256)
    problem("patches 12x12", patches[5000:], dictionary, 1.0, args)

    mnist = load_mnist(args.data, split="train", subset=5000 + args.batch).to_array(np.float32)
    dictionary = learned_dictionary(mnist[:5000], 1000)
    problem("MNIST", mnist[5000:], dictionary, 1.0, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
