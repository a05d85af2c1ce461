"""The errors sparsekit raises for problems a user can fix.

Every error here is a :class:`SparsekitError`. The command line prints ``str(error)`` as a
single line on stderr and exits with ``error.exit_code``; library users catch the class they
care about. Messages name the thing that is wrong (a file, a parameter, a plugin) and, where
it helps, what would fix it.

Every exit status of the ``sparsekit`` command is here: the ``EXIT_*`` constants, one per
kind of problem, each class's ``exit_code`` (one of them), and :data:`EXIT_CODES`, the table
that ``docs/errors.md`` shows (``scripts/error_table.py`` writes it from this module).
Subclasses elsewhere (``ChecksumError``, ``SweepFileError``, ...) inherit their parent's code.
"""

from __future__ import annotations

#: The command finished.
EXIT_OK = 0
#: Any other problem sparsekit detected; also ``gradcheck`` finding a gradient that is off.
EXIT_ERROR = 1
#: An impossible parameter or option value, an unknown option (also Typer's usage errors).
EXIT_PARAMETER = 2
EXIT_DATA = 3
EXIT_BACKEND = 4
EXIT_PLUGIN = 5
EXIT_CHECKPOINT = 6
EXIT_DIVERGENCE = 7
EXIT_OUTPUT = 8
EXIT_MISSING_DEPENDENCY = 9
EXIT_JOBS_FAILED = 10
#: Stopped by Ctrl-C (SIGINT) or SIGTERM (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130
#: ``sparsekit gradcheck``: a hand-written gradient differs from finite differences.
EXIT_GRADIENT_MISMATCH = EXIT_ERROR


class SparsekitError(Exception):
    """Base class of every error sparsekit raises on purpose."""

    exit_code: int = EXIT_ERROR


class ParameterError(SparsekitError, ValueError):
    """A hyperparameter or option has an impossible value."""

    exit_code = EXIT_PARAMETER


class DataError(SparsekitError):
    """A data file is missing, corrupt or of the wrong kind."""

    exit_code = EXIT_DATA


class DownloadError(DataError):
    """A data set could not be downloaded or failed its checksum."""

    exit_code = EXIT_DATA


class BackendError(SparsekitError):
    """The requested array backend (e.g. CuPy on a GPU) is not usable."""

    exit_code = EXIT_BACKEND


class PluginError(SparsekitError):
    """A plugin failed to load or register, or two methods share a name."""

    exit_code = EXIT_PLUGIN


class UnknownMethodError(PluginError, KeyError):
    """No registered method has the requested name."""

    exit_code = EXIT_PLUGIN

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SparsekitError):
    """A checkpoint or run directory is missing, corrupt or does not fit."""

    exit_code = EXIT_CHECKPOINT


class DivergenceError(SparsekitError):
    """Training produced NaN or infinite values."""

    exit_code = EXIT_DIVERGENCE


class OutputError(SparsekitError):
    """The output directory cannot be created or written."""

    exit_code = EXIT_OUTPUT


class MissingDependencyError(SparsekitError):
    """An optional dependency the requested feature needs is not installed (the message
    names the ``pip install`` command: scikit-learn for the probe, Dask for a cluster)."""

    exit_code = EXIT_MISSING_DEPENDENCY


class ClusterError(SparsekitError):
    """The Dask cluster cannot be started or reached."""

    exit_code = EXIT_ERROR


class ComparisonError(SparsekitError):
    """Every method of a comparison failed (or, with ``strict``, at least one did)."""

    exit_code = EXIT_JOBS_FAILED


class SweepFailedError(SparsekitError):
    """Every trial of a sweep failed (or, with ``--strict``, at least one did)."""

    exit_code = EXIT_JOBS_FAILED


class Interrupted(SparsekitError):
    """Training was stopped by a signal after writing its checkpoint."""

    exit_code = EXIT_INTERRUPTED


#: Every exit status of the ``sparsekit`` command: the error classes and what they mean.
EXIT_CODES: dict[int, tuple[tuple[str, ...], str]] = {
    EXIT_OK: ((), "success"),
    EXIT_ERROR: (
        ("SparsekitError", "ClusterError"),
        "any other problem sparsekit detected; `gradcheck`: a gradient is off",
    ),
    EXIT_PARAMETER: (
        ("ParameterError", "usage errors"),
        "an impossible parameter or option value, an unknown option",
    ),
    EXIT_DATA: (
        ("DataError", "DownloadError"),
        "a data file is missing, corrupt, of the wrong shape or type, holds NaN/inf or "
        "pickled objects",
    ),
    EXIT_BACKEND: (("BackendError",), "the GPU backend (CuPy) is not usable"),
    EXIT_PLUGIN: (("PluginError", "UnknownMethodError"), "an unknown method, a broken plugin"),
    EXIT_CHECKPOINT: (
        ("CheckpointError",),
        "a run directory or checkpoint is missing, corrupt, not numeric, belongs to another "
        "run, or cannot be written",
    ),
    EXIT_DIVERGENCE: (
        ("DivergenceError",),
        "training produced NaN or infinite values (the message names epoch and step)",
    ),
    EXIT_OUTPUT: (
        ("OutputError",),
        "the run directory cannot be created or written (read-only, a file in the way, disk full)",
    ),
    EXIT_MISSING_DEPENDENCY: (
        ("MissingDependencyError",),
        "an optional dependency is not installed (scikit-learn for `eval`, Dask for "
        "`sweep`); the message names the `pip install`",
    ),
    EXIT_JOBS_FAILED: (
        ("ComparisonError", "SweepFailedError"),
        "every method of a comparison or trial of a sweep failed (or, with `--strict`, one did)",
    ),
    EXIT_INTERRUPTED: (
        ("Interrupted",),
        "stopped by Ctrl-C (SIGINT) or SIGTERM; the run can be resumed",
    ),
}


def exit_code_table() -> str:
    """:data:`EXIT_CODES` as the Markdown table of ``docs/errors.md``."""
    rows = ["| Exit | Error class | Meaning |", "|---|---|---|"]
    for code, (classes, meaning) in EXIT_CODES.items():
        names = ", ".join(c if " " in c else f"`{c}`" for c in classes)
        rows.append(f"| {code} | {names} | {meaning} |")
    return "\n".join(rows)
