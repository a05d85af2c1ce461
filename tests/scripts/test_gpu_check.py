"""scripts/gpu-check's dry run: every step of the GPU check runs, on the simulated device.

The real check runs only where a GPU is lent; this keeps the script from breaking unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_dry_run_runs_every_step_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu-check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "gpu-check"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True
    steps = ["tests", "bench_train", "nccl_one_rank", "topk_float32", "topk_tf32"]
    assert list(report["steps"]) == steps
    assert all(step["rc"] == 0 for step in report["steps"].values())
    methods = [row["method"] for row in report["steps"]["bench_train"]["result"]["results"]]
    assert methods == ["plain", "ksparse"]
    said = report["steps"]["nccl_one_rank"]["output_tail"]  # the simulated NCCL, or skipped
    assert "sums through simulated-nccl" in said or "mpi4py missing" in said
    for precision in ("float32", "tf32"):
        row = report["steps"][f"topk_{precision}"]["result"]["results"][0]
        sk = row["sparsekit"]
        assert sk["device"] == "simulated" and sk["matmul_precision"] == precision
        # Every part of the step has its line, and the encoder product is the yardstick.
        assert set(sk["parts"]) >= {"encoder product", "selection", "auxk", "adam"}
        assert sk["step_over_encoder_product"] > 1
        assert row["torch"] == {"skipped": "no peer on the simulated device"}


def test_a_machine_without_a_gpu_exits_2_with_one_line(tmp_path):
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(out),
         "--python", sys.executable],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 2:
        pytest.skip("this machine has a usable GPU")
    assert proc.stderr.strip().startswith("gpu-check: no usable GPU:")
    assert len(proc.stderr.strip().splitlines()) == 1
