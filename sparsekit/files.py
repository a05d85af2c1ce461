"""Files and one-line messages, shared by every module that writes or reports.

The lowest layer of sparsekit's outputs: it imports only the standard library, NumPy and
:mod:`sparsekit.errors`, so any module may use it.

* :func:`write_atomic`, :func:`atomic_path`, :func:`write_json`: a file is written under a
  temporary name in the same folder, flushed and renamed over the target
  (:func:`os.replace`), so a reader, a crash or ``kill -9`` never sees half a file.
* :func:`json_default`, :func:`plain_json`: how NumPy scalars and arrays and paths become JSON.
* :func:`first_line`, :func:`os_reason`: the one-line reason of an exception, as every
  :class:`~sparsekit.errors.SparsekitError` message and ``failure.json`` shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparsekit.errors import OutputError, SparsekitError

__all__ = [
    "atomic_path",
    "first_line",
    "fsync_dir",
    "json_default",
    "one_line_reason",
    "os_reason",
    "plain_json",
    "read_json_or_none",
    "remove_quietly",
    "temp_path_for",
    "write_atomic",
    "write_json",
]


# --------------------------------------------------------------------------- messages


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``str(exc)``, or the exception's class name."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def one_line_reason(exc: BaseException, *, name: bool | None = None) -> str:
    """:func:`first_line` prefixed with the exception's class (``"ValueError: ..."``).

    ``name`` None (the default) leaves the prefix off for a
    :class:`~sparsekit.errors.SparsekitError`, whose message says what went wrong by itself.
    """
    text = first_line(exc)
    kind = type(exc).__name__
    if name is None:
        name = not isinstance(exc, SparsekitError)
    return f"{kind}: {text}" if name and text != kind else text


def os_reason(exc: BaseException) -> str:
    """A short, single-line reason: an ``OSError``'s lower-case ``strerror``, else
    :func:`first_line`."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return first_line(exc)


# --------------------------------------------------------------------------- JSON


def json_default(value: Any) -> Any:
    """The ``default=`` of :func:`json.dumps` for sparsekit's outputs.

    Paths become strings; NumPy scalars and arrays (and anything else with ``tolist``, such
    as a device array) become Python numbers and lists. Anything else is a ``TypeError``.
    """
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def plain_json(obj: Any) -> Any:
    """A JSON-like copy of ``obj`` with only Python types (safe to pickle or compare)."""
    return json.loads(json.dumps(obj, default=json_default))


# --------------------------------------------------------------------------- atomic files


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden name next to ``dest``, for writing before an atomic rename."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def remove_quietly(path: Path | None) -> None:
    """Delete ``path`` if it exists; errors are ignored (``None`` does nothing)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, error: type[SparsekitError] = OutputError) -> Iterator[Path]:
    """A temporary path (same folder, same suffix) that becomes ``path`` when the block ends.

    Whatever the block writes to the temporary path replaces ``path`` in one rename. On an
    ``OSError`` the temporary file is removed and ``error`` (an
    :class:`~sparsekit.errors.OutputError` by default) is raised with one line; on any other
    exception the temporary file is removed and the exception goes on.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        _as_new_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        remove_quietly(tmp)
        raise


def _umask() -> int:
    """The process's umask: from ``/proc`` where there is one (reading it any other way
    means setting it for a moment, which another thread's new file could see)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_new_file(tmp: Path) -> None:
    """Give ``tmp`` the permissions a newly created file gets (0644 under umask 022).

    Some writers the block hands the path to create it private: ``safetensors`` writes 0600,
    which left ``sae_weights.safetensors`` unreadable to others beside a 0644 ``cfg.json``.
    """
    if not tmp.exists():
        return  # the block wrote nothing; os.replace says so
    mode = 0o666 & ~_umask()
    if stat.S_IMODE(tmp.stat().st_mode) != mode:
        os.chmod(tmp, mode)


def write_atomic(path: Path, data: bytes, *, error: type[SparsekitError] = OutputError) -> None:
    """Write ``data`` to ``path`` through a temporary file, ``fsync`` and a rename."""
    with atomic_path(path, error=error) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: Path, obj: Any, *, error: type[SparsekitError] = OutputError) -> None:
    """``obj`` as indented JSON (see :func:`json_default`), written atomically."""
    text = json.dumps(obj, indent=2, default=json_default) + "\n"
    write_atomic(path, text.encode("utf-8"), error=error)
