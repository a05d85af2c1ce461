"""Reading and writing IDX files (the format of MNIST and Fashion-MNIST).

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
unsigned 32-bit dimension sizes, then the data, big-endian, row-major. Files may be
gzip-compressed; compression is detected from the first bytes, never from the file name.

Every problem with a file is reported as a one-line :class:`~sparsekit.errors.DataError`
naming the file; no ``OSError``/``gzip``/NumPy exception escapes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from sparsekit.errors import DataError
from sparsekit.files import os_reason, remove_quietly, temp_path_for

#: IDX type code -> big-endian NumPy dtype, as the format defines them.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "short",
    0x0C: "int",
    0x0D: "float",
    0x0E: "double",
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22  # 4 MiB


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None


def _open(path: Path) -> tuple[IO[bytes], bool]:
    try:
        fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    try:
        compressed = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
    except OSError as exc:
        fh.close()
        raise DataError(f"{path}: cannot read the file ({os_reason(exc)})") from None
    if compressed:
        return gzip.GzipFile(fileobj=fh, mode="rb"), True
    return fh, False


def _read_exact(fh: IO[bytes], n: int, path: Path, what: str, digest: Any) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated IDX file (ends inside the {what})")
    if digest is not None:
        digest.update(data)
    return data


def _parse_header(fh: IO[bytes], path: Path, digest: Any) -> tuple[np.dtype, tuple[int, ...]]:
    magic = _read_exact(fh, 4, path, "header", digest)
    if magic[0] != 0 or magic[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic number 0x{magic.hex()}, expected 0x0000 followed "
            "by a type code and the number of dimensions)"
        )
    code, ndim = magic[2], magic[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares zero dimensions")
    raw = _read_exact(fh, 4 * ndim, path, "dimension sizes", digest)
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))
    if any(d == 0 for d in shape):
        raise DataError(f"{path}: IDX header declares an empty dimension (shape {shape})")
    return IDX_TYPES[code], shape


def _payload_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    size = dtype.itemsize
    for d in shape:
        size *= d
    return size


def _to_native(arr: np.ndarray) -> np.ndarray:
    """Big-endian array -> same values in native byte order, in place when possible."""
    if arr.dtype.itemsize == 1 or arr.dtype.isnative:
        return arr.view(arr.dtype.newbyteorder("="))
    if arr.flags.writeable:
        arr.byteswap(inplace=True)
        return arr.view(arr.dtype.newbyteorder())
    return arr.astype(arr.dtype.newbyteorder("="))


def read_idx_header(path: str | os.PathLike[str]) -> tuple[np.dtype, tuple[int, ...]]:
    """The (native-order dtype, shape) an IDX file declares, reading only its header."""
    path = Path(path)
    fh, compressed = _open(path)
    try:
        with fh:
            dtype, shape = _parse_header(fh, path, None)
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, compressed, exc) from None
    return dtype.newbyteorder("="), shape


def _corrupt(path: Path, compressed: bool, exc: BaseException) -> DataError:
    if compressed:
        return DataError(f"{path}: corrupt gzip data ({os_reason(exc)})")
    return DataError(f"{path}: cannot read the file ({os_reason(exc)})")


def read_idx(path: str | os.PathLike[str], *, mmap: bool = False, digest: Any = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-byte-order array.

    ``mmap=True`` memory-maps an uncompressed file instead of reading it (the returned array
    is then read-only and keeps the file's big-endian dtype; values are still correct).
    ``digest`` is an optional ``hashlib`` object fed with the uncompressed bytes, header
    included (used to verify checksums while reading, in a single pass).
    """
    path = Path(path)
    fh, compressed = _open(path)
    try:
        with fh:
            dtype, shape = _parse_header(fh, path, digest)
            expected = _payload_size(dtype, shape)
            header = 4 + 4 * len(shape)
            if not compressed:
                actual = os.fstat(fh.fileno()).st_size - header
                _check_size(path, expected, actual, shape)
                if mmap:
                    if digest is not None:
                        _feed(fh, digest)
                    return _memmap(path, dtype, shape, header)
            try:
                buf = np.empty(expected, dtype=np.uint8)
            except (MemoryError, ValueError):
                raise DataError(
                    f"{path}: IDX header declares shape {shape} ({expected} bytes), "
                    "too large to load into memory"
                ) from None
            view = memoryview(buf)
            done = 0
            while done < expected:
                n = fh.readinto(view[done : min(expected, done + _CHUNK)])  # type: ignore[attr-defined]
                if not n:
                    break
                if digest is not None:
                    digest.update(view[done : done + n])
                done += n
            if done < expected:
                _check_size(path, expected, done, shape)
            trailing = 0
            while chunk := fh.read(_CHUNK):  # also makes gzip check its CRC at the end
                trailing += len(chunk)
            if trailing:
                _check_size(path, expected, expected + trailing, shape)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, compressed, exc) from None
    arr = buf.view(dtype).reshape(shape)
    return _to_native(arr)


def _feed(fh: IO[bytes], digest: Any) -> None:
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return
        digest.update(chunk)


def _memmap(path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot memory-map the file ({os_reason(exc)})") from None


def _check_size(path: Path, expected: int, actual: int, shape: tuple[int, ...]) -> None:
    if actual < expected:
        raise DataError(
            f"{path}: truncated IDX file (header declares shape {shape}, {expected} data bytes; "
            f"found {actual})"
        )
    if actual > expected:
        raise DataError(
            f"{path}: IDX file has {actual - expected} trailing bytes after the data the header "
            f"declares (shape {shape})"
        )


def sha256_uncompressed(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's content, decompressed first if it is gzip."""
    path = Path(path)
    fh, compressed = _open(path)
    digest = hashlib.sha256()
    try:
        with fh:
            _feed(fh, digest)
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, compressed, exc) from None
    return digest.hexdigest()


def _idx_code(dtype: np.dtype) -> int:
    for code, idx_dtype in IDX_TYPES.items():
        if idx_dtype.kind == dtype.kind and idx_dtype.itemsize == dtype.itemsize:
            return code
    raise DataError(
        f"IDX cannot store dtype {dtype} (supported: uint8, int8, int16, int32, float32, float64)"
    )


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None
) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed if ``compress`` (default: name ends .gz).

    The file is written under a temporary name and renamed when complete.
    """
    path = Path(path)
    arr = np.asarray(array)
    if arr.ndim == 0 or arr.ndim > 255:
        raise DataError(f"{path}: IDX needs an array with 1 to 255 dimensions, got {arr.ndim}")
    if arr.size == 0:
        raise DataError(f"{path}: cannot write an empty array (shape {arr.shape}) as IDX")
    if any(d >= 2**32 for d in arr.shape):
        raise DataError(f"{path}: dimension too large for IDX (shape {arr.shape})")
    code = _idx_code(arr.dtype)
    if compress is None:
        compress = path.name.endswith(".gz")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = np.ascontiguousarray(arr, dtype=IDX_TYPES[code])
    tmp = temp_path_for(path)
    try:
        with open(tmp, "xb") as raw:
            out: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if compress else raw
            out.write(header)
            flat = data.reshape(-1).view(np.uint8)
            for start in range(0, flat.size, _CHUNK):
                out.write(flat[start : start + _CHUNK].tobytes())
            if compress:
                out.close()
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise DataError(f"{path}: cannot write the file ({os_reason(exc)})") from None
    return path
