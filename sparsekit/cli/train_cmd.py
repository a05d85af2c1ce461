"""``sparsekit train METHOD``: train on a data set and write a run directory."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sparsekit.cli import runs_cmd
from sparsekit.cli.data_cmd import download_progress
from sparsekit.cli.options import RichProgress, command_signature, option_parameter, step_progress
from sparsekit.core.contract import Method
from sparsekit.core.declarations import did_you_mean
from sparsekit.data.download import ProgressCallback
from sparsekit.errors import ParameterError
from sparsekit.methods.registry import load_registry
from sparsekit.runs.api import start_run
from sparsekit.training.settings import BY_NAME, RUN_SETTINGS, Setting

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
        table.add_row(p.option, repr(p.default), p.help)
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


def parse_method_options(
    method_cls: type[Method], args: list[str], others: Iterable[str] = ()
) -> dict[str, Any]:
    """``["--k", "25", "--alpha=3"]`` -> ``{"k": "25", "alpha": "3"}``, checked by name.

    An unknown option gets a "did you mean" from the method's options and ``others`` (the
    command's own, e.g. ``--epochs``: Click sends a misspelt one here too).
    """
    declared = {p.option: p for p in method_cls.params}
    names = ", ".join(declared) or "none"
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ParameterError(f"unexpected argument {arg!r}")
        option, eq, value = arg.partition("=")
        if option.replace("_", "-") in declared:  # --pre_bias, as before, is --pre-bias
            option = option.replace("_", "-")
        else:
            hint = did_you_mean(option, [*declared, *others])
            raise ParameterError(
                f"unknown option {option} for method {method_cls.name!r} "
                f"({hint}its options: {names})"
            )
        if not eq:
            if i + 1 >= len(args):
                raise ParameterError(f"option {option} needs a value")
            i += 1
            value = args[i]
        values[declared[option].name] = declared[option].convert(value)
        i += 1
    return values


def command_options(ctx: typer.Context) -> list[str]:
    """Every long option of ``ctx``'s command (``--epochs``, ``--no-download``, ...)."""
    return [
        name
        for param in ctx.command.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]


def train(
    ctx: typer.Context,
    method: Annotated[
        str | None, typer.Argument(help="Method name (see `sparsekit list`).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue RUN_DIR from its checkpoint (--epochs may extend it)."),
    ] = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Data-parallel over the ranks of mpiexec/srun: one model, each rank reading "
            "its share of every batch (docs/distributed.md).",
        ),
    ] = False,
    shard_latents: Annotated[
        bool,
        typer.Option(
            "--shard-latents",
            help="With --distributed: each rank holds H/N latents of one model instead of the "
            "whole model (ksparse, topk with --aux-coef 0; docs/distributed.md).",
        ),
    ] = False,
    check_replicas: Annotated[
        bool,
        typer.Option(
            "--check-replicas",
            help="With --distributed: compare a checksum of every rank's weights each epoch.",
        ),
    ] = False,
    show_help: Annotated[
        bool,
        typer.Option("--help", "-h", help="Show this message (and METHOD's own options) and exit."),
    ] = False,
    **settings: Any,
) -> None:
    """Train METHOD and write filters, configuration and metrics to a run directory.

    The method's own parameters are options too, e.g. `sparsekit train ksparse --k 40`.
    """
    if check_replicas and not distributed and not show_help:
        raise ParameterError("--check-replicas compares the ranks of --distributed: add it")
    if shard_latents and not distributed and not show_help:
        raise ParameterError(
            "--shard-latents shards the latents over the ranks of --distributed: add it"
        )
    if show_help:
        _show_help(ctx, method)
    elif resume is not None and distributed:
        runs_cmd.check_resume_options(ctx, method)
        _resume_distributed(ctx, resume, settings, check_replicas)
    elif resume is not None:
        runs_cmd.check_resume_options(ctx, method)
        runs_cmd.resume_training(
            resume,
            epochs=settings["epochs"],
            data=settings["data"],
            snapshot_every=settings["snapshot_every"],
            checkpoint_every=settings["checkpoint_every"],
            download=settings["download"] if runs_cmd.given(ctx, "download") else None,
        )
    elif method is None:
        raise ParameterError("name the METHOD to train (see `sparsekit list`), or --resume RUN_DIR")
    elif distributed:
        _train_distributed(ctx, method, settings, check_replicas, shard_latents)
    else:
        _train_new(ctx, method, settings)


def train_signature(settings: Iterable[Setting] = RUN_SETTINGS) -> inspect.Signature:
    """The signature Typer builds ``sparsekit train``'s options from: METHOD, an option per
    setting (its flag, default and help from the declaration), then --resume and --help."""
    own = ("resume", "distributed", "shard_latents", "check_replicas", "show_help")
    return command_signature(train, [option_parameter(s) for s in settings], after=own)


train.__signature__ = train_signature()  # type: ignore[attr-defined]


def _show_help(ctx: typer.Context, method: str | None) -> None:
    """``--help``: the command's help, then METHOD's own options when one is named."""
    typer.echo(ctx.get_help(), nl=False)
    if method is not None:
        Console().print(method_options_table(load_registry().get(method)))
    else:
        typer.echo("Name a METHOD before --help to see its own options.")
    raise typer.Exit()


@contextmanager
def download_progress_on_demand(console: Console) -> Iterator[ProgressCallback]:
    """:func:`download_progress`, drawn from the first file downloaded on.

    A display started and stopped with nothing in it leaves an empty line on stderr: an
    error found while setting up the run (a bad --k, a missing file) would follow it.
    """
    with ExitStack() as stack:
        shown: list[ProgressCallback] = []

        def update(filename: str, done: int, total: int | None) -> None:
            if not shown:
                shown.append(stack.enter_context(download_progress(console)))
            shown[0](filename, done, total)

        yield update


def _train_new(ctx: typer.Context, method: str, settings: dict[str, Any]) -> None:
    """Start a new run of ``method`` with the command's ``settings`` and train it."""
    from sparsekit.cli.stop import stop_on_signals

    method_cls = load_registry().get(method)
    # Unset on the command line so that --resume can tell; a new run starts from 1.
    given = {k: v for k, v in settings.items() if v is not None or not BY_NAME[k].cli_unset}
    options = parse_method_options(method_cls, list(ctx.args), command_options(ctx))
    console = Console(stderr=True)
    with download_progress_on_demand(console) as progress:
        trainer, run_dir = start_run(
            method_cls(**options),
            progress=progress,
            **given,
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


def _train_distributed(
    ctx: typer.Context,
    method: str,
    settings: dict[str, Any],
    check_replicas: bool,
    shard_latents: bool = False,
) -> None:
    """``--distributed``: this process is one rank of ``mpiexec``'s job. Rank 0 writes the
    run and speaks; a rank that fails ends the whole job with one line naming it.
    ``--shard-latents``: each rank holds H/N latents (:func:`start_run`'s ``shard_latents``)."""
    from sparsekit.parallel import MPICommunicator, abort_on_error, same_on_every_rank

    comm = MPICommunicator()
    with abort_on_error(comm):
        with same_on_every_rank(comm):  # the same command line on every rank
            method_cls = load_registry().get(method)
            given = {
                k: v for k, v in settings.items() if v is not None or not BY_NAME[k].cli_unset
            }
            options = parse_method_options(method_cls, list(ctx.args), command_options(ctx))
            instance = method_cls(**options)
        trainer, run_dir = start_run(
            instance,
            distributed=comm,
            check_replicas=check_replicas,
            shard_latents=shard_latents,
            **given,
        )
        console = Console(stderr=True, quiet=comm.rank != 0)
        instance, config, train_set = trainer.method, trainer.config, trainer.dataset
        how = (
            f"about {config.hidden // comm.size} latents a rank, whole batches of "
            f"{config.batch_size} rows"
            if shard_latents
            else f"batch {config.batch_size} (about {config.batch_size // comm.size} rows a "
            f"rank), sums over {trainer.parallel.comm.name}"
        )
        console.print(
            f"training [bold]{instance.name}[/bold] {instance.get_params()} on {train_set.name} "
            f"({len(train_set)} samples) on {comm.size} ranks, {how}, hidden {config.hidden}, "
            f"{config.epochs} epochs, {trainer.backend.name}/{config.dtype}"
        )
        # No Ctrl-C checkpoint: a rank that stopped alone would leave the others waiting. The
        # last epoch's checkpoint (written atomically by rank 0) is what --resume reads.
        trainer.fit()
        console.print(f"run written to {run_dir}")
        if comm.rank == 0:
            typer.echo(str(run_dir))


def _resume_distributed(
    ctx: typer.Context, run_dir: Path, settings: dict[str, Any], check_replicas: bool
) -> None:
    """``--resume RUN_DIR --distributed``: continue a run on ``mpiexec``'s ranks."""
    from sparsekit.parallel import MPICommunicator, abort_on_error
    from sparsekit.runs.api import resume_trainer

    comm = MPICommunicator()
    with abort_on_error(comm):
        trainer = resume_trainer(
            run_dir,
            epochs=settings["epochs"],
            data=settings["data"],
            download=settings["download"] if runs_cmd.given(ctx, "download") else None,
            snapshot_every=settings["snapshot_every"],
            checkpoint_every=settings["checkpoint_every"],
            distributed=comm,
            check_replicas=check_replicas,
        )
        console = Console(stderr=True, quiet=comm.rank != 0)
        if trainer.epoch < trainer.config.epochs:
            console.print(
                f"resuming {run_dir} at epoch {trainer.epoch + 1} of {trainer.config.epochs} "
                f"on {comm.size} ranks"
            )
            trainer.fit()
        if comm.rank == 0:
            typer.echo(str(run_dir))
