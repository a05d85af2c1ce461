"""A cache of linear-probe errors that do not depend on the model: the raw-pixel baseline.

``sparsekit eval`` reports the probe on raw inputs beside the probe on a run's codes. The
raw-input probe depends only on the data and the probe's settings, yet it was the costlier
half of every evaluation (161 s of 245 s on MNIST in the README's example); every run
evaluated on the same data repeats it. Its error is therefore kept in the per-user cache
directory (``<user cache>/probe-cache/``, beside the downloaded data sets of
:func:`sparsekit.data.paths.default_data_dir`; never inside the package or a run), keyed by
a SHA-256 of the probe's training and test inputs, their labels, the probe settings and the
scikit-learn version. A changed byte of data or setting gives a new key; an unreadable or
unwritable cache only costs the fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.data.paths import default_data_dir
from sparsekit.errors import OutputError
from sparsekit.files import write_json

__all__ = ["PROBE_CACHE_FOLDER", "cached_probe_error", "probe_cache_dir", "probe_key"]

#: Folder of the user cache directory that holds the cached probe errors.
PROBE_CACHE_FOLDER = "probe-cache"


def probe_cache_dir() -> Path:
    """``<user cache>/probe-cache``: where cached probe errors live."""
    return default_data_dir() / PROBE_CACHE_FOLDER


def _sklearn_version() -> str:
    try:
        return metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:  # the probe itself will say how to install it
        return "none"


def probe_key(arrays: tuple[Any, ...], settings: Mapping[str, Any]) -> str:
    """A hex SHA-256 of ``arrays`` (dtype, shape and bytes of each) and ``settings``."""
    digest = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    tagged = {**settings, "scikit-learn": _sklearn_version()}
    digest.update(json.dumps(tagged, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cached_probe_error(
    key: str, fit: Callable[[], float], cache_dir: Path | None = None
) -> tuple[float, bool]:
    """``(error, True)`` when ``key`` is cached, else ``(fit(), False)`` after storing it.

    ``cache_dir`` defaults to :func:`probe_cache_dir`. A corrupt entry is refitted and
    rewritten; a cache that cannot be written (read-only home) is skipped silently: the
    error is still right, only the next evaluation pays the fit again.
    """
    folder = probe_cache_dir() if cache_dir is None else Path(cache_dir)
    path = folder / f"{key}.json"
    try:
        stored = json.loads(path.read_text())
        return float(stored["error"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    error = float(fit())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"error": error})
    except (OSError, OutputError):
        pass
    return error, False
