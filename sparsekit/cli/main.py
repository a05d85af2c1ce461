"""Entry point of the ``sparsekit`` command and the handling of errors for all commands.

A :class:`~sparsekit.errors.SparsekitError` (a problem the user can fix) becomes one line on
stderr and its exit code; set ``SPARSEKIT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings

import typer

from sparsekit.backend.process import tune_process
from sparsekit.cli import (
    compare_cmd,
    data_cmd,
    eval_cmd,
    methods_cmd,
    plugin_cmd,
    runs_cmd,
    sweep_cmd,
    train_cmd,
)
from sparsekit.errors import EXIT_INTERRUPTED, SparsekitError
from sparsekit.files import first_line

app = typer.Typer(
    name="sparsekit",
    help="Learn sparse codes: sparse autoencoders and sparse coding with hand-written gradients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train", context_settings=train_cmd.CONTEXT)(train_cmd.train)
app.command("list")(methods_cmd.list_methods)
app.command("gradcheck", context_settings=plugin_cmd.CONTEXT)(plugin_cmd.gradcheck)
app.command("new-plugin")(plugin_cmd.new_plugin)
app.command("download")(data_cmd.download)
app.command("export")(runs_cmd.export)
app.command("import-saelens")(runs_cmd.import_saelens)
app.command("encode")(runs_cmd.encode)
app.command("show")(runs_cmd.show)
app.command("eval")(eval_cmd.eval_run)
app.command("compare")(compare_cmd.compare)
app.command("report")(compare_cmd.report)
app.command("sweep")(sweep_cmd.sweep)


def error_line(message: str) -> None:
    print(f"sparsekit: error: {message}", file=sys.stderr)


def _is_usage_error(exc: BaseException) -> bool:
    """A Click/Typer usage error (unknown option, missing argument, a value of the wrong type)."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A library warning as the command shows it: one line, no source line under it."""
    text = str(message).strip().splitlines()
    print(f"sparsekit: warning: {text[0] if text else category.__name__}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; never shows a traceback for a user error."""
    with warnings.catch_warnings():  # restored on return: the command's display only
        warnings.showwarning = _warning_line
        _main(argv)


def _main(argv: list[str] | None) -> None:
    # A program, unlike a library, may tune its process (docs/performance.md, "Process").
    tune_process()
    # SIGTERM ends a command like Ctrl-C (one line, exit 130); training installs handlers
    # that stop after the current step instead (sparsekit.cli.stop).
    previous = None
    if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        # Not standalone: usage errors come here, to be shown as one line like our own.
        code = app(args=argv, prog_name="sparsekit", standalone_mode=False)
    except SparsekitError as exc:
        if os.environ.get("SPARSEKIT_DEBUG"):
            raise
        error_line(first_line(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `sparsekit`: the help text
            exc.show()
            sys.exit(exc.exit_code)
        if not _is_usage_error(exc) or os.environ.get("SPARSEKIT_DEBUG"):
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = exc.format_message().strip().splitlines()
        error_line((message[0] if message else type(exc).__name__) + hint)
        sys.exit(exc.exit_code)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    # Typer turns Ctrl-C outside training into exit code 130, returned when not standalone.
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        if code == EXIT_INTERRUPTED:
            error_line("interrupted")
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
