"""``sparsekit eval RUN_DIR``: what the codes of a run are worth.

Measures on the test images (reconstruction MSE, fraction of variance explained, L0, dead
and dense units, shrinkage, dictionary coherence; on data with a ground truth such as
``synthetic-sae``, the MCC against the true dictionary) and a linear probe: multinomial logistic regression trained on
the codes of the training images (``model.encode``, the encoding-time support, e.g. αk for
k-sparse), its error on the test images, beside the same probe on raw pixels. The probe
(:func:`sparsekit.measures.linear_probe`) standardises every feature with training-set
statistics, codes and pixels alike. Results go to ``RUN_DIR/eval.json`` too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.errors import CheckpointError, DataError, ParameterError
from sparsekit.measures import PROBE_C, PROBE_MAX_ITER

EVAL_FILE = "eval.json"


def _positive(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise ParameterError(f"{name} must be a positive number of samples, got {value}")


def _load_split(spec: dict[str, Any], data: Path | None, split: str, subset: int | None) -> Any:
    from sparsekit.data import load_dataset

    name = spec.get("spec")
    if not name:
        raise CheckpointError(
            "the run was trained on data given in memory; it does not say which data to evaluate on"
        )
    folder = data if data is not None else spec.get("data")
    return load_dataset(name, folder, split=split, subset=subset, download=False)


def _preprocessed(run_dir: Path, dataset: Any) -> Any:
    """``dataset`` through the run's stored preprocessing (mean removal, ZCA), if any."""
    from sparsekit.checkpoint import _read_preprocessing
    from sparsekit.data import Preprocessed

    stored = _read_preprocessing(run_dir / "preprocessing.npz")
    return Preprocessed.from_dict(dataset, stored) if stored is not None else dataset


def evaluate_run(
    run_dir: Path,
    *,
    data: Path | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    raw: bool = True,
    C: float = PROBE_C,
    max_iter: int = PROBE_MAX_ITER,
    training_code: bool = False,
) -> dict[str, Any]:
    """Measures and probe errors of the run in ``run_dir`` (what ``sparsekit eval`` prints)."""
    from sparsekit.checkpoint import load_run
    from sparsekit.measures import evaluate, linear_probe

    _positive(subset, "subset")
    _positive(test_subset, "test-subset")
    if not C > 0:
        raise ParameterError(f"C must be > 0, got {C}")
    if max_iter < 1:
        raise ParameterError(f"max-iter must be >= 1, got {max_iter}")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    model = load_run(run_dir)
    spec = (getattr(model, "run_meta", {}) or {}).get("data_spec") or {}
    train_raw = _load_split(spec, data, "train", subset)
    test_raw = _load_split(spec, data, "test", test_subset)
    if train_raw.dim != model.dim:
        raise DataError(
            f"{train_raw.name}: samples have {train_raw.dim} features, the model of {run_dir} "
            f"expects {model.dim}"
        )
    train_set, test_set = _preprocessed(run_dir, train_raw), _preprocessed(run_dir, test_raw)
    result: dict[str, Any] = {
        "run": str(run_dir),
        "method": model.method.name,
        "method_params": model.method.get_params(),
        "n_train": len(train_set),
        "n_test": len(test_set),
    }
    from sparsekit.data import ground_truth

    truth = ground_truth(str(spec.get("spec", "")))  # None unless the data has one
    start = time.perf_counter()
    result["test"] = evaluate(model, test_set, truth=truth)
    labels_train, labels_test = train_raw.labels, test_raw.labels
    if labels_train is None or labels_test is None:
        result["probe"] = None
        result["note"] = f"{train_raw.name} has no labels: no linear probe"
    else:
        codes_train = model.encode(train_set, training=training_code)
        codes_test = model.encode(test_set, training=training_code)
        settings = {"C": C, "max_iter": max_iter}
        probe = {
            **settings,
            "solver": "lbfgs",
            "standardize": True,
            "code": "training" if training_code else "encoding",
        }
        t0 = time.perf_counter()
        probe["codes_error"] = linear_probe(
            codes_train, labels_train, codes_test, labels_test, **settings
        )
        probe["codes_seconds"] = round(time.perf_counter() - t0, 2)
        if raw:
            t0 = time.perf_counter()
            probe["raw_pixels_error"] = linear_probe(
                train_raw.to_array(), labels_train, test_raw.to_array(), labels_test, **settings
            )
            probe["raw_pixels_seconds"] = round(time.perf_counter() - t0, 2)
        result["probe"] = probe
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (with its checkpoint).")],
    data: Annotated[
        Path | None,
        typer.Option(help="Data directory (default: the one the run was trained from)."),
    ] = None,
    subset: Annotated[
        int | None, typer.Option(help="Probe on the first N training images only.")
    ] = None,
    test_subset: Annotated[
        int | None, typer.Option(help="Evaluate on the first N test images only.")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw/--no-raw", help="Also probe raw pixels (the baseline).")
    ] = True,
    C: Annotated[
        float, typer.Option("--C", help="Inverse L2 strength of the logistic regression.")
    ] = PROBE_C,
    max_iter: Annotated[int, typer.Option(help="L-BFGS iterations of the probe, at most.")] = (
        PROBE_MAX_ITER
    ),
    training_code: Annotated[
        bool,
        typer.Option(
            "--training-code/--encoding-code",
            help="Probe the training-time code instead of the encoding one (e.g. alpha*k).",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--json", help=f"Where to write the results (default: RUN_DIR/{EVAL_FILE})."),
    ] = None,
) -> None:
    """Measure RUN_DIR's codes: reconstruction, sparsity, coherence and a linear probe."""
    from sparsekit.errors import OutputError
    from sparsekit.files import write_atomic

    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    console = Console(stderr=True)
    console.print(f"evaluating {run_dir} ...")
    result = evaluate_run(
        run_dir,
        data=data,
        subset=subset,
        test_subset=test_subset,
        raw=raw,
        C=C,
        max_iter=max_iter,
        training_code=training_code,
    )
    test, probe = result["test"], result["probe"]
    table = Table(title=f"{run_dir} ({result['method']})", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("test images", str(result["n_test"]))
    table.add_row("mse", _fmt(test["mse"], ".5f"))
    table.add_row("variance explained", _fmt(test["fve"], ".4f"))
    table.add_row("mean active (L0)", _fmt(test["mean_active"], ".2f"))
    table.add_row("dead units", _fmt(test["dead_units"], "d"))
    table.add_row("dense units (active on >10%)", _fmt(test.get("dense_units"), "d"))
    table.add_row("shrinkage (mean |x^|/|x|)", _fmt(test.get("shrinkage"), ".4f"))
    if "mcc" in test:
        table.add_row("MCC (vs the true dictionary)", _fmt(test["mcc"], ".4f"))
    table.add_row("coherence", _fmt(test["coherence"], ".4f"))
    if probe is None:
        table.add_row("linear probe", result.get("note", "-"))
    else:
        settings = f"(logistic regression, C {probe['C']}, max_iter {probe['max_iter']}, {result['n_train']} training images)"
        table.add_row("probe error, codes", f"{probe['codes_error']:.2%} {settings}")
        if "raw_pixels_error" in probe:
            table.add_row("probe error, raw pixels", f"{probe['raw_pixels_error']:.2%}")
    Console().print(table)
    path = output if output is not None else run_dir / EVAL_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    write_atomic(path, (json.dumps(result, indent=2) + "\n").encode())
    console.print(f"results written to {path}")
