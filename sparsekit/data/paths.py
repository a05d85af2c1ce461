"""Where sparsekit keeps data sets on disk.

The data directory holds one folder per data set (``<data>/mnist/``,
``<data>/fashion-mnist/``). It is, in order of precedence: the explicit ``data`` argument
(the CLI's ``--data``), the environment variable ``SPARSEKIT_DATA``, or the per-user cache
directory ``platformdirs.user_cache_dir("sparsekit")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

#: Environment variable naming the data directory.
DATA_ENV = "SPARSEKIT_DATA"


def default_data_dir() -> Path:
    """The per-user cache directory used when nothing else is configured."""
    return Path(platformdirs.user_cache_dir("sparsekit"))


def resolve_data_dir(data: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data`` if given, else ``$SPARSEKIT_DATA``, else the user cache."""
    if data is not None and str(data) != "":
        return Path(data).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def dataset_dir(folder: str, data: str | os.PathLike[str] | None = None) -> Path:
    """``<data dir>/<folder>``, e.g. the folder MNIST files live in."""
    return resolve_data_dir(data) / folder


def find_data_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` as stored: the uncompressed file (``name`` without ``.gz``) or the
    gzip-compressed one. ``None`` if neither exists."""
    stem = name[:-3] if name.endswith(".gz") else name
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None
