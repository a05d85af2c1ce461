"""Makhzani & Frey (2013), k-sparse autoencoder on MNIST, features for logistic regression.

Published: 1000 hidden units, k = 25, encoding with the αk = 75 largest units, logistic
regression on the features: 1.35% test error (raw pixels 7.20%). Settings of the authors'
code: SGD with momentum 0.9, lr 0.01, batch 128, weights 0.01·randn, k annealed linearly from
100 to 25 over the first half of the epochs.

    python -m experiments.ksparse_mnist --optimizer momentum --lr 0.01 --epochs 50
    python -m experiments.ksparse_mnist --optimizer adam --lr 1e-3 --epochs 50

Trains on the 60,000 training images, encodes train and test with ``model.encode`` (the αk
encoding-time support), fits the linear probe of :func:`sparsekit.evaluation.measures.linear_probe` on
the training codes and reports the error on the 10,000 test images, beside the same probe
on raw pixels. Writes ``experiments/results/ksparse-<optimizer>.json`` (and the parameters as
``.npz`` next to it with ``--save-params``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments.common import DEFAULT_DATA, Clock, EpochPrinter, machine, write_result
from sparsekit.training.settings import resolve_config
from sparsekit.data import load_mnist
from sparsekit.evaluation.measures import PROBE_C, PROBE_MAX_ITER, evaluate, linear_probe, select_C
from sparsekit.training.trainer import Trainer, make_method

PUBLISHED = {"error": 0.0135, "raw_pixels_error": 0.0720}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--optimizer", default="momentum", choices=("momentum", "adam", "sgd"))
    ap.add_argument("--lr", type=float, default=None, help="default 0.01 (momentum), 1e-3 (adam)")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=1000)
    ap.add_argument("--k", type=int, default=25)
    ap.add_argument("--k-start", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", type=int, default=None, help="first N training images only")
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--C", type=float, default=PROBE_C, help="probe inverse regularisation")
    ap.add_argument("--max-iter", type=int, default=PROBE_MAX_ITER)
    ap.add_argument(
        "--C-grid",
        type=float,
        nargs="+",
        default=None,
        help="choose C from these on the last 10,000 training images, for codes and pixels "
        "separately (the test set is never used to choose)",
    )
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-pixel baseline")
    ap.add_argument(
        "--center",
        action="store_true",
        help="train on images minus the training set's mean image (not in the paper)",
    )
    ap.add_argument(
        "--from-params", default=None, help="skip training: probe the parameters of this .npz"
    )
    ap.add_argument("--save-params", action="store_true")
    ap.add_argument("--out", default=None, help="result JSON (default experiments/results/)")
    args = ap.parse_args(argv)
    lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.01)
    name = f"ksparse-{args.optimizer}"

    clock = Clock()
    info = machine()
    train_set = load_mnist(args.data, split="train", subset=args.subset)
    test_set = load_mnist(args.data, split="test", subset=args.test_subset)
    x_train, x_test = train_set.to_array(), test_set.to_array()
    fit_train, fit_test = x_train, x_test
    if args.center:
        mean_image = x_train.mean(axis=0)
        fit_train, fit_test = x_train - mean_image, x_test - mean_image
        name += "-centered"
    method = make_method("ksparse", k=args.k, k_start=args.k_start, alpha=args.alpha)
    config = resolve_config(
        method,
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=lr,
        momentum=args.momentum,
        seed=args.seed,
        dtype="float32",
    )
    print(f"{name}: {method!r} {config.to_dict()} on {len(train_set)} images", flush=True)
    trainer = Trainer(method, fit_train, config, callbacks=[EpochPrinter()])
    if args.from_params:
        with np.load(args.from_params) as saved:
            for key in trainer.params:
                trainer.params[key] = trainer.backend.asarray(saved[key])
        method.on_epoch_start(config.epochs - 1, config.epochs)
        model = trainer.model
        name += "-probe"
    else:
        model = trainer.fit()
    train_seconds = clock.lap("train")

    test_measures = evaluate(model, fit_test)
    codes_train, codes_test = model.encode(fit_train), model.encode(fit_test)
    clock.lap("measures_and_encode")
    probe = {"C": args.C, "max_iter": args.max_iter, "standardize": True, "solver": "lbfgs"}
    c_codes = c_raw = args.C
    if args.C_grid:
        c_codes, scores = select_C(
            codes_train,
            train_set.labels,
            args.C_grid,
            validation=min(10000, len(x_train) // 6),
            max_iter=args.max_iter,
        )
        probe.update(C=None, C_grid=args.C_grid, C_codes=c_codes, validation_codes=scores)
        print(f"C for codes: {c_codes} (validation errors {scores})", flush=True)
        clock.lap("select_C_codes")
    error = linear_probe(
        codes_train,
        train_set.labels,
        codes_test,
        test_set.labels,
        C=c_codes,
        max_iter=args.max_iter,
    )
    clock.lap("probe_codes")
    print(f"probe on codes (alpha*k = {round(args.alpha * args.k)}): test error {error:.4f}")
    raw_error = None
    if not args.no_raw:
        if args.C_grid:
            c_raw, scores = select_C(
                x_train,
                train_set.labels,
                args.C_grid,
                validation=min(10000, len(x_train) // 6),
                max_iter=args.max_iter,
            )
            probe.update(C_raw=c_raw, validation_raw=scores)
            print(f"C for raw pixels: {c_raw} (validation errors {scores})", flush=True)
            clock.lap("select_C_raw")
        raw_error = linear_probe(
            x_train, train_set.labels, x_test, test_set.labels, C=c_raw, max_iter=args.max_iter
        )
        clock.lap("probe_raw")
        print(f"probe on raw pixels: test error {raw_error:.4f}")
    result = {
        "experiment": name,
        "command": "python -m experiments.ksparse_mnist "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "method": method.get_params(),
        "train": config.to_dict(),
        "centered": args.center,
        "n_train": len(train_set),
        "n_test": len(test_set),
        "probe": probe,
        "error": error,
        "raw_pixels_error": raw_error,
        "published": PUBLISHED,
        "test_measures": test_measures,
        "history": trainer.history if not args.from_params else None,
        "seconds": clock.times,
        "seconds_per_epoch": train_seconds / max(1, args.epochs),
        "machine": info,
    }
    path = write_result(name, result, args.out)
    if args.save_params:
        np.savez(path.with_suffix(".npz"), **model.numpy_params())
    print(f"written {path}")
    return result


if __name__ == "__main__":
    main()
