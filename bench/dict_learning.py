"""Online dictionary learning: sparsekit's ``dict-learning`` against scikit-learn's
``MiniBatchDictionaryLearning``, held-out objective against wall time, on the CPU.

    SPARSEKIT_DATA=/path/holding/mnist python bench/dict_learning.py --dataset patches
    SPARSEKIT_DATA=/path/holding/mnist python bench/dict_learning.py --dataset mnist

Both learn the same number of atoms at the same α from the same initial dictionary
(normalised training samples, sparsekit's init), on the same minibatches in the same order
(batch 256): scikit-learn by ``partial_fit`` (its default coder, LARS, and its own
block-coordinate update with Mairal et al.'s forgetting schedule), sparsekit by
``DictionaryLearning.update`` (the same update and schedule) inside ``own_threads()``, as
``sparsekit train`` runs every step, once per coder of ``--coders`` (default ``cd,fista``:
coordinate descent, the CPU's fastest, and FISTA, the default and the GPU's coder, each at
its default tolerance).
Each runs for ``--seconds`` of training time. Every ``--every`` seconds the clock stops and
the held-out objective is measured the same way for both dictionaries: the mean over
held-out rows of ½‖x − zD‖² + α‖z‖₁, with z from FISTA at tol 1e-3 (a relative objective error near 1e-4, far below the
gaps between the curves) (the same coder for
both, so the number depends on the dictionary only). Printed: both curves, scikit-learn's
final objective, the time sparsekit took to reach it and the ratio; a PNG of both curves is
written to ``docs/results/dict-learning-<dataset>.png``. The CPU model is printed first.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from cpuinfo import cpu_model  # bench/, on the path when run as a script
from sklearn.decomposition import MiniBatchDictionaryLearning

import sparsekit
from sparsekit.backend import get_backend
from sparsekit.backend.process import own_threads
from sparsekit.coders import fista, l1_objective
from sparsekit.data import load_mnist
from sparsekit.data.patches import make_patches

ROOT = Path(__file__).resolve().parent.parent

#: (atoms, α, training rows) per data set.
PROBLEMS = {"patches": (256, 1.0, 20000), "mnist": (1000, 1.0, 20000)}
HELD_OUT = 256


def held_out_objective(dictionary: np.ndarray, x: np.ndarray, alpha: float) -> float:
    d = np.ascontiguousarray(dictionary, dtype=np.float32)
    codes = fista(x, d, alpha, tol=1e-3, max_iter=3000).codes
    return float(
        l1_objective(
            x.astype(np.float64), d.astype(np.float64), codes.astype(np.float64), alpha
        ).mean()
    )


def batches(n: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            yield np.sort(order[start : start + batch])


def run_curve(step, dictionary, train, held, alpha, args) -> tuple[list, int]:
    """``([(training seconds, held-out objective)], minibatches)``, the curve's first point
    at 0 s (the initial dictionary)."""
    curve = [(0.0, held_out_objective(dictionary(), held, alpha))]
    spent, next_eval, steps = 0.0, args.every, 0
    for rows in batches(len(train), args.batch, args.seed):
        x = train[rows]
        start = time.perf_counter()
        step(x)
        spent += time.perf_counter() - start
        steps += 1
        if spent >= next_eval or spent >= args.seconds:
            curve.append((spent, held_out_objective(dictionary(), held, alpha)))
            next_eval = spent + args.every
        if spent >= args.seconds:
            break
    return curve, steps


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first time the curve is at or below ``target``, interpolated between points
    (None when it never is, or already was at 0 s)."""
    if curve[0][1] <= target:
        return None
    for (t0, v0), (t1, v1) in zip(curve, curve[1:], strict=False):
        if v1 <= target:
            if v0 == v1:
                return t1
            return t0 + (t1 - t0) * (v0 - target) / (v0 - v1)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(PROBLEMS), default="patches")
    parser.add_argument("--seconds", type=float, default=60.0, help="training time of each")
    parser.add_argument("--every", type=float, default=6.0, help="seconds between evaluations")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="data directory holding mnist/")
    parser.add_argument("--plot", default=None, help="PNG path (default docs/results/...)")
    parser.add_argument("--tol", type=float, default=None, help="dict-learning's --tol")
    parser.add_argument("--max-iter", type=int, default=None, help="dict-learning's --max-iter")
    parser.add_argument(
        "--coders", default="cd,fista", help="dict-learning's --coder values, one curve each"
    )
    args = parser.parse_args(argv)
    atoms, alpha, n = PROBLEMS[args.dataset]
    print(f"CPU: {cpu_model()}; numpy {np.__version__}; sparsekit {sparsekit.__version__}")
    if args.dataset == "patches":
        data = make_patches(size=12, n=n + HELD_OUT, seed=args.seed).to_array(np.float32)
    else:
        data = load_mnist(args.data, split="train", subset=n + HELD_OUT).to_array(np.float32)
    train, held = data[:n], data[n:]
    print(
        f"{args.dataset}: {n} training rows, {HELD_OUT} held out, {atoms} atoms, α={alpha}, "
        f"batch {args.batch}, {args.seconds:g} s of training each"
    )

    coders = [c.strip() for c in args.coders.split(",") if c.strip()]
    settings = {"tol": args.tol, "max_iter": args.max_iter}
    backend = get_backend(dtype="float32")
    init = None
    curves: dict[str, tuple[list, int]] = {}
    for coder in coders:
        method = sparsekit.make_method(
            "dict-learning",
            alpha=alpha,
            coder=coder,
            **{k: v for k, v in settings.items() if v is not None},
        )
        print(f"sparsekit: {method!r}")
        if init is None:  # every run starts from the same dictionary
            init = method.init_params(
                np.random.default_rng(args.seed), train.shape[1], atoms, True, train
            )
        params = {k: backend.asarray(v.copy()) for k, v in init.items()}
        with own_threads():  # compile the coder's loops before the clock starts
            method.code(backend, params["W_enc"], train[:8], True)

        def our_step(x, method=method, params=params):
            with own_threads():  # as the trainer runs every step: BLAS on one thread
                method.update(backend, params, x, 1.0)

        curves[f"sparsekit {coder}"] = run_curve(
            our_step, lambda params=params: params["W_enc"], train, held, alpha, args
        )
    theirs_model = MiniBatchDictionaryLearning(
        n_components=atoms,
        alpha=alpha,
        batch_size=args.batch,
        dict_init=init["W_enc"].copy(),
        random_state=args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, their_steps = run_curve(
            lambda x: theirs_model.partial_fit(x.astype(np.float64)),
            lambda: getattr(theirs_model, "components_", init["W_enc"]),
            train,
            held,
            alpha,
            args,
        )
    names = [*curves, "scikit-learn"]
    curves["scikit-learn"] = (theirs, their_steps)
    print("\n" + " | ".join(f"{'seconds':>8s} {name:>18s}" for name in names))
    for i in range(max(len(curves[n][0]) for n in names)):
        cells = []
        for name in names:
            curve = curves[name][0]
            cells.append(
                f"{curve[i][0]:8.1f} {curve[i][1]:18.4f}" if i < len(curve) else " " * 27
            )
        print(" | ".join(cells))
    final = theirs[-1][1]
    theirs_rate = their_steps / theirs[-1][0]
    print(
        f"\nscikit-learn: {theirs_rate:.2f} minibatches/s ({their_steps}); final held-out "
        f"objective {final:.4f} after {theirs[-1][0]:.1f} s"
    )
    for name in names[:-1]:
        ours, our_steps = curves[name]
        rate = our_steps / ours[-1][0]
        reached = time_to_reach(ours, final)
        line = f"{name}: {rate:.2f} minibatches/s ({our_steps}, {rate / theirs_rate:.1f}x); "
        if final >= theirs[0][1]:
            line += f"scikit-learn ended above the initial {theirs[0][1]:.4f}: no time to reach"
        elif reached is None:
            line += f"did not reach it in {ours[-1][0]:.1f} s (final {ours[-1][1]:.4f})"
        else:
            line += f"reached it after {reached:.1f} s: {theirs[-1][0] / reached:.1f}x sooner"
        print(line)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in zip(names[:-1], "o^vD", strict=False):
        ax.plot(*zip(*curves[name][0], strict=True), marker + "-", ms=3, label=name)
    ax.plot(
        *zip(*theirs, strict=True), "s-", ms=3, label="scikit-learn MiniBatchDictionaryLearning (LARS)"
    )
    ax.axhline(final, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training wall time (s), CPU")
    ax.set_ylabel("held-out ½‖x − zD‖² + α‖z‖₁ per sample")
    ax.set_title(f"{args.dataset}: {atoms} atoms, α={alpha:g}, batch {args.batch}")
    ax.legend()
    fig.tight_layout()
    out = (
        Path(args.plot)
        if args.plot
        else ROOT / "docs" / "results" / f"dict-learning-{args.dataset}.png"
    )
    fig.savefig(out, dpi=110)
    print(f"plot written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
