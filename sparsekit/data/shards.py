"""Folders of activation shards: ``.npy`` files, safetensors files, a SAELens Arrow cache.

People who train sparse autoencoders keep their activations as many files. A
:class:`ShardFolder` lists them and reads any range of rows of any shard, in the dtype on disk
(float32 or float16), without loading a whole shard:

* ``.npy`` shards and safetensors shards are read with ``os.pread`` at the byte offset of the
  rows (the header parsed here), so only the rows asked for enter the process;
* a SAELens activation cache (a Hugging Face ``datasets`` folder of Arrow stream files, as
  ``CacheActivationsRunner`` writes it) is read through ``pyarrow`` (the optional ``arrow``
  extra) by memory map: the column's values are a view of the mapped file.

:meth:`ShardFolder.manifest` says exactly what was read: each shard's name, rows, width,
dtype and a checksum of its header, its tail and its size; :func:`check_manifest` refuses a
folder that no longer matches one, naming the shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.errors import DataError
from sparsekit.files import os_reason
from sparsekit.layout import SAELENS_CACHE_STATE

#: What a folder may hold, by the files in it.
KINDS = ("npy", "safetensors", "arrow")
#: The dtypes a shard may have on disk (converted per batch to the training dtype).
DISK_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
#: Bytes of a shard's start and end that its checksum covers (with its size).
CHECKSUM_BYTES = 1 << 16

_SAFETENSORS_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"),
                       "BF16": None}


@dataclass(frozen=True)
class Shard:
    """One file of a folder: ``rows`` rows of ``width`` values of ``dtype``, the first at
    byte ``offset`` (npy, safetensors; row-major) or in the Arrow ``column``."""

    path: Path
    rows: int
    width: int
    dtype: np.dtype
    offset: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def row_bytes(self) -> int:
        return self.width * self.dtype.itemsize


def checksum(path: Path) -> str:
    """SHA-256 of a file's first and last :data:`CHECKSUM_BYTES` and its size: what a
    header says and whether the file grew, shrank or was rewritten, without reading it all."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        digest.update(fh.read(CHECKSUM_BYTES))
        if size > CHECKSUM_BYTES:
            fh.seek(max(CHECKSUM_BYTES, size - CHECKSUM_BYTES))
            digest.update(fh.read(CHECKSUM_BYTES))
    digest.update(str(size).encode())
    return digest.hexdigest()


def _disk_dtype(path: Path, dtype: Any) -> np.dtype:
    dt = np.dtype(dtype) if dtype is not None else None
    if dt is None or dt.newbyteorder("=") not in DISK_DTYPES or dt.byteorder == ">":
        raise DataError(f"{path}: dtype {dtype} is not float32 or float16 (little-endian)")
    return dt


def _npy_shard(path: Path) -> Shard:
    """Parse a ``.npy`` header: shape, dtype, order, where the data starts."""
    try:
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            except ValueError as exc:
                raise DataError(f"{path}: not a .npy file ({exc})") from None
            offset = fh.tell()
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    if len(shape) != 2:
        raise DataError(f"{path}: expected a 2-d array (rows, features), got shape {shape}")
    if fortran:
        raise DataError(f"{path}: the array is in Fortran order; save it C-contiguous")
    shard = Shard(path, int(shape[0]), int(shape[1]), _disk_dtype(path, dtype), offset)
    _check_size(shard, size)
    return shard


def _check_size(shard: Shard, size: int) -> None:
    need = shard.offset + shard.rows * shard.row_bytes
    if size < need:
        raise DataError(
            f"{shard.path}: truncated: {size} bytes, its header promises {need} "
            f"({shard.rows} rows of {shard.width} {shard.dtype.name})"
        )


def _safetensors_shard(path: Path, name: str | None) -> Shard:
    """Parse a safetensors header (8-byte length, JSON) and find the tensor ``name``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise DataError(f"{path}: truncated: no safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 100 << 20):
                raise DataError(f"{path}: not a safetensors file (header length {length})")
            raw = fh.read(length)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    try:
        header = json.loads(raw)
    except ValueError:
        raise DataError(f"{path}: not a safetensors file (its header is not JSON)") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if name is None:
        if len(tensors) != 1:
            raise DataError(
                f"{path}: holds {len(tensors)} tensors ({', '.join(sorted(tensors)) or 'none'}); "
                "pick one with DIR:name"
            )
        name = next(iter(tensors))
    if name not in tensors:
        raise DataError(f"{path}: no tensor {name!r} (it has {', '.join(sorted(tensors))})")
    info = tensors[name]
    shape, kind = info.get("shape", []), info.get("dtype")
    if len(shape) != 2:
        raise DataError(f"{path}: tensor {name!r} has shape {shape}; expected (rows, features)")
    dtype = _SAFETENSORS_DTYPES.get(kind, None)
    start, end = info["data_offsets"]
    shard = Shard(path, int(shape[0]), int(shape[1]), _disk_dtype(path, dtype), 8 + length + start)
    if end - start != shard.rows * shard.row_bytes:
        raise DataError(f"{path}: tensor {name!r}: its offsets do not match its shape")
    _check_size(shard, size)
    return shard


class ShardFolder:
    """The shards of one folder, in name order, all of one width and dtype.

    ``spec`` is the folder, or ``DIR:name`` to pick a safetensors tensor or an Arrow column.
    """

    def __init__(self, folder: str | os.PathLike[str], name: str | None = None) -> None:
        self.folder = Path(folder)
        self.tensor = name
        files = sorted(p for p in self.folder.iterdir() if p.is_file())
        npy = [p for p in files if p.suffix == ".npy"]
        safetensors = [p for p in files if p.suffix == ".safetensors"]
        arrow = _arrow_files(self.folder, files)
        found = [k for k, v in (("npy", npy), ("safetensors", safetensors), ("arrow", arrow)) if v]
        if not found:
            raise DataError(
                f"{self.folder}: no shards (expected .npy or .safetensors files, or a SAELens "
                "activation cache's .arrow files)"
            )
        if len(found) > 1:
            raise DataError(f"{self.folder}: mixes {' and '.join(found)} shards; keep one kind")
        self.kind = found[0]
        self._arrow: dict[int, np.ndarray] = {}
        if self.kind == "npy":
            if name is not None:
                raise DataError(f"{self.folder}:{name}: .npy shards hold one array; drop ':{name}'")
            self.shards = [_npy_shard(p) for p in npy]
        elif self.kind == "safetensors":
            self.shards = [_safetensors_shard(p, name) for p in safetensors]
        else:
            self.shards = []
            for i, path in enumerate(arrow):
                shard, values = _arrow_shard(path, name)
                self.shards.append(shard)
                self._arrow[i] = values
        first = self.shards[0]
        for shard in self.shards[1:]:
            if shard.width != first.width:
                raise DataError(
                    f"{shard.path}: rows of {shard.width} features, but {first.name} has "
                    f"{first.width}; every shard needs the same width"
                )
            if shard.dtype != first.dtype:
                raise DataError(
                    f"{shard.path}: dtype {shard.dtype.name}, but {first.name} is "
                    f"{first.dtype.name}; every shard needs the same dtype"
                )
        empty = [s for s in self.shards if s.rows == 0]
        if len(empty) == len(self.shards):
            raise DataError(f"{self.folder}: every shard is empty")
        self.width = first.width
        self.dtype = first.dtype
        self.rows = sum(s.rows for s in self.shards)

    def read(self, shard: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of shard ``shard`` as a fresh ``(rows, width)`` array of the
        dtype on disk (``os.pread``: the GIL is released while the disk is read)."""
        s = self.shards[shard]
        if shard in self._arrow:
            return np.array(self._arrow[shard][start:stop])
        count = (stop - start) * s.row_bytes
        out = np.empty((stop - start, s.width), dtype=s.dtype)
        view = memoryview(out).cast("B")
        done = 0
        try:
            fd = os.open(s.path, os.O_RDONLY)
        except OSError as exc:
            raise DataError(f"{s.path}: cannot read the file ({os_reason(exc)})") from None
        try:
            while done < count:
                got = os.preadv(fd, [view[done:]], s.offset + start * s.row_bytes + done)
                if got == 0:
                    raise DataError(f"{s.path}: truncated: ends before row {stop} of {s.rows}")
                done += got
        except OSError as exc:
            raise DataError(f"{s.path}: cannot read the file ({os_reason(exc)})") from None
        finally:
            os.close(fd)
        return out

    def manifest(self) -> dict[str, Any]:
        """What this folder is: kind, width, dtype, rows and each shard with its checksum."""
        return {
            "folder": str(self.folder.resolve()),
            "kind": self.kind,
            "tensor": self.tensor,
            "width": self.width,
            "dtype": self.dtype.name,
            "rows": self.rows,
            "shards": [
                {"name": s.name, "rows": s.rows, "width": s.width, "dtype": s.dtype.name,
                 "checksum": checksum(s.path)}
                for s in self.shards
            ],
        }


def check_manifest(current: dict[str, Any], stored: dict[str, Any]) -> None:
    """Refuse (a :class:`DataError` naming the shard) a folder that changed since ``stored``."""
    folder = current.get("folder")
    now = {s["name"]: s for s in current["shards"]}
    then = {s["name"]: s for s in stored.get("shards", [])}
    for name in then:
        if name not in now:
            raise DataError(f"{folder}: shard {name} is gone since the run started")
    for name, shard in now.items():
        if name not in then:
            raise DataError(f"{folder}: shard {name} is new since the run started")
        if shard != then[name]:
            raise DataError(f"{folder}: shard {name} changed since the run started (checksum)")


# --------------------------------------------------------------------------- SAELens (Arrow)


def _arrow_files(folder: Path, files: list[Path]) -> list[Path]:
    """The data files of a Hugging Face ``datasets`` folder: ``state.json``'s list when it
    has one (``save_to_disk`` writes it), else every ``.arrow`` file in name order."""
    state = folder / SAELENS_CACHE_STATE
    if state.is_file():
        try:
            listed = json.loads(state.read_text()).get("_data_files", [])
        except ValueError:
            raise DataError(f"{state}: not JSON") from None
        names = [entry.get("filename") for entry in listed if isinstance(entry, dict)]
        if names:
            paths = [folder / n for n in names]
            for p in paths:
                if not p.is_file():
                    raise DataError(f"{state}: lists {p.name}, which is missing")
            return paths
    return [p for p in files if p.suffix == ".arrow"]


def _arrow_shard(path: Path, name: str | None) -> tuple[Shard, np.ndarray]:
    """One Arrow file by memory map: the float column (``name``, or the only one) as a
    ``(rows, width)`` view; a column of lists of lists (SAELens' ``Array2D`` of
    ``context × d_in``) is flattened to one row per token."""
    try:
        import pyarrow as pa  # the optional "arrow" extra; only this reader needs it
    except ImportError:
        raise DataError(
            f"{path}: reading a SAELens activation cache needs pyarrow "
            "(pip install 'sparsekit[arrow]')"
        ) from None
    try:
        source = pa.memory_map(str(path), "r")
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source = pa.memory_map(str(path), "r")
            reader = pa.ipc.open_file(source)
            table = reader.read_all()
        else:
            table = reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        reason = os_reason(exc) if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise DataError(f"{path}: not a readable Arrow file ({reason})") from None
    columns = [c for c in table.column_names if _float_lists(table.schema.field(c).type)]
    if name is None:
        if len(columns) != 1:
            raise DataError(
                f"{path}: {len(columns)} columns of float lists ({', '.join(columns) or 'none'});"
                " pick one with DIR:name"
            )
        name = columns[0]
    if name not in table.column_names:
        raise DataError(f"{path}: no column {name!r} (it has {', '.join(table.column_names)})")
    if name not in columns:
        raise DataError(f"{path}: column {name!r} does not hold lists of floats")
    chunked = table.column(name)
    if chunked.num_chunks == 0 or len(chunked) == 0:
        values = np.empty((0, 1), dtype=np.float32)
    else:
        array = chunked.combine_chunks() if chunked.num_chunks > 1 else chunked.chunk(0)
        if isinstance(array, pa.ExtensionArray):
            array = array.storage
        lists = len(array)
        while _is_list(array.type):
            if array.null_count:
                raise DataError(f"{path}: column {name!r} has missing values")
            lists, array = len(array), array.flatten()
        if array.null_count:
            raise DataError(f"{path}: column {name!r} has missing values")
        width = len(array) // lists if lists else 0
        if width == 0:
            raise DataError(f"{path}: column {name!r}: cannot tell the row width")
        flat = array.to_numpy(zero_copy_only=True)
        if len(flat) % width:
            raise DataError(f"{path}: column {name!r}: rows of unequal length")
        values = flat.reshape(-1, width)
    dtype = _disk_dtype(path, values.dtype)
    return Shard(path, int(values.shape[0]), int(values.shape[1]), dtype), values


def _float_lists(kind: Any) -> bool:
    import pyarrow as pa

    if isinstance(kind, pa.ExtensionType):
        kind = kind.storage_type
    if not _is_list(kind):
        return False
    while _is_list(kind):
        kind = kind.value_type
    return pa.types.is_floating(kind)


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)
    )
