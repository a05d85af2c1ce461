"""Commands on finished (or interrupted) runs: ``export``, ``encode``, ``show``,
``import-saelens`` and the ``--resume`` side of ``sparsekit train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli.options import DownloadOption, RichProgress, step_progress
from sparsekit.errors import ParameterError
from sparsekit.evaluation.display import format_number
from sparsekit.runs.api import encode_run, resume_trainer, run_directory, run_summary

#: ``sparsekit train`` options that may be given together with ``--resume``.
RESUME_OPTIONS = frozenset(
    {"resume", "epochs", "data", "download", "snapshot_every", "checkpoint_every"}
    | {"distributed", "check_replicas"}  # where it runs, not what it trains
)


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and getattr(source, "name", "DEFAULT") != "DEFAULT"


def check_resume_options(ctx: typer.Context, method: str | None) -> None:
    """Refuse settings that would change a resumed run (only the length may change)."""
    if method is not None or ctx.args:
        raise ParameterError(
            "--resume continues a run with its own method and settings; drop the method name "
            "and its options"
        )
    for name in ctx.params:
        if name in RESUME_OPTIONS:
            continue
        if given(ctx, name):
            flag = "--" + name.replace("_", "-")
            raise ParameterError(
                f"{flag} cannot be changed when resuming (only --epochs, --data, --download, "
                "--snapshot-every and --checkpoint-every can)"
            )


def resume_training(
    run_dir: Path,
    *,
    epochs: int | None = None,
    data: Path | None = None,
    snapshot_every: int | None = None,
    checkpoint_every: int | None = None,
    download: bool | None = None,
) -> Path:
    """``sparsekit train --resume``: :func:`sparsekit.resume_trainer`, with progress and a
    clean stop on Ctrl-C/SIGTERM."""
    from sparsekit.cli.stop import stop_on_signals

    console = Console(stderr=True)
    trainer = resume_trainer(
        run_dir,
        epochs=epochs,
        data=data,
        download=download,
        snapshot_every=snapshot_every,
        checkpoint_every=checkpoint_every,
    )
    cfg = trainer.config
    if trainer.epoch >= cfg.epochs:
        console.print(
            f"{run_dir}: all {cfg.epochs} epochs are done; use --epochs N to train further"
        )
        typer.echo(str(run_dir))
        return run_dir
    with step_progress(console) as progress:
        trainer.callbacks.append(RichProgress(progress))
        console.print(
            f"resuming [bold]{trainer.method.name}[/bold] {trainer.method.get_params()} on "
            f"{trainer.dataset.name} ({len(trainer.dataset)} samples) at epoch "
            f"{trainer.epoch}/{cfg.epochs}"
        )
        with stop_on_signals(trainer, run_dir):  # Ctrl-C/SIGTERM: checkpoint, exit 130
            trainer.fit()
    console.print(f"run written to {run_dir}")
    typer.echo(str(run_dir))
    return run_dir


EXPORT_FORMATS = ("figures", "saelens")


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="figures: draw the run's figures again; saelens: SAELens cfg.json + "
            "sae_weights.safetensors.",
        ),
    ] = "figures",
    cols: Annotated[int | None, typer.Option(help="Filters per row (default: square).")] = None,
    scale: Annotated[int, typer.Option(help="Enlarge every pixel of the filter grids.")] = 1,
    max_filters: Annotated[int, typer.Option(help="Draw at most this many filters.")] = 400,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder (default: the run directory for figures, RUN_DIR/saelens "
            "for SAELens files)."
        ),
    ] = None,
) -> None:
    """Draw every figure of RUN_DIR again, or write its model in another format."""
    if format not in EXPORT_FORMATS:
        raise ParameterError(
            f"unknown export format {format!r} (choose from {', '.join(EXPORT_FORMATS)})"
        )
    run_dir = run_directory(run_dir)
    if format == "saelens":
        from sparsekit.interop.saelens import CFG_FILE, WEIGHTS_FILE, export_saelens

        target = out if out is not None else run_dir / "saelens"
        cfg = export_saelens(run_dir, target)
        console = Console(stderr=True)
        console.print(
            f"SAELens {cfg['architecture']} SAE, d_in {cfg['d_in']}, d_sae {cfg['d_sae']}"
        )
        note = cfg["metadata"].get("sparsekit_note")
        if note:
            console.print(f"note: {note}")
        typer.echo(str(target / CFG_FILE))
        typer.echo(str(target / WEIGHTS_FILE))
        return
    from sparsekit.runs.writer import render_run

    for path in render_run(run_dir, out, cols=cols, scale=scale, max_filters=max_filters):
        typer.echo(str(path))


def import_saelens(
    folder: Annotated[
        Path, typer.Argument(help="A SAELens directory (cfg.json + sae_weights.safetensors).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="The run directory to write (default: runs/<FOLDER name>-saelens)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="The data the SAE reads (a --dataset spec), for eval and figures."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Data directory for mnist / fashion-mnist.")
    ] = None,
) -> None:
    """Write a run directory from SAELens files, for encode, eval and export."""
    from sparsekit.interop.saelens import import_saelens as run_import

    target = out if out is not None else Path("runs") / f"{folder.name}-saelens"
    run_dir = run_import(folder, target, dataset=dataset, data=data)
    typer.echo(str(run_dir))


def encode(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    input: Annotated[
        str, typer.Argument(help="Data to encode: mnist, fashion-mnist, or a .npy/.npz/IDX file.")
    ],
    output: Annotated[
        Path, typer.Argument(help="Where to write the codes (.npy; .npz with --sparse).")
    ],
    data: Annotated[
        Path | None, typer.Option(help="Data directory for mnist / fashion-mnist.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="train or test (named data sets; default: train).")
    ] = None,
    subset: Annotated[int | None, typer.Option(help="Encode only the first N samples.")] = None,
    training: Annotated[
        bool,
        typer.Option(
            "--training-code/--encoding-code",
            help="Use the training-time support instead of the encoding one (e.g. alpha*k).",
        ),
    ] = False,
    download: DownloadOption = False,
    sparse: Annotated[
        bool,
        typer.Option(
            "--sparse",
            help="Write a SciPy CSR matrix (.npz, scipy.sparse.load_npz) instead of dense .npy.",
        ),
    ] = False,
) -> None:
    """Write the codes (N x hidden, .npy, or .npz with --sparse) of INPUT under the model of
    RUN_DIR."""
    codes = encode_run(
        run_dir,
        input,
        data_dir=data,
        split=split,
        subset=subset,
        download=download,
        training=training,
        output=output,
        sparse=sparse,
    )
    n = codes.shape[0]
    nonzeros = codes.nnz if sparse else int((codes != 0).sum())
    active = nonzeros / n if n else 0.0
    Console(stderr=True).print(
        f"encoded {n} samples of {input} into {codes.shape[1]} units "
        f"({active:.1f} active on average) -> {output}"
    )
    typer.echo(str(output))


def show(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Print a summary of RUN_DIR: method, settings, epochs and final measures."""
    info, meta = run_summary(run_dir)
    train = info["train"]
    data = info.get("data") or {}
    final = info["final"]
    table = Table(title=str(run_dir), show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    params = ", ".join(f"{k}={v}" for k, v in info["method_params"].items()) or "-"
    table.add_row("method", info["method"])
    table.add_row("parameters", params)
    table.add_row(
        "training",
        f"hidden {train.get('hidden')}, batch {train.get('batch_size')}, "
        f"{train.get('optimizer') if meta.get('optimizer', '') is not None else 'own update'} "
        f"lr {train.get('lr')}, "
        f"{'tied' if train.get('tied') else 'untied'}, {train.get('dtype')}, seed {train.get('seed')}",
    )
    table.add_row("data", f"{data.get('name', '-')} ({data.get('n', '-')} samples)")
    table.add_row("epochs", f"{info['epochs']} of {info['epochs_planned']}")
    table.add_row("final loss", format_number(final["loss"], ".5f"))
    table.add_row("final mse", format_number(final["mse"], ".5f"))
    table.add_row("mean active", format_number(final["mean_active"], ".2f"))
    table.add_row("dead units", format_number(final["dead_units"], "d"))
    table.add_row("seconds", format_number(info["total_seconds"], ".1f"))
    table.add_row("version", str(meta.get("sparsekit_version", "-")))
    Console().print(table)
