"""NumPy ``.npy`` / ``.npz`` files and raw IDX files as data sets.

``.npy`` files are opened with ``np.load(mmap_mode="r", allow_pickle=False)``: nothing is read
until the trainer takes a minibatch, so arrays larger than RAM work. Members of an ``.npz``
written by ``np.savez`` (stored, not compressed) are memory-mapped the same way; members of
``np.savez_compressed`` files are read into memory. Pickled (object) arrays are never loaded.

Checks: the file must hold a non-empty numeric (bool, integer or float) array of shape
``(samples, features)`` or ``(samples, height, width)``. NaN/inf: arrays read into memory are
checked once at load; memory-mapped arrays are checked batch by batch in ``take()`` (a full
scan of a file larger than RAM would cost a pass over the disk before training starts), so a
bad row is reported, naming the file and the row, when a minibatch first contains it.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.data.dataset import ArrayDataset
from sparsekit.data.idx import is_gzip, read_idx
from sparsekit.errors import DataError
from sparsekit.files import os_reason

_CHECK_ROWS_BYTES = 32 << 20


class ArrayFileDataset(ArrayDataset):
    """An :class:`ArrayDataset` read from a file, possibly memory-mapped.

    ``source`` (a JSON-serialisable dict: path, format, key...) is added to ``describe()``.

    ``file=(path, offset)`` says that ``data`` is a C-ordered memory map of ``path`` starting
    at byte ``offset``. ``take()`` then reads the requested rows with positioned reads
    (``os.preadv``) instead of touching the mapping: pages of a memory map that have been
    read count towards the process's resident memory (and the kernel maps whole neighbourhoods
    of pages per fault), so a pass over a file larger than RAM through the mapping would make
    the process look as large as the file. With positioned reads only the rows of one
    minibatch are ever in the process; the file's pages stay in the (reclaimable) page cache.
    ``check_finite`` checks every batch for NaN/inf.
    """

    def __init__(
        self,
        data: np.ndarray,
        *,
        name: str,
        labels: np.ndarray | None = None,
        image_shape: tuple[int, int] | None = None,
        scale: float | None = None,
        source: dict[str, Any] | None = None,
        file: tuple[str | os.PathLike[str], int] | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__(data, name=name, labels=labels, image_shape=image_shape, scale=scale)
        self.source: dict[str, Any] = dict(source or {})
        self._check_finite = bool(check_finite) and np.dtype(self._data.dtype).kind == "f"
        self._file: tuple[str, int] | None = None
        self._fd: int | None = None
        if file is not None and hasattr(os, "preadv") and self._data.flags.c_contiguous:
            self._file = (os.fspath(file[0]), int(file[1]))

    # file descriptors do not survive pickling (e.g. to worker processes): reopen lazily
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _read_rows(self, indices: Any) -> np.ndarray:
        assert self._file is not None
        path, offset = self._file
        n = len(self)
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.intp, copy=False).reshape(-1)
        idx = np.where(idx < 0, idx + n, idx)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.name}: row index out of range for {n} samples")
        dtype = self._data.dtype
        row_bytes = dtype.itemsize * self.dim
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        rows = np.empty((idx.size, self.dim), dtype=dtype)
        if idx.size:
            if self._fd is None:
                try:
                    self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as exc:
                    raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
            breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
            starts = np.concatenate(([0], breaks))
            ends = np.concatenate((breaks, [idx.size]))
            flat = rows.reshape(-1).view(np.uint8)
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                view = memoryview(flat[start * row_bytes : end * row_bytes])
                pos = offset + int(sorted_idx[start]) * row_bytes
                while len(view):
                    try:
                        got = os.preadv(self._fd, [view], pos)
                    except OSError as exc:
                        raise DataError(
                            f"{path}: cannot read the file ({os_reason(exc)})"
                        ) from None
                    if got <= 0:
                        raise DataError(f"{path}: the file is shorter than its header says")
                    view = view[got:]
                    pos += got
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def take(self, indices: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        if self._file is None:
            rows = super().take(indices, dtype)
        else:
            rows = np.asarray(self._read_rows(indices), dtype=dtype)
            if self._scale != 1.0:
                rows *= np.dtype(dtype).type(self._scale)
            rows = np.ascontiguousarray(rows)
        if self._check_finite and not np.isfinite(rows).all():
            bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            row = int(np.asarray(indices).reshape(-1)[bad])
            where = self.source.get("path", self.name)
            raise DataError(f"{where}: row {row} contains NaN or infinite values")
        return rows

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.source:
            out["source"] = dict(self.source)
        return out


def _header_from(fh: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of the .npy stream ``fh``."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"{where}: not a valid .npy array ({os_reason(exc)})") from None
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), fh.tell()


def _check_array_meta(where: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise DataError(
            f"{where}: the array holds Python objects (dtype {dtype}); sparsekit never "
            "unpickles data, save a numeric array instead"
        )
    if dtype.names is not None or dtype.kind not in "biuf":
        raise DataError(f"{where}: expected a numeric array, got dtype {dtype}")
    if len(shape) not in (2, 3):
        raise DataError(
            f"{where}: expected an array of shape (samples, features) or (samples, height, "
            f"width), got shape {shape}"
        )
    if any(d == 0 for d in shape):
        raise DataError(f"{where}: the array is empty (shape {shape})")


def _check_finite_full(where: str, arr: np.ndarray) -> None:
    if arr.dtype.kind != "f":
        return
    flat = arr.reshape(arr.shape[0], -1)
    step = max(1, _CHECK_ROWS_BYTES // max(1, flat.shape[1] * flat.dtype.itemsize))
    for start in range(0, flat.shape[0], step):
        block = np.isfinite(flat[start : start + step]).all(axis=1)
        if not block.all():
            row = start + int(np.flatnonzero(~block)[0])
            raise DataError(f"{where}: row {row} contains NaN or infinite values")


def open_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only after checking its header."""
    path = Path(path)
    where = str(path)
    try:
        with open(path, "rb") as fh:
            shape, _, dtype, _ = _header_from(fh, where)
    except OSError as exc:
        raise DataError(f"{where}: cannot read the file ({os_reason(exc)})") from None
    _check_array_meta(where, shape, dtype)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{where}: cannot read the array ({os_reason(exc)})") from None


def npz_keys(path: str | os.PathLike[str]) -> list[str]:
    """Names of the arrays in an ``.npz`` file, in file order."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a valid .npz file ({os_reason(exc)})") from None


def _default_key(path: Path, keys: list[str]) -> str:
    if not keys:
        raise DataError(f"{path}: the .npz file contains no arrays")
    return "x" if "x" in keys else keys[0]


def _npz_member(path: Path, key: str) -> tuple[np.ndarray, bool]:
    """(array, is_memory_mapped) for member ``key`` of an ``.npz`` file."""
    where = f"{path}:{key}"
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(key + ".npy")
            with zf.open(info) as member:
                shape, fortran, dtype, header_len = _header_from(member, where)
            _check_array_meta(where, shape, dtype)
            stored = info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1
        if stored:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if len(local) == 30 and local[:4] == b"PK\x03\x04":
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    offset = info.header_offset + 30 + name_len + extra_len + header_len
                    arr = np.memmap(
                        path,
                        dtype=dtype,
                        mode="r",
                        offset=offset,
                        shape=shape,
                        order="F" if fortran else "C",
                    )
                    return arr, True
        with np.load(path, allow_pickle=False) as npz:
            return npz[key], False
    except DataError:
        raise
    except KeyError:
        keys = ", ".join(npz_keys(path)) or "none"
        raise DataError(f"{path}: no array named {key!r} (arrays: {keys})") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{where}: cannot read the array ({os_reason(exc)})") from None


def split_npz_spec(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``"data.npz:name"`` -> (Path("data.npz"), "name"); other paths -> (path, None)."""
    text = os.fspath(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(".npz") and tail and "/" not in tail and "\\" not in tail:
        return Path(head), tail
    return Path(text), None


def load_array_file(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    name: str | None = None,
) -> ArrayFileDataset:
    """A data set from a ``.npy`` file or a ``.npz`` file (``path.npz:name`` or ``key``;
    default the array ``x`` if present, else the first). Integer pixels (``uint8``) are
    scaled to [0, 1]; an ``.npz`` array ``y`` or ``labels`` of matching length becomes the
    labels."""
    path, spec_key = split_npz_spec(path)
    key = key if key is not None else spec_key
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    labels = None
    if suffix == ".npy":
        if key is not None:
            raise DataError(f"{path}: a .npy file holds a single array; no key {key!r}")
        arr = open_npy(path)
        source: dict[str, Any] = {"path": str(path), "format": "npy"}
        mapped = True
    elif suffix == ".npz":
        keys = npz_keys(path)
        key = key if key is not None else _default_key(path, keys)
        arr, mapped = _npz_member(path, key)
        source = {"path": f"{path}:{key}", "format": "npz", "key": key}

        for label_key in ("y", "labels"):
            if label_key in keys and label_key != key:
                cand, _ = _npz_member_any(path, label_key)
                if cand is not None and cand.ndim == 1 and cand.shape[0] == arr.shape[0]:
                    labels = np.asarray(cand).astype(np.int64)
                    break
    else:
        raise DataError(f"{path}: unsupported file type (expected .npy, .npz or an IDX file)")
    if not mapped:
        _check_finite_full(source["path"], arr)
    return ArrayFileDataset(
        arr,
        name=name or path.stem,
        labels=labels,
        source=source,
        file=(path, arr.offset) if mapped and isinstance(arr, np.memmap) else None,
        check_finite=mapped,
    )


def _npz_member_any(path: Path, key: str) -> tuple[np.ndarray | None, bool]:
    """A label-like member: any numeric shape allowed; ``None`` if unusable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[key]
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError):
        return None, False
    if arr.dtype.kind not in "iu":
        return None, False
    return arr, False


def load_idx_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
) -> ArrayFileDataset:
    """A data set from any IDX file of shape (samples, features) or (samples, h, w).

    Uncompressed files are memory-mapped; gzip-compressed ones are read into memory."""
    path = Path(path)
    mapped = not is_gzip(path)
    arr = read_idx(path, mmap=mapped)
    where = str(path)
    _check_array_meta(where, tuple(arr.shape), arr.dtype)
    if not mapped:
        _check_finite_full(where, arr)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    return ArrayFileDataset(
        arr,
        name=name or stem,
        source={"path": where, "format": "idx"},
        file=(path, arr.offset) if mapped and isinstance(arr, np.memmap) else None,
        check_finite=mapped,
    )
