"""What a learned code is worth: reconstruction, sparsity, the dictionary, a linear probe.

The measures of ``docs/methods.md`` ("Measures worth reporting for every run"):

* **mse** – mean squared reconstruction error per entry, ``‖X̂ − X‖²_F / (N·D)``.
* **fve** – fraction of variance explained, ``1 − SSE/SST`` with ``SST = ‖X − x̄‖²_F`` taken
  around the data mean: 1 for a perfect reconstruction, 0 for predicting the mean of every
  feature, negative when worse than that.
* **mean_active** – L0, the mean number of active units per sample (``|h| > 1e-3``, or the
  k kept units of a top-k support; the trainer's convention).
* **dead_units** – units active for no sample of the data.
* **coherence** – mutual coherence ``max_{i≠j} |⟨d_i, d_j⟩|`` of the unit-normalised atoms
  (decoder rows).
* **dense_units** – units active for more than :data:`DENSE_FRACTION` (10%) of the samples.
* **shrinkage** – the mean over samples of ``‖x̂‖ / ‖x‖`` (samples with ``‖x‖ > 1e-6``; ``x̂``
  includes the decoder bias): below 1 when the code shrinks magnitudes, as an L1 penalty does.
* **recovery** – on synthetic data, the distance of the matched atoms to the ground truth
  (:func:`sparsekit.data.recovery_summary`).
* **mcc** – on data with a ground truth, the mean ``|cos|`` between decoder atoms and true
  features paired one to one by the Hungarian algorithm (:func:`mcc`; SynthSAEBench's MCC).
* **linear probe** – test error of a multinomial logistic regression trained on the codes
  (:func:`linear_probe`).

The trainer logs the cheap ones every epoch (``fve`` and ``coherence`` beside ``mse``,
``mean_active`` and ``dead_units``); :func:`evaluate` computes them for a trained model on any
data set in one pass.

This module imports only NumPy at import time; scikit-learn (for the probe) is an optional
dependency (``pip install 'sparsekit[eval]'``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from sparsekit.backend.process import own_threads
from sparsekit.core.step import forward
from sparsekit.data.dataset import ArrayDataset, Dataset
from sparsekit.data.recovery import recovery_summary
from sparsekit.data.synthetic import SparseCodingProblem
from sparsekit.errors import MissingDependencyError, ParameterError
from sparsekit.training.metrics import (
    COHERENCE_CHUNK,
    DENSE_FRACTION,
    VarianceAccumulator,
    coherence,
    dead_units,
    dense_units,
    fraction_variance_explained,
    fve_from_sums,
)
from sparsekit.training.trainer import add_active_counts

__all__ = [
    "COHERENCE_CHUNK",
    "DENSE_FRACTION",
    "MissingDependencyError",
    "VarianceAccumulator",
    "coherence",
    "dead_units",
    "dense_units",
    "mcc",
    "code_mean_active",
    "evaluate",
    "fraction_variance_explained",
    "fve_from_sums",
    "linear_probe",
    "probe_features",
    "select_C",
]

#: Default inverse regularisation strength of the probe (scikit-learn's ``C``). Chosen by
#: :func:`select_C` on the last 10,000 MNIST training images from {0.001, ..., 1}: 0.01 won for
#: raw pixels and for every k-sparse code tried (docs/results.md).
PROBE_C = 0.01
#: Default iteration cap of the probe's L-BFGS solver.
PROBE_MAX_ITER = 1000
#: Training samples the probe of ``sparsekit eval`` fits on by default: the first 10,000 of
#: the training split (``--full-probe``: all of them). The fit's cost grows with the samples
#: (all 60,000 of MNIST: 226 CPU s for the quick-start run, 98% of it in the two probes);
#: 10,000 cost a sixth of that and read about 1.3 points higher than the full fit (quick-start
#: run, 1 epoch: codes 3.81% vs 2.58%, pixels 8.75% vs 7.39%): the ranking of codes against
#: pixels, what the probe is for, is the same.
PROBE_SAMPLES = 10000


# --------------------------------------------------------------------------- measures


def mcc(true_features: Any, learned: Any) -> float:
    """Mean max cosine after one-to-one matching: the MCC of SynthSAEBench.

    ``true_features`` (N×D) and ``learned`` (H×D, e.g. decoder rows) are compared row by row
    after normalising every row to unit length; ``C = |cos|`` (sign ignored) and the Hungarian
    algorithm (``scipy.optimize.linear_sum_assignment``, rectangular) pairs ``min(N, H)``
    rows so that the total ``|cos|`` is largest. The MCC is the mean of the paired ``|cos|``:
    1 when every learned row is a true feature (or every true feature is learned), about the
    typical largest chance overlap for random directions. Zero rows match nothing (cos 0).
    """
    from scipy.optimize import linear_sum_assignment  # imported here: scipy is slow to import

    t = np.asarray(true_features, dtype=np.float64)
    e = np.asarray(learned, dtype=np.float64)
    if t.ndim != 2 or e.ndim != 2 or t.shape[1] != e.shape[1]:
        raise ParameterError(
            f"mcc needs two (rows x dim) arrays of the same dim, got {t.shape} and {e.shape}"
        )
    if t.shape[0] == 0 or e.shape[0] == 0:
        raise ParameterError("mcc needs at least one row on each side")
    if not (np.isfinite(t).all() and np.isfinite(e).all()):
        raise ParameterError("mcc: the features contain NaN or infinite values")
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-300)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-300)
    similarity = np.abs(t @ e.T)
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return float(similarity[rows, cols].mean())


# --------------------------------------------------------------------------- whole runs


def evaluate(
    model: Any,
    data: Any,
    *,
    truth: Any = None,
    training: bool = True,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """The measures of ``model`` on ``data`` (an array, a Dataset or a synthetic problem).

    One pass: ``mse``, ``fve``, ``mean_active`` (L0) and ``dead_units`` of the code
    (``training=True``: the support used in training, e.g. k units for k-sparse, as the
    trainer reports; ``False``: the encoding-time support, e.g. αk), ``coherence`` of the
    decoder atoms, ``dense_units`` (active on more than 10% of the samples), ``shrinkage``
    (mean ``‖x̂‖/‖x‖``) and ``n``. With a ground-truth dictionary (``truth``: D×atoms columns;
    by default ``data.ground_truth`` when ``data`` has one, e.g. a ``synthetic-sae`` data set,
    or ``data.dictionary`` for a :class:`~sparsekit.data.SparseCodingProblem`) also ``mcc``
    (:func:`mcc` of the decoder atoms) and, when the model has at least as many units as
    there are true atoms, ``recovery_max``, ``recovery_mean``, ``recovery_median`` and
    ``recovered`` (fraction of true atoms within 0.1).
    """
    dataset, truth = _dataset_and_truth(data, truth)
    if dataset.dim != model.dim:
        raise ParameterError(
            f"{dataset.name}: samples have {dataset.dim} features, the model expects {model.dim}"
        )
    n = len(dataset)
    if n < 1:
        raise ParameterError(f"{dataset.name}: no samples to evaluate on")
    sse, sst, ratio_sum, ratio_n, counts = _reconstruction_sums(
        model, dataset, training=training, batch_size=batch_size
    )
    result: dict[str, Any] = {
        "n": n,
        "mse": sse / (n * dataset.dim),
        "fve": fve_from_sums(sse, sst),
        "mean_active": float(counts.sum()) / n,
        "dead_units": dead_units(counts),
        "dense_units": dense_units(counts, n),
        "shrinkage": ratio_sum / ratio_n if ratio_n else None,
        "coherence": coherence(model.decoder_weights),  # (NumPy: the model's host copy)
    }
    if truth is not None:
        result.update(_truth_measures(np.asarray(truth), np.asarray(model.decoder_weights)))
    return result


def code_mean_active(
    model: Any, data: Any, *, training: bool = False, batch_size: int = 1024
) -> float:
    """L0 of one of the model's codes on ``data``: mean active units per sample.

    ``training=False`` (default) measures the encoding-time code that ``model.encode``
    returns and the probe sees (e.g. αk units for k-sparse); ``True`` the training-time one
    (k), as :func:`evaluate` reports. Active means what the trainer counts (the kept units
    of a top-k support, else ``|h| > 1e-3``).
    """
    dataset, _ = _dataset_and_truth(data, None)
    xp = model.backend.xp
    active = xp.zeros(model.hidden, dtype=xp.int64)
    for x in model.batches(dataset, batch_size):
        fwd = forward(model.method, model.backend, model.params, x, training=training)
        add_active_counts(xp, active, fwd, model.hidden)
    return float(active.sum()) / max(len(dataset), 1)


def _dataset_and_truth(data: Any, truth: Any) -> tuple[Dataset, Any]:
    """``data`` as a :class:`Dataset`, and the true dictionary: ``truth``, else the one that
    ``data`` carries (a synthetic problem's dictionary, a data set's ``ground_truth``)."""
    if isinstance(data, SparseCodingProblem):
        if truth is None:
            truth = data.dictionary
        data = data.dataset
    if truth is None:
        truth = getattr(data, "ground_truth", None)
    dataset = data if isinstance(data, Dataset) else ArrayDataset(np.asarray(data), name="input")
    return dataset, truth


def _reconstruction_sums(
    model: Any, dataset: Dataset, *, training: bool, batch_size: int
) -> tuple[float, float, float, int, np.ndarray]:
    """One pass over ``dataset``: (SSE, SST, sum of ‖x̂‖/‖x‖, rows in that sum, active counts
    per unit, on the host)."""
    backend, xp = model.backend, model.backend.xp
    variance = VarianceAccumulator(xp)
    sse = 0.0
    ratio_sum, ratio_n = 0.0, 0
    active = xp.zeros(model.hidden, dtype=xp.int64)
    for x in model.batches(dataset, batch_size):  # centred for a centred model: same SSE, SST
        fwd = forward(model.method, backend, model.params, x, training=training)
        diff = fwd.xhat - x
        sse += float(xp.vdot(diff, diff))
        x_norm = xp.sqrt(xp.einsum("ij,ij->i", x, x))
        xhat_norm = xp.sqrt(xp.einsum("ij,ij->i", fwd.xhat, fwd.xhat))
        keep = x_norm > 1e-6
        ratio_sum += float((xhat_norm[keep] / x_norm[keep]).sum(dtype=xp.float64))
        ratio_n += int(keep.sum())
        variance.add(x)
        add_active_counts(xp, active, fwd, model.hidden)
    return sse, variance.sst, ratio_sum, ratio_n, backend.to_numpy(active)


def _truth_measures(truth: np.ndarray, decoder: np.ndarray) -> dict[str, Any]:
    """``mcc`` of the decoder atoms against the true ones (``truth``: D×atoms), and the
    recovery measures when there are at least as many units as true atoms."""
    result: dict[str, Any] = {"mcc": mcc(truth.T, decoder)}
    if decoder.shape[0] >= truth.shape[1]:
        summary = recovery_summary(truth, decoder.T)
        result.update(
            recovery_max=summary["max"],
            recovery_mean=summary["mean"],
            recovery_median=summary["median"],
            recovered=summary["recovered"],
        )
    return result


# --------------------------------------------------------------------------- linear probe


def _sklearn_linear_model() -> Any:
    try:
        from sklearn import linear_model
    except ImportError:
        raise MissingDependencyError(
            "the linear probe needs scikit-learn: pip install 'sparsekit[eval]'"
        ) from None
    return linear_model


def probe_features(
    train: Any, test: Any, *, standardize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The probe's inputs: float64 copies, standardised with the *training* statistics.

    Each feature is centred and divided by its training-set standard deviation (features
    constant on the training set are only centred). Raw pixels and codes go through the
    same transform, so their probe errors compare like with like.
    """
    tr = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    te = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    if tr.shape[1] != te.shape[1]:
        raise ParameterError(
            f"training features have {tr.shape[1]} columns but test features {te.shape[1]}"
        )
    if not standardize:
        return tr, te
    mean = tr.mean(axis=0)
    std = tr.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return (tr - mean) / std, (te - mean) / std


def linear_probe(
    train_codes: Any,
    train_labels: Any,
    test_codes: Any,
    test_labels: Any,
    *,
    C: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
    standardize: bool = True,
    tol: float = 1e-4,
    return_model: bool = False,
    one_blas_thread: bool = True,
) -> Any:
    """Test error (fraction misclassified) of a linear classifier trained on the codes.

    The probe is scikit-learn's multinomial ``LogisticRegression`` (L2 penalty of inverse
    strength ``C``, L-BFGS for at most ``max_iter`` iterations, tolerance ``tol``). With
    ``standardize`` (default) every feature is first standardised with the training-set
    mean and standard deviation (:func:`probe_features`), which makes one ``C`` and one
    iteration budget fit codes of any scale and raw pixels alike. With ``return_model``
    returns ``(error, classifier)``. ``one_blas_thread`` (default) fits with BLAS on one
    thread (:func:`sparsekit.backend.process.own_threads`; ``False``: BLAS's own default).
    The probe's products are N×D by D×(classes): too thin to split well, so extra BLAS
    threads mostly spin, and on a busy machine they steal from each other (10,000 MNIST
    pixels: 25.7 CPU s with OpenBLAS's default threads, 5.7 s with one; the same 88
    iterations and error).
    """
    linear_model = _sklearn_linear_model()
    y_train = np.asarray(train_labels).ravel()
    y_test = np.asarray(test_labels).ravel()
    if len(y_train) != len(train_codes) or len(y_test) != len(test_codes):
        raise ParameterError(
            f"codes and labels differ in length: {len(train_codes)} training codes with "
            f"{len(y_train)} labels, {len(test_codes)} test codes with {len(y_test)} labels"
        )
    if len(np.unique(y_train)) < 2:
        raise ParameterError("the probe needs at least two classes in the training labels")
    if not C > 0:
        raise ParameterError(f"C must be > 0, got {C}")
    x_train, x_test = probe_features(train_codes, test_codes, standardize=standardize)
    import warnings

    clf = linear_model.LogisticRegression(C=C, max_iter=int(max_iter), tol=tol, solver="lbfgs")
    threads = own_threads() if one_blas_thread else contextlib.nullcontext()
    with warnings.catch_warnings(), threads:
        # A probe that stops at max_iter is still a probe; the budget is part of its settings.
        warnings.filterwarnings("ignore", message=".*(converge|iterations).*")
        clf.fit(x_train, y_train)
        error = float(np.mean(clf.predict(x_test) != y_test))
    return (error, clf) if return_model else error


def select_C(
    train_codes: Any,
    train_labels: Any,
    grid: Any = (0.01, 0.1, 1.0),
    *,
    validation: int | float = 10000,
    max_iter: int = PROBE_MAX_ITER,
    standardize: bool = True,
) -> tuple[float, dict[float, float]]:
    """The probe's ``C`` chosen on held-out *training* samples (never the test set).

    Fits :func:`linear_probe` on all but the last ``validation`` training samples (a count,
    or a fraction when < 1) for every ``C`` of ``grid`` and scores it on those last samples.
    Returns ``(best C, {C: validation error})``; ties go to the smaller ``C`` (the stronger
    regularisation). Standardisation statistics come from the fitting part only.
    """
    x = np.asarray(train_codes)
    y = np.asarray(train_labels).ravel()
    n = len(x)
    n_val = int(round(validation * n)) if 0 < validation < 1 else int(validation)
    if not 0 < n_val < n:
        raise ParameterError(f"validation must leave samples on both sides, got {validation}")
    grid = sorted(float(c) for c in grid)
    if not grid:
        raise ParameterError("the grid of C values is empty")
    scores = {
        c: linear_probe(
            x[:-n_val],
            y[:-n_val],
            x[-n_val:],
            y[-n_val:],
            C=c,
            max_iter=max_iter,
            standardize=standardize,
        )  # fmt: skip
        for c in grid
    }
    best = min(grid, key=lambda c: (scores[c], c))
    return best, scores
