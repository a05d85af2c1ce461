"""``sparsekit train METHOD``: train on a data set and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli import runs_cmd
from sparsekit.cli.data_cmd import download_progress
from sparsekit.cli.options import (
    DataDirOption,
    DatasetOption,
    DownloadOption,
    RichProgress,
    SubsetOption,
    step_progress,
)
from sparsekit.core.contract import Method
from sparsekit.errors import ParameterError
from sparsekit.methods.registry import load_registry
from sparsekit.runs.api import start_run

#: Unknown ``--name value`` options are the method's own parameters.
# --help is the command's own option: with a METHOD it also lists that method's options.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def method_options_table(method_cls: type[Method]) -> Table:
    """The options a method adds to ``sparsekit train``: flag, default and meaning."""
    table = Table(
        title=f"Options of {method_cls.name}",
        title_justify="left",
        show_edge=False,
        header_style="bold",
    )
    table.add_column("option", no_wrap=True)
    table.add_column("default", no_wrap=True)
    table.add_column("meaning")
    for p in method_cls.params:
        table.add_row(f"--{p.name.replace('_', '-')}", repr(p.default), p.help)
    if not method_cls.params:
        table.add_row("(none)", "", f"{method_cls.name} has no options of its own")
    defaults = dict(method_cls.training_defaults)
    if defaults:
        table.caption = "recommended training settings: " + ", ".join(
            (f"--{k}" if v else f"--no-{k}") if isinstance(v, bool) else f"--{k} {v}"
            for k, v in ((k.replace("_", "-"), v) for k, v in defaults.items())
        )
        table.caption_justify = "left"
    return table


def parse_method_options(method_cls: type[Method], args: list[str]) -> dict[str, Any]:
    """``["--k", "25", "--alpha=3"]`` -> ``{"k": "25", "alpha": "3"}``, checked by name."""
    declared = {p.name: p for p in method_cls.params}
    names = ", ".join(f"--{n.replace('_', '-')}" for n in declared) or "none"
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ParameterError(f"unexpected argument {arg!r}")
        key, eq, value = arg[2:].partition("=")
        name = key.replace("-", "_")
        if name not in declared:
            raise ParameterError(
                f"unknown option --{key} for method {method_cls.name!r} (its options: {names})"
            )
        if not eq:
            if i + 1 >= len(args):
                raise ParameterError(f"option --{key} needs a value")
            i += 1
            value = args[i]
        values[name] = declared[name].convert(value)
        i += 1
    return values


def train(
    ctx: typer.Context,
    method: Annotated[
        str | None, typer.Argument(help="Method name (see `sparsekit list`).")
    ] = None,
    dataset: DatasetOption = "mnist",
    data: DataDirOption = None,
    download: DownloadOption = True,
    subset: SubsetOption = None,
    remove_mean: Annotated[
        bool, typer.Option(help="Subtract each sample's own mean (per-sample centring).")
    ] = False,
    zca: Annotated[
        bool, typer.Option(help="ZCA-whiten the data (parameters saved in the run directory).")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Number of hidden units (code size).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per minibatch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, momentum or adam.")] = None,
    momentum: Annotated[float | None, typer.Option(help="Momentum coefficient.")] = None,
    tied: Annotated[
        bool | None, typer.Option("--tied/--untied", help="Share encoder and decoder weights.")
    ] = None,
    center: Annotated[
        bool | None,
        typer.Option(
            "--center/--no-center",
            help="Subtract the training data's mean image (stored with the model; encode "
            "and eval apply it). Default: the method's (on for ksparse).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and shuffling.")] = 0,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    gpu: Annotated[bool, typer.Option("--gpu", help="Train on a CUDA GPU with CuPy.")] = False,
    out: Annotated[Path, typer.Option(help="Directory that receives the run directory.")] = Path(
        "runs"
    ),
    snapshot_every: Annotated[
        int | None, typer.Option(help="Add a frame to progression.gif every N epochs [1].")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option(help="Write checkpoint.npz every N epochs (and at the end) [1].")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue RUN_DIR from its checkpoint (--epochs may extend it)."),
    ] = None,
    show_help: Annotated[
        bool,
        typer.Option("--help", "-h", help="Show this message (and METHOD's own options) and exit."),
    ] = False,
) -> None:
    """Train METHOD and write filters, configuration and metrics to a run directory.

    The method's own parameters are options too, e.g. `sparsekit train ksparse --k 40`.
    """
    from sparsekit.cli.stop import stop_on_signals

    if show_help:
        typer.echo(ctx.get_help(), nl=False)
        if method is not None:
            Console().print(method_options_table(load_registry().get(method)))
        else:
            typer.echo("Name a METHOD before --help to see its own options.")
        raise typer.Exit()
    if resume is not None:
        runs_cmd.check_resume_options(ctx, method)
        runs_cmd.resume_training(
            resume,
            epochs=epochs,
            data=data,
            snapshot_every=snapshot_every,
            checkpoint_every=checkpoint_every,
            download=download if runs_cmd.given(ctx, "download") else None,
        )
        return
    if method is None:
        raise ParameterError("name the METHOD to train (see `sparsekit list`), or --resume RUN_DIR")
    method_cls = load_registry().get(method)
    console = Console(stderr=True)
    with download_progress(console) as progress:
        trainer, run_dir = start_run(
            method_cls(**parse_method_options(method_cls, list(ctx.args))),
            dataset,
            out=out,
            data=data,
            download=download,
            subset=subset,
            remove_mean=remove_mean,
            zca=zca,
            hidden=hidden,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            tied=tied,
            center=center,
            seed=seed,
            dtype=dtype,
            gpu=gpu,
            snapshot_every=1 if snapshot_every is None else snapshot_every,
            checkpoint_every=1 if checkpoint_every is None else checkpoint_every,
            progress=progress,
        )
    instance, config, train_set = trainer.method, trainer.config, trainer.dataset
    with step_progress(console) as progress:
        trainer.callbacks.append(RichProgress(progress))
        console.print(
            f"training [bold]{instance.name}[/bold] {instance.get_params()} on {train_set.name} "
            f"({len(train_set)} samples), hidden {config.hidden}, {config.epochs} epochs, "
            f"{config.optimizer} lr {config.lr}, {'tied' if config.tied else 'untied'}, "
            f"{trainer.backend.name}/{config.dtype}"
        )
        with stop_on_signals(trainer, run_dir):  # Ctrl-C/SIGTERM: checkpoint, exit 130
            trainer.fit()
    console.print(f"run written to {run_dir}")
    typer.echo(str(run_dir))
