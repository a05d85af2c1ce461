"""Check the write-up's claims against the seed study's runs (docs/study.md).

Reads the five run directories that ``sparsekit compare --preset seed-study`` wrote, measures
each model on the 10,000 MNIST test images, and writes one JSON file with every number the
claims are judged on, plus small figures for the docs::

    python -m experiments.seed_study runs/seed-study --out docs/study

Measures (each defined once here; docs/study.md says why each was chosen):

* ``test_mse``: mean squared pixel error of the reconstructions of the test images;
  ``test_fve``: 1 − SSE/SST of the same.
* ``sharpness``: Σ‖∇x̂‖² / Σ‖∇x‖² over the test images (finite differences between
  neighbouring pixels). 1 means as much edge energy as the originals; a blurred
  reconstruction loses it (< 1).
* ``contrast``: mean reconstructed value on the originals' ink pixels (x > 0.5) minus the
  mean on their background (x < 0.1), divided by the same difference for the originals
  (about 0.98). Below 1: strokes greyer or background lighter than in the originals.
* ``recognisable``: accuracy, on the reconstructions of the test images, of a logistic
  regression trained on the original training images; ``recognisable_originals`` is its
  accuracy on the test originals.
* ``locality``: per filter, the share of its response energy Σ(w_i σ_i)² held by its 10%
  (78) strongest pixels, where σ_i is pixel i's standard deviation over the training
  images; 0.1 for a filter spread evenly, 1 for one that lives on 78 pixels. Weighting by σ
  counts what a weight contributes to the unit's input: a large weight on a border pixel
  that is almost never inked (Adam inflates those) moves nothing. The median over units.
* ``digit_likeness``: per filter, the largest |correlation| of its σ-weighted form with the
  ten class-mean test digits; the median over units. A filter that looks like a whole digit
  scores high, a stroke or a texture low.
* ``epochs_to_95``: the first epoch whose running FVE reaches 95% of the final epoch's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("plain", "l2", "kl", "arora", "ksparse")
SAMPLE_FILTERS = 64  # filters in the small progression GIFs of the docs
GIF_FRAMES = 20


def sharpness(x: np.ndarray, xhat: np.ndarray, shape: tuple[int, int]) -> float:
    def edge_energy(images: np.ndarray) -> float:
        img = images.reshape(-1, *shape).astype(np.float64)
        return float((np.diff(img, axis=1) ** 2).sum() + (np.diff(img, axis=2) ** 2).sum())

    return edge_energy(xhat) / edge_energy(x)


def contrast(x: np.ndarray, xhat: np.ndarray) -> tuple[float, float]:
    ink, background = x > 0.5, x < 0.1
    original = x[ink].mean() - x[background].mean()
    return float((xhat[ink].mean() - xhat[background].mean()) / original), float(original)


def locality(filters: np.ndarray, top: float = 0.1) -> np.ndarray:
    energy = np.sort(filters.astype(np.float64) ** 2, axis=1)[:, ::-1]
    k = max(1, int(round(top * filters.shape[1])))
    return energy[:, :k].sum(axis=1) / np.maximum(energy.sum(axis=1), 1e-30)


def digit_likeness(filters: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    f = filters - filters.mean(axis=1, keepdims=True)
    m = class_means - class_means.mean(axis=1, keepdims=True)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-30)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
    return np.abs(f @ m.T).max(axis=1)


def epochs_to(history: list[dict[str, Any]], fraction: float = 0.95) -> int | None:
    values = [row.get("fve") for row in history]
    if not values or values[-1] is None:
        return None
    target = fraction * values[-1]
    return next((row["epoch"] for row, v in zip(history, values, strict=True) if v >= target), None)


def measure(
    run_dir: Path, test: Any, probe: Any, class_means: np.ndarray, pixel_std: np.ndarray
) -> dict[str, Any]:
    from sparsekit.runs.restore import load_run
    from sparsekit.evaluation.measures import evaluate
    from sparsekit.runs.writer import read_metrics

    model = load_run(run_dir)
    x = test.to_array(np.float32)
    xhat = np.clip(model.reconstruct(x, training=True), 0.0, 1.0)
    history = read_metrics(run_dir)
    measured = evaluate(model, x)
    filters = model.encoder_weights * pixel_std  # what each weight moves, see locality
    local = locality(filters)
    likeness = digit_likeness(filters, class_means)
    ratio, _ = contrast(x, xhat)
    seconds = [row["seconds"] for row in history]
    return {
        "epochs": len(history),
        "test_mse": measured["mse"],
        "test_fve": measured["fve"],
        "dead_units_test": measured["dead_units"],
        "mean_active_test": measured["mean_active"],
        "sharpness": sharpness(x, xhat, model.image_shape or (28, 28)),
        "contrast": ratio,
        "recognisable": float(probe.score(xhat, test.labels)),
        "locality_median": float(np.median(local)),
        "locality_quartiles": [float(q) for q in np.percentile(local, [25, 75])],
        "digit_likeness_median": float(np.median(likeness)),
        "epochs_to_95": epochs_to(history),
        "final_train_fve": history[-1].get("fve") if history else None,
        "seconds_per_epoch_median": float(np.median(seconds)) if seconds else None,
        "training_seconds": float(np.sum(seconds)) if seconds else None,
    }


def small_gif(run_dir: Path, out: Path) -> Path | None:
    from sparsekit.runs.writer import read_frames, save_progression_gif

    frames, _ = read_frames(run_dir / "progression.npz")
    if not frames:
        return None
    return save_progression_gif(
        out, frames, max_filters=SAMPLE_FILTERS, max_frames=GIF_FRAMES, scale=1
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="the seed-study comparison directory")
    ap.add_argument("--out", type=Path, default=Path("docs/study"))
    ap.add_argument("--data", default=None, help="data directory holding mnist/")
    args = ap.parse_args(argv)

    from sklearn.linear_model import LogisticRegression

    from sparsekit.data import load_mnist

    train = load_mnist(args.data, split="train", subset=20000)
    pixel_std = train.to_array(np.float32).std(axis=0)
    test = load_mnist(args.data, split="test")
    x_test = test.to_array(np.float32)
    class_means = np.stack([x_test[test.labels == c].mean(axis=0) for c in range(10)])
    probe = LogisticRegression(max_iter=300, C=0.1)
    probe.fit(train.to_array(np.float32), train.labels)
    results: dict[str, Any] = {
        "recognisable_originals": float(probe.score(x_test, test.labels)),
        "original_contrast": contrast(x_test, x_test)[1],
        "methods": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for method in METHODS:
        run_dir = args.study / method
        if not (run_dir / "checkpoint.npz").is_file():
            print(f"{method}: no run in {run_dir}", file=sys.stderr)
            continue
        results["methods"][method] = measure(run_dir, test, probe, class_means, pixel_std)
        small_gif(run_dir, args.out / f"{method}-progression.gif")
        for name in ("filters.png", "reconstructions.png"):
            if (run_dir / name).is_file():
                (args.out / f"{method}-{name}").write_bytes((run_dir / name).read_bytes())
        print(method, json.dumps(results["methods"][method]), flush=True)
    for name in ("report-curves.png", "report-seconds.png", "report.md"):
        if (args.study / name).is_file():
            (args.out / name).write_bytes((args.study / name).read_bytes())
    (args.out / "claims.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
