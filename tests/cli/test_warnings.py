"""A library warning reaches a command's user as one line, with the option as typed."""

from __future__ import annotations

import numpy as np


def test_unreachable_dead_window_warns_in_one_line(tmp_path, sparsekit_cli):
    data = tmp_path / "acts.npy"
    np.save(data, np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32))
    result = sparsekit_cli(
        "train", "topk", "--dataset", str(data), "--hidden", "16", "--k", "4",
        "--epochs", "1", "--dead-after", "1000000", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert lines == [
        "sparsekit: warning: topk: --dead-after 1000000 is not less than the 270 samples this"
        " run sees (epochs x rows): no unit can count as dead, so AuxK and resampling never run"
    ]
    assert "warnings.warn" not in result.stderr  # no source line under it
