"""MNIST and Fashion-MNIST as data sets.

Files live in ``<data dir>/mnist/`` or ``<data dir>/fashion-mnist/`` under their published
names (``train-images-idx3-ubyte.gz`` ...), gzip-compressed or not (then without ``.gz``).
Pixels stay ``uint8`` in memory (47 MB for the training set) and are scaled to [0, 1] when
the trainer takes a minibatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.data.arrays import ArrayFileDataset
from sparsekit.data.download import ProgressCallback, ensure_files, fetch_file, get_source
from sparsekit.data.idx import read_idx
from sparsekit.data.paths import find_data_file, resolve_data_dir
from sparsekit.data.sources import DataFile, DataSource
from sparsekit.errors import DataError, ParameterError

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10


class ChecksumError(DataError):
    """A data file is readable but is not the published file it is named after."""


def _read_checked(path: Path, spec: DataFile, source: DataSource, verify: bool) -> np.ndarray:
    digest = hashlib.sha256() if verify and spec.sha256 is not None else None
    arr = read_idx(path, digest=digest)
    if digest is not None and digest.hexdigest() != spec.sha256:
        raise ChecksumError(
            f"{path}: not the published {source.title} file {spec.name} (sha256 of the "
            f"uncompressed content is {digest.hexdigest()}, expected {spec.sha256}); delete "
            f"it and run `sparsekit download {source.kind}`"
        )
    return arr


def _missing_message(source: DataSource, folder: Path, missing: Sequence[DataFile]) -> str:
    names = ", ".join(f.name for f in missing)
    return (
        f"{source.title} file(s) {names} not found in {folder}; run `sparsekit download "
        f"{source.kind}` (or pass --download), or put the files there yourself (gzipped or "
        "not), or point --data / SPARSEKIT_DATA at the folder that contains "
        f"{source.folder}/"
    )


def _check_images(path: Path, arr: np.ndarray) -> None:
    if arr.ndim != 3 or tuple(arr.shape[1:]) != IMAGE_SHAPE:
        hint = " (a labels file?)" if arr.ndim == 1 else ""
        raise DataError(
            f"{path}: expected images of shape (n, 28, 28), found an array of shape "
            f"{tuple(arr.shape)}{hint}"
        )
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 pixels, found dtype {arr.dtype}")


def _check_labels(path: Path, arr: np.ndarray) -> None:
    if arr.ndim != 1:
        hint = " (an images file?)" if arr.ndim == 3 else ""
        raise DataError(
            f"{path}: expected a 1-D array of labels, found shape {tuple(arr.shape)}{hint}"
        )
    if arr.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer labels, found dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= N_CLASSES):
        raise DataError(
            f"{path}: labels must be 0..{N_CLASSES - 1}, found {int(arr.min())}..{int(arr.max())}"
        )


def _download_missing(source: DataSource, folder: Path, split: str, fetch: dict[str, Any]) -> None:
    """Fetch the files of ``split`` that ``folder`` lacks (and, quietly, the other split's)."""
    missing = [spec for spec in source.splits[split] if find_data_file(folder, spec.name) is None]
    if not missing:
        return
    ensure_files(source, folder, missing, **fetch)
    # The other split too while we are at it (a few MB), so that evaluating on the test
    # images later needs no second download; a failure there is not this call's.
    others = [
        spec
        for name, files in source.splits.items()
        if name != split
        for spec in files
        if find_data_file(folder, spec.name) is None
    ]
    if others:
        with contextlib.suppress(DataError):
            ensure_files(source, folder, others, **fetch)


def _read_split(
    source: DataSource,
    folder: Path,
    specs: Sequence[DataFile],
    *,
    verify: bool,
    download: bool,
    fetch: dict[str, Any],
) -> tuple[list[np.ndarray], list[Path]]:
    """The arrays of ``specs`` and their paths; with ``download`` a corrupt file is fetched
    again (and checked again) instead of failing."""
    arrays: list[np.ndarray] = []
    paths: list[Path] = []
    for spec in specs:
        path = find_data_file(folder, spec.name)
        if path is None:  # removed while we were downloading the other file
            raise DataError(_missing_message(source, folder, [spec]))
        try:
            arr = _read_checked(path, spec, source, verify)
        except DataError:  # corrupt or not the published content
            if not download:
                raise
            path = fetch_file(source, folder, spec, **fetch)
            arr = _read_checked(path, spec, source, verify)
        arrays.append(arr)
        paths.append(path)
    return arrays, paths


def load_mnist(
    data: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    subset: int | None = None,
    kind: str = "mnist",
    download: bool = False,
    mirrors: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    verify: bool = True,
    timeout: float = 30.0,
) -> ArrayFileDataset:
    """MNIST (``kind="mnist"``) or Fashion-MNIST (``kind="fashion-mnist"``) as a data set.

    ``data`` is the data directory (see :func:`~sparsekit.data.paths.resolve_data_dir`);
    ``split`` is ``"train"`` (60000 images) or ``"test"`` (10000); ``subset`` keeps the first
    ``subset`` samples. With ``download=True`` missing files are fetched from the mirrors
    (and a present file that is corrupt or fails its checksum is replaced by a verified
    download); otherwise a missing file is a
    :class:`DataError` naming the folder and files. ``verify`` checks the SHA-256 of the
    uncompressed content where it is known (MNIST), in the same pass that reads the file.
    """
    source = get_source(kind)
    if split not in source.splits:
        raise ParameterError(f"unknown split {split!r} for {kind} (use 'train' or 'test')")
    if subset is not None and (isinstance(subset, bool) or int(subset) < 1):
        raise ParameterError(f"subset must be a positive number of samples, got {subset!r}")
    folder = resolve_data_dir(data) / source.folder
    specs = source.splits[split]
    fetch = {"mirrors": mirrors, "progress": progress, "timeout": timeout}
    if download:
        _download_missing(source, folder, split, fetch)
    else:
        if any(find_data_file(folder, spec.name) is None for spec in specs):
            # Name the missing files of every split: the user who copies only the training
            # files would otherwise meet a second error for the test files at `eval`.
            everything = [spec for files in source.splits.values() for spec in files]
            missing = [spec for spec in everything if find_data_file(folder, spec.name) is None]
            raise DataError(_missing_message(source, folder, missing))
    arrays, paths = _read_split(
        source, folder, specs, verify=verify, download=download, fetch=fetch
    )
    images, labels = arrays
    _check_images(paths[0], images)
    _check_labels(paths[1], labels)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{folder}: {paths[0].name} has {images.shape[0]} images but {paths[1].name} has "
            f"{labels.shape[0]} labels"
        )
    n = images.shape[0]
    if subset is not None:
        if int(subset) > n:
            raise ParameterError(
                f"subset={subset} is larger than the {n} samples of {kind} {split}"
            )
        n = int(subset)
        images = images[:n].copy()
        labels = labels[:n].copy()
    return ArrayFileDataset(
        images,
        name=f"{kind}-{split}",
        labels=labels.astype(np.int64),
        image_shape=IMAGE_SHAPE,
        source={
            "kind": kind,
            "split": split,
            "folder": str(folder),
            "files": [p.name for p in paths],
            "subset": subset,
        },
    )
