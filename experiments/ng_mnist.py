"""Ng's CS294A sparse-autoencoder exercises on MNIST, with the KL sparsity method.

``filters``: H = 196, ρ = 0.1, λ = 3e-3, β = 3 on the first 10,000 training images; the
published result is qualitative (the filters "resemble pen strokes"). Writes the
contrast-normalised filter grid to ``docs/results/kl-mnist-filters.png``.

``self-taught``: H = 200, same ρ, λ, β; features learned without labels on the training
images of digits 5-9; a softmax (multinomial logistic regression, the probe of
:func:`sparsekit.evaluation.measures.linear_probe`) trained on the features of the training images of
digits 0-4 and tested on the test images of digits 0-4; the same probe on raw pixels.
Published: about 98% test accuracy on features, about 96% on raw pixels.

The exercise optimised with L-BFGS (400 iterations, full batch); sparsekit trains with
minibatch Adam, ``--epochs`` passes.

    python -m experiments.ng_mnist filters --epochs 100
    python -m experiments.ng_mnist self-taught --epochs 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from experiments.common import DEFAULT_DATA, Clock, EpochPrinter, machine, write_result
from sparsekit.training.settings import resolve_config
from sparsekit.data import load_mnist
from sparsekit.evaluation.measures import PROBE_C, PROBE_MAX_ITER, evaluate, linear_probe
from sparsekit.evaluation.figures import save_filter_grid
from sparsekit.training.trainer import Trainer, make_method

DOCS_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def train_kl(x: np.ndarray, args: argparse.Namespace, hidden: int, label: str):
    method = make_method("kl", rho=args.rho, beta=args.beta, weight_decay=args.weight_decay)
    lbfgs = args.optimizer == "lbfgs"
    config = resolve_config(
        method,
        hidden=hidden,
        epochs=1 if lbfgs else args.epochs,
        batch_size=len(x) if lbfgs else args.batch_size,
        optimizer="sgd" if lbfgs else args.optimizer,
        lr=args.lr,
        seed=args.seed,
        dtype="float64" if (args.float64 or lbfgs) else "float32",
    )
    print(f"{label}: {method!r} {config.to_dict()} on {len(x)} images", flush=True)
    trainer = Trainer(method, x, config, callbacks=[EpochPrinter(f"{label} ")])
    if lbfgs:
        trainer.history = lbfgs_fit(trainer, x, args.iterations, label)
        return method, config, trainer, trainer.model
    model = trainer.fit()
    return method, config, trainer, model


def lbfgs_fit(trainer: Trainer, x: np.ndarray, iterations: int, label: str) -> list[dict]:
    """The exercise's optimiser: full-batch L-BFGS (SciPy) on sparsekit's objective and
    hand-written gradients, from the trainer's initial parameters (CS294A's uniform init)."""
    from scipy.optimize import minimize

    from sparsekit.core.step import loss_and_grads

    backend, method = trainer.backend, trainer.method
    names = sorted(trainer.params)
    shapes = {k: trainer.params[k].shape for k in names}
    sizes = [int(np.prod(shapes[k])) for k in names]
    data = backend.asarray(x.astype(np.float64))

    def unpack(theta: np.ndarray) -> dict:
        parts = np.split(theta, np.cumsum(sizes)[:-1])
        return {k: p.reshape(shapes[k]).copy() for k, p in zip(names, parts, strict=True)}

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grads, _, _ = loss_and_grads(method, backend, unpack(theta), data)
        return float(loss), np.concatenate([np.asarray(grads[k]).ravel() for k in names])

    theta0 = np.concatenate(
        [np.asarray(trainer.params[k], dtype=np.float64).ravel() for k in names]
    )
    history: list[dict] = []

    def report(xk: np.ndarray) -> None:
        if len(history) % 50 == 49:
            print(f"{label} L-BFGS iteration {len(history) + 1}", flush=True)
        history.append({"iteration": len(history) + 1})

    res = minimize(
        objective, theta0, jac=True, method="L-BFGS-B", callback=report,
        options={"maxiter": iterations, "maxcor": 20},
    )  # fmt: skip
    trainer.params.update({k: backend.asarray(v) for k, v in unpack(res.x).items()})
    trainer.epoch = 1
    print(f"{label} L-BFGS: {res.nit} iterations, loss {res.fun:.5f}, {res.message}", flush=True)
    return [{"iterations": int(res.nit), "loss": float(res.fun), "message": str(res.message)}]


def filters(args: argparse.Namespace) -> dict:
    clock = Clock()
    train_set = load_mnist(args.data, split="train", subset=10000)
    x = train_set.to_array()
    method, config, trainer, model = train_kl(x, args, args.hidden or 196, "filters")
    clock.lap("train")
    png = save_filter_grid(Path(args.png), model.encoder_weights, (28, 28))
    measures = evaluate(model, x)
    return {
        "experiment": "kl-filters",
        "method": method.get_params(),
        "train": config.to_dict(),
        "n_train": len(x),
        "filters_png": str(png),
        "train_measures": measures,
        "mean_activation": float(model.encode(x).mean()),
        "history": trainer.history,
        "seconds": clock.times,
    }


def self_taught(args: argparse.Namespace) -> dict:
    clock = Clock()
    train_set = load_mnist(args.data, split="train")
    test_set = load_mnist(args.data, split="test")
    x_all, y_all = train_set.to_array(), train_set.labels
    x_test_all, y_test_all = test_set.to_array(), test_set.labels
    unlabeled = x_all[y_all >= 5]
    x_train, y_train = x_all[y_all < 5], y_all[y_all < 5]
    x_test, y_test = x_test_all[y_test_all < 5], y_test_all[y_test_all < 5]
    method, config, trainer, model = train_kl(unlabeled, args, args.hidden or 200, "self-taught")
    clock.lap("train")
    if args.png:
        save_filter_grid(Path(args.png), model.encoder_weights, (28, 28))
    f_train, f_test = model.encode(x_train), model.encode(x_test)
    settings = {"C": args.C, "max_iter": args.max_iter}
    error = linear_probe(f_train, y_train, f_test, y_test, **settings)
    clock.lap("probe_features")
    raw_error = linear_probe(x_train, y_train, x_test, y_test, **settings)
    clock.lap("probe_raw")
    print(f"self-taught: accuracy on features {1 - error:.4f}, raw pixels {1 - raw_error:.4f}")
    return {
        "experiment": "kl-self-taught",
        "method": method.get_params(),
        "train": config.to_dict(),
        "n_unlabeled": len(unlabeled),
        "n_train": len(x_train),
        "n_test": len(x_test),
        "probe": {**settings, "solver": "lbfgs", "standardize": True},
        "accuracy": 1 - error,
        "raw_pixels_accuracy": 1 - raw_error,
        "published": {"accuracy": 0.98, "raw_pixels_accuracy": 0.96},
        "unlabeled_measures": evaluate(model, unlabeled),
        "history": trainer.history,
        "seconds": clock.times,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=("filters", "self-taught"))
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--hidden", type=int, default=None, help="196 (filters), 200 (self-taught)")
    ap.add_argument("--rho", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=3.0)
    ap.add_argument("--weight-decay", type=float, default=3e-3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--optimizer", default="adam", help="adam, momentum, sgd or lbfgs (full batch)")
    ap.add_argument("--iterations", type=int, default=400, help="L-BFGS iterations")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float64", action="store_true")
    ap.add_argument("--C", type=float, default=PROBE_C)
    ap.add_argument("--max-iter", type=int, default=PROBE_MAX_ITER)
    ap.add_argument("--png", default=None, help="where to draw the filters")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.png is None:
        name = (
            "kl-mnist-filters.png" if args.experiment == "filters" else "kl-self-taught-filters.png"
        )
        args.png = str(DOCS_RESULTS / name)
    info = machine()
    result = filters(args) if args.experiment == "filters" else self_taught(args)
    result["command"] = "python -m experiments.ng_mnist " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result["machine"] = info
    path = write_result(result["experiment"], result, args.out)
    print(f"written {path}")
    return result


if __name__ == "__main__":
    main()
