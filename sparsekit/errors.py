"""The errors sparsekit raises for problems a user can fix.

Every error here is a :class:`SparsekitError`. The command line prints ``str(error)`` as a
single line on stderr and exits with ``error.exit_code``; library users catch the class they
care about. Messages name the thing that is wrong (a file, a parameter, a plugin) and, where
it helps, what would fix it.
"""

from __future__ import annotations


class SparsekitError(Exception):
    """Base class of every error sparsekit raises on purpose."""

    exit_code: int = 1


class ParameterError(SparsekitError, ValueError):
    """A hyperparameter or option has an impossible value."""

    exit_code = 2


class DataError(SparsekitError):
    """A data file is missing, corrupt or of the wrong kind."""

    exit_code = 3


class DownloadError(DataError):
    """A data set could not be downloaded or failed its checksum."""

    exit_code = 3


class BackendError(SparsekitError):
    """The requested array backend (e.g. CuPy on a GPU) is not usable."""

    exit_code = 4


class PluginError(SparsekitError):
    """A plugin failed to load or register, or two methods share a name."""

    exit_code = 5


class UnknownMethodError(PluginError, KeyError):
    """No registered method has the requested name."""

    exit_code = 5

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SparsekitError):
    """A checkpoint or run directory is missing, corrupt or does not fit."""

    exit_code = 6


class DivergenceError(SparsekitError):
    """Training produced NaN or infinite values."""

    exit_code = 7
