"""Small file helpers shared by the data modules (not public API)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden name next to ``dest``, for writing before an atomic rename."""
    return dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def remove_quietly(path: Path | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def os_reason(exc: BaseException) -> str:
    """A short, single-line reason for an exception (no traceback, no newlines)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
