"""sparsekit.files: atomic writes leave the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sparsekit import files
from sparsekit.errors import CheckpointError, OutputError, ParameterError


def _full_disk(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    files.write_atomic(target, b"old contents\n")
    monkeypatch.setattr(files.os, "fsync", _full_disk)  # the disk fills during the write
    with pytest.raises(OutputError, match="summary.json: No space left on device"):
        files.write_atomic(target, b"new contents that never land\n")
    assert target.read_bytes() == b"old contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    with pytest.raises(CheckpointError):  # the caller's error class, same cleanup
        files.write_json(target, {"a": 1}, error=CheckpointError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_exception_in_the_block_leaves_nothing(tmp_path):
    target = tmp_path / "filters.png"
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"half a pic")
        raise RuntimeError("the drawing failed")
    assert list(tmp_path.iterdir()) == []
    with files.atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["filters.png"]
    assert target.read_bytes() == b"whole"


def test_write_json_takes_numpy_values_and_paths(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "w": np.arange(3), "p": Path("/data")}
    files.write_json(tmp_path / "a.json", obj)
    assert json.loads((tmp_path / "a.json").read_text()) == {
        "n": 3, "x": 0.5, "w": [0, 1, 2], "p": "/data",
    }  # fmt: skip
    assert files.plain_json(obj) == json.loads((tmp_path / "a.json").read_text())
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        files.json_default(object())
    assert files.read_json_or_none(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"a": ')
    assert files.read_json_or_none(tmp_path / "torn.json") is None


def test_one_line_messages():
    assert files.first_line(ValueError("  first\nsecond\n")) == "first"
    assert files.first_line(KeyError()) == "KeyError"
    assert files.one_line_reason(ValueError("bad\nmore")) == "ValueError: bad"
    assert files.one_line_reason(ParameterError("k must be > 0")) == "k must be > 0"
    assert files.one_line_reason(ParameterError("x"), name=True) == "ParameterError: x"
    assert files.one_line_reason(RuntimeError()) == "RuntimeError"
    assert files.os_reason(OSError(errno.EACCES, "Permission denied")) == "permission denied"
