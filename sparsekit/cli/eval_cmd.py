"""``sparsekit eval RUN_DIR``: what the codes of a run are worth.

Measures on the test samples (reconstruction MSE, fraction of variance explained, L0 of the
training code and of the encoding code, dead and dense units, shrinkage, dictionary
coherence; on data with a ground truth such as ``synthetic-sae``, the MCC against the true
dictionary) and a linear probe: multinomial logistic regression trained on the codes of the
first :data:`~sparsekit.evaluation.measures.PROBE_SAMPLES` training samples (``--full-probe``:
all; ``model.encode``, the encoding-time support, e.g. αk for k-sparse), its error on the
test samples, beside the same probe on raw pixels, whose error is cached per data set and
settings (:mod:`sparsekit.evaluation.probe_cache`). The probe
(:func:`sparsekit.evaluation.measures.linear_probe`) standardises every feature with
training-set statistics, codes and pixels alike. Each phase is shown as it runs. Results go
to ``RUN_DIR/eval.json`` too. The work is :func:`sparsekit.evaluate_run`; this module parses
the options, shows the progress and prints the table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from sparsekit.evaluation.display import format_number
from sparsekit.evaluation.measures import PROBE_C, PROBE_MAX_ITER, PROBE_SAMPLES
from sparsekit.layout import EVAL_FILE
from sparsekit.runs.api import evaluate_run, run_directory


def eval_run(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (with its checkpoint).")],
    data: Annotated[
        Path | None,
        typer.Option(help="Data directory (default: the one the run was trained from)."),
    ] = None,
    subset: Annotated[
        int | None,
        typer.Option(help="Probe on the first N training samples (overrides the default sample)."),
    ] = None,
    test_subset: Annotated[
        int | None, typer.Option(help="Evaluate on the first N test samples only.")
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
    full_probe: Annotated[
        bool,
        typer.Option(
            "--full-probe",
            help=f"Fit the probe on every training sample (default: the first {PROBE_SAMPLES}).",
        ),
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="Reuse the raw-pixel probe's error from the user cache (it depends only on "
            "the data and the probe settings).",
        ),
    ] = True,
) -> None:
    """Measure RUN_DIR's codes: reconstruction, sparsity, coherence and a linear probe."""
    run_dir = run_directory(run_dir)
    path = output if output is not None else run_dir / EVAL_FILE
    console = Console(stderr=True)
    with PhaseDisplay(console) as phases:
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
            full_probe=full_probe,
            cache=cache,
            progress=phases,
        )
    Console().print(result_table(result, run_dir))
    console.print(f"results written to {path}")


class PhaseDisplay:
    """``evaluate_run``'s progress on a Rich console: a spinner with the running phase and
    its elapsed time, and one line with the seconds of each phase when it is done (as the
    training command prints one line per epoch)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.label = ""
        self.started = 0.0

    def __enter__(self) -> PhaseDisplay:
        self.progress.start()
        return self

    def __call__(self, phase: str, detail: str) -> None:
        self._finish()
        self.label = f"{phase} ({detail})" if detail else phase
        self.started = time.perf_counter()
        self.task = self.progress.add_task(self.label, total=None)

    def _finish(self) -> None:
        if self.task is None:
            return
        seconds = time.perf_counter() - self.started
        self.progress.remove_task(self.task)
        self.task = None
        self.console.print(f"{self.label}: {seconds:.1f}s")

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._finish()
        self.progress.stop()


def _l0_labels(result: dict[str, Any]) -> tuple[str, str]:
    """Labels of the two L0 rows: which code each is, and which one the probe saw."""
    probed = (result.get("probe") or {}).get("code")
    training = "L0, training code"
    encoding = "L0, encoding code"
    if probed == "training":
        return f"{training} (probed)", encoding
    if probed == "encoding":
        return training, f"{encoding} (probed)"
    return training, encoding


def result_table(result: dict[str, Any], run_dir: Path) -> Table:
    """The table ``sparsekit eval`` prints for ``result`` (what :func:`evaluate_run` returns)."""
    test, probe = result["test"], result["probe"]
    images = result.get("images", False)
    table = Table(title=f"{run_dir} ({result['method']})", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("test images" if images else "test samples", str(result["n_test"]))
    table.add_row("mse", format_number(test["mse"], ".5f"))
    table.add_row("variance explained", format_number(test["fve"], ".4f"))
    training_label, encoding_label = _l0_labels(result)
    table.add_row(training_label, format_number(test["mean_active"], ".2f"))
    table.add_row(encoding_label, format_number(result.get("encoding_mean_active"), ".2f"))
    table.add_row("dead units", format_number(test["dead_units"], "d"))
    table.add_row("dense units (active on >10%)", format_number(test.get("dense_units"), "d"))
    table.add_row("shrinkage (mean |x^|/|x|)", format_number(test.get("shrinkage"), ".4f"))
    if "mcc" in test:
        table.add_row("MCC (vs the true dictionary)", format_number(test["mcc"], ".4f"))
    table.add_row("coherence", format_number(test["coherence"], ".4f"))
    if probe is None:
        table.add_row("linear probe", result.get("note", "-"))
    else:
        _probe_rows(table, probe, images)
    return table


def _probe_rows(table: Table, probe: dict[str, Any], images: bool) -> None:
    """The probe's rows: which probe ran (samples, C, iterations), then its errors."""
    n, available = probe["train_samples"], probe["train_samples_available"]
    samples = f"all {n}" if n == available else f"the first {n} of {available}"
    hint = "" if n == available else "; --full-probe: all"
    table.add_row(
        "linear probe",
        f"logistic regression, C {probe['C']}, max_iter {probe['max_iter']}, "
        f"{samples} training samples{hint}",
    )
    table.add_row(f"probe error, codes ({probe['code']} code)", f"{probe['codes_error']:.2%}")
    if "raw_pixels_error" in probe:
        cached = " (cached)" if probe.get("raw_pixels_cached") else ""
        label = "probe error, raw pixels" if images else "probe error, raw inputs"
        table.add_row(label, f"{probe['raw_pixels_error']:.2%}{cached}")
