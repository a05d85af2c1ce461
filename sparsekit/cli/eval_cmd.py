"""``sparsekit eval RUN_DIR``: what the codes of a run are worth.

Measures on the test images (reconstruction MSE, fraction of variance explained, L0, dead
and dense units, shrinkage, dictionary coherence; on data with a ground truth such as
``synthetic-sae``, the MCC against the true dictionary) and a linear probe: multinomial logistic regression trained on
the codes of the training images (``model.encode``, the encoding-time support, e.g. αk for
k-sparse), its error on the test images, beside the same probe on raw pixels. The probe
(:func:`sparsekit.evaluation.measures.linear_probe`) standardises every feature with training-set
statistics, codes and pixels alike. Results go to ``RUN_DIR/eval.json`` too. The work is
:func:`sparsekit.evaluate_run`; this module parses the options and prints the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.evaluation.display import format_number
from sparsekit.evaluation.measures import PROBE_C, PROBE_MAX_ITER
from sparsekit.layout import EVAL_FILE
from sparsekit.runs.api import evaluate_run, run_directory


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
    run_dir = run_directory(run_dir)
    path = output if output is not None else run_dir / EVAL_FILE
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
        output=path,
    )
    test, probe = result["test"], result["probe"]
    table = Table(title=f"{run_dir} ({result['method']})", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("test images", str(result["n_test"]))
    table.add_row("mse", format_number(test["mse"], ".5f"))
    table.add_row("variance explained", format_number(test["fve"], ".4f"))
    table.add_row("mean active (L0)", format_number(test["mean_active"], ".2f"))
    table.add_row("dead units", format_number(test["dead_units"], "d"))
    table.add_row("dense units (active on >10%)", format_number(test.get("dense_units"), "d"))
    table.add_row("shrinkage (mean |x^|/|x|)", format_number(test.get("shrinkage"), ".4f"))
    if "mcc" in test:
        table.add_row("MCC (vs the true dictionary)", format_number(test["mcc"], ".4f"))
    table.add_row("coherence", format_number(test["coherence"], ".4f"))
    if probe is None:
        table.add_row("linear probe", result.get("note", "-"))
    else:
        settings = f"(logistic regression, C {probe['C']}, max_iter {probe['max_iter']}, {result['n_train']} training images)"
        table.add_row("probe error, codes", f"{probe['codes_error']:.2%} {settings}")
        if "raw_pixels_error" in probe:
            table.add_row("probe error, raw pixels", f"{probe['raw_pixels_error']:.2%}")
    Console().print(table)
    console.print(f"results written to {path}")
