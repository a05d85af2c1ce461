"""One entry point from a data specification string to a :class:`Dataset`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparsekit.data.arrays import load_array_file, load_idx_file, split_npz_spec
from sparsekit.data.dataset import Dataset
from sparsekit.data.download import ProgressCallback
from sparsekit.data.mnist import load_mnist
from sparsekit.data.patches import make_patches, parse_patches
from sparsekit.data.preprocess import subset as take_subset
from sparsekit.data.preprocess import train_test_split
from sparsekit.data.sources import SOURCES
from sparsekit.data.stream import DEFAULT_MEMORY, STATS_ROWS, open_stream, split_folder_spec
from sparsekit.data.synthetic import make_sparse_coding
from sparsekit.data.synthetic_sae import NAME as SYNTHETIC_SAE
from sparsekit.data.synthetic_sae import SyntheticSAEWorld
from sparsekit.data.synthetic_sae import parse_spec as parse_synthetic_sae
from sparsekit.errors import DataError, ParameterError
from sparsekit.files import os_reason

_SPLITS = ("train", "test")
_SYNTHETIC_INTS = {"n", "dim", "atoms", "k", "seed"}


def _parse_synthetic(spec: str) -> dict[str, object]:
    """``"synthetic:dim=64,atoms=100,k=5,noise=0.01"`` -> keyword arguments."""
    _, _, rest = spec.partition(":")
    kwargs: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _SYNTHETIC_INTS | {"noise", "values"}:
            raise ParameterError(
                f"bad synthetic data option {item!r} (use n, dim, atoms, k, noise, seed, values "
                "as key=value)"
            )
        try:
            if key in _SYNTHETIC_INTS:
                kwargs[key] = int(value)
            elif key == "noise":
                kwargs[key] = float(value)
            else:
                kwargs[key] = value.strip()
        except ValueError:
            raise ParameterError(f"bad value in synthetic data option {item!r}") from None
    return kwargs


def _looks_like_idx(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    return head[:2] == b"\x1f\x8b" or (len(head) == 4 and head[:2] == b"\x00\x00")


def load_dataset(
    spec: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    split: str | None = None,
    subset: int | None = None,
    download: bool = False,
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    mirrors: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    stream_memory: int = DEFAULT_MEMORY >> 20,
    stats_rows: int = STATS_ROWS,
    norm_scale: bool = False,
) -> Dataset:
    """A data set from ``spec``.

    * ``"mnist"`` / ``"fashion-mnist"``: the published split (``split`` default ``"train"``),
      from the data directory ``data``; ``download`` fetches missing files.
    * ``"synthetic"`` or ``"synthetic:dim=64,atoms=100,k=10,noise=0,seed=0,n=30000"``: the
      signals of :func:`~sparsekit.data.synthetic.make_sparse_coding`; ``split="test"`` gives
      fresh signals from the same dictionary.
    * ``"patches"`` or ``"patches:size=12,n=50000,seed=0,range=none"``: whitened,
      contrast-normalised natural-image patches (:mod:`sparsekit.data.patches`);
      ``split="test"`` cuts them at other places (seed + 1).
    * a path to a ``.npy``, ``.npz`` (``file.npz:name`` picks an array) or IDX file (gzip or
      raw): all rows, or with ``split="train"``/``"test"`` a seeded split that holds out
      ``test_fraction`` of the rows (0: ``"train"`` is every row and ``"test"`` a
      :class:`DataError`, as there is nothing held out).

    * ``"synthetic-sae"`` or ``"synthetic-sae:features=4096,dim=256,n=100000,seed=0,..."``:
      signals of a :mod:`~sparsekit.data.synthetic_sae` world (SynthSAEBench-style);
      ``split="test"`` gives an independent stream of the same world.

    * a folder of ``.npy`` shards, of safetensors shards (``DIR:name`` picks the tensor) or
      a SAELens activation cache (Arrow files; ``DIR:name`` picks the column): a
      :class:`~sparsekit.data.stream.StreamDataset` read a window at a time, holding at most
      ``stream_memory`` MiB of rows; ``split`` holds out a seeded ``test_fraction`` of its
      segments; statistics (the mean, and with ``norm_scale`` the scale to a mean row norm
      of √D) come from ``stats_rows`` rows.

    ``subset`` keeps the first ``subset`` samples (after splitting).
    """
    if split is not None and split not in _SPLITS:
        raise ParameterError(f"unknown split {split!r} (use 'train' or 'test')")
    text = os.fspath(spec)
    key = text.lower()
    if key in SOURCES:
        return load_mnist(
            data,
            split=split or "train",
            subset=subset,
            kind=key,
            download=download,
            mirrors=mirrors,
            progress=progress,
        )
    if key == SYNTHETIC_SAE or key.startswith(SYNTHETIC_SAE + ":"):
        return _load_synthetic_sae(text, split, subset)
    if key == "synthetic" or key.startswith("synthetic:"):
        return _load_synthetic(text, split, subset)
    if key == "patches" or key.startswith("patches:"):
        return _load_patches(text, split, subset)
    folder, _ = split_folder_spec(text)
    if os.path.isdir(folder):
        stream = open_stream(
            text,
            split=split,
            test_fraction=test_fraction,
            seed=seed,
            memory=int(stream_memory) << 20,
            stats_rows=stats_rows,
            norm_scale=norm_scale,
        )
        return stream if subset is None else stream.head(subset)
    return _load_file(text, split, subset, test_fraction=test_fraction, seed=seed)


def _load_synthetic_sae(text: str, split: str | None, subset: int | None) -> Dataset:
    """A :mod:`~sparsekit.data.synthetic_sae` world's split (``subset`` checked against it)."""
    world = SyntheticSAEWorld.create(parse_synthetic_sae(text))
    which = split or "train"
    n_split = world.split_size(which)
    if subset is not None and not 1 <= subset <= n_split:
        raise ParameterError(
            f"subset={subset} must be between 1 and the {n_split} samples of the "
            f"{SYNTHETIC_SAE} {which} split"
        )
    return world.dataset(which, n_split if subset is None else int(subset))


def _load_synthetic(text: str, split: str | None, subset: int | None) -> Dataset:
    """Signals of one sparse-coding problem; the test split draws fresh ones (seed + 1)."""
    kwargs = _parse_synthetic(text)
    problem = make_sparse_coding(**kwargs)  # type: ignore[arg-type]
    ds: Dataset = problem.dataset
    if split == "test":
        test_n = max(1, problem.params["n"] // 6)
        ds = problem.sample(test_n, seed=int(problem.params["seed"]) + 1).dataset
        ds.name = "synthetic-test"
    return ds if subset is None else take_subset(ds, subset)


def _load_patches(text: str, split: str | None, subset: int | None) -> Dataset:
    """Natural-image patches; the test split cuts them at other places (seed + 1)."""
    kwargs = parse_patches(text)
    if split == "test":  # other places of the same photographs
        kwargs["seed"] = int(kwargs.get("seed", 0)) + 1
    ds = make_patches(**kwargs)
    return ds if subset is None else take_subset(ds, subset)


def _load_file(
    text: str, split: str | None, subset: int | None, *, test_fraction: float, seed: int
) -> Dataset:
    """A ``.npy``, ``.npz`` or IDX file; a split is a seeded cut of its rows."""
    path, npz_key = split_npz_spec(text)
    if not path.exists():
        known = ", ".join(sorted(SOURCES) + ["synthetic", SYNTHETIC_SAE, "patches"])
        raise DataError(
            f"{text}: no such file, and not a known data set name ({known}); expected a "
            ".npy, .npz or IDX file"
        )
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a .npy, .npz or IDX file")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        ds = load_array_file(path, key=npz_key)
    elif _looks_like_idx(path):
        ds = load_idx_file(path)
    else:
        raise DataError(f"{path}: unsupported file type (expected .npy, .npz or an IDX file)")
    if split is not None and test_fraction == 0:
        # Nothing held out: the training split is every row, and there is no test split.
        if split == "test":
            raise DataError(
                f"{path}: no held-out split (the run was trained with --test-fraction 0, "
                "on every row)"
            )
    elif split is not None:
        train, test = train_test_split(ds, test_fraction, seed=seed)
        ds = train if split == "train" else test
    return ds if subset is None else take_subset(ds, subset)


def ground_truth(spec: str | os.PathLike[str]) -> np.ndarray | None:
    """The true dictionary (``dim × atoms`` unit columns) behind a data specification, or
    ``None`` when the data has none (anything but ``synthetic`` and ``synthetic-sae``)."""
    text = os.fspath(spec)
    key = text.lower()
    if key == SYNTHETIC_SAE or key.startswith(SYNTHETIC_SAE + ":"):
        return SyntheticSAEWorld.create(parse_synthetic_sae(text)).dictionary
    if key == "synthetic" or key.startswith("synthetic:"):
        return make_sparse_coding(**_parse_synthetic(text)).dictionary  # type: ignore[arg-type]
    return None
