"""A run's preprocessing parameters (mean removal, ZCA): ``preprocessing.npz``.

Every function that feeds data to a run's model passes it through them first, so new data is
transformed exactly as the training data was.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.errors import CheckpointError
from sparsekit.files import first_line, write_atomic
from sparsekit.layout import PREPROCESSING

PathLike = str | os.PathLike[str]


def save_preprocessing(run_dir: PathLike, dataset: Any) -> Path:
    """Store the mean-removal / ZCA parameters of ``dataset`` (a
    :class:`~sparsekit.data.Preprocessed`) as ``run_dir/preprocessing.npz``, atomically.

    Returns the path written. :func:`read_preprocessing` reads it back.
    """
    params = dataset.to_dict()
    arrays = {"remove_mean": np.asarray(params["remove_mean"])}
    if params["zca"] is not None:
        arrays.update({f"zca_{k}": np.asarray(v) for k, v in params["zca"].items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(run_dir) / PREPROCESSING
    write_atomic(path, buffer.getvalue())
    return path


def read_preprocessing(location: PathLike) -> dict[str, Any] | None:
    """The preprocessing parameters of a run (a run directory or the ``.npz`` file itself),
    as :meth:`~sparsekit.data.Preprocessed.from_dict` takes them; None when the run has none.
    """
    p = Path(location)
    if p.is_dir():
        p = p / PREPROCESSING
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{p}: unreadable preprocessing parameters ({first_line(exc)})"
        ) from None
    zca = None
    if "zca_mean" in arrays:
        zca = {
            "mean": arrays["zca_mean"],
            "matrix": arrays.get("zca_matrix"),
            "epsilon": float(arrays.get("zca_epsilon", 1e-2)),
        }
    return {"remove_mean": bool(arrays.get("remove_mean", False)), "zca": zca}
