"""The GPU check in one prepared call: install, GPU tests, both GPU benchmarks, one JSON.

    scripts/gpu-check                      # on a GPU machine (offline install from this tree)
    scripts/gpu-check --dry-run            # the same steps on the simulated device, tiny sizes
    scripts/gpu-check --out $OUT/gpu-check.json --budget 480

Steps, in order, each a subprocess with its share of the time budget (default 480 s, the
8 minutes a lent GPU allows with room to spare):

1. ``install``: ``pip install --no-deps --no-build-isolation -e .`` (no network: the GPU
   machine has CuPy, PyTorch and the rest; wheels in ``.whl/`` (e.g. platformdirs) are
   installed first with ``--no-index``). Skipped in a dry run.
2. ``tests``: the CuPy-against-NumPy tests and the matmul-precision tests.
3. ``bench_train``: every built-in for one timed epoch on MNIST, CuPy against PyTorch CUDA
   (``$SPARSEKIT_DATA`` must hold ``mnist/``: carry it, the machine has no network).
4. ``nccl_one_rank``: data-parallel training as a job of one MPI rank, its sums in NCCL,
   against one process (``scripts/nccl_one_rank.py``; docs/distributed.md).
5. ``topk_float32`` and ``topk_tf32``: ``bench/topk_speed.py`` on the GPU, CuPy against
   PyTorch eager and compiled at 256→4,096 and 768→16,384, exact float32 then TF32 on both
   sides, with the step's parts.

The JSON is rewritten after every step, so what ran is kept if the machine goes away. A dry
run (``--dry-run``) runs the same steps on the simulated device at tiny sizes, without peers,
in well under a minute: CI runs it, so this script cannot break unnoticed.
Exit status: 0 when every step that ran succeeded, else 1; 2 without a usable GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TAIL = 3000  # characters of each step's output kept in the JSON


def _gpu_environment(python: str) -> dict[str, Any]:
    """CuPy's and PyTorch's view of the device, from a subprocess (this process never
    imports CuPy)."""
    probe = (
        "import json, sys\n"
        "out = {}\n"
        "try:\n"
        "    import cupy\n"
        "    props = cupy.cuda.runtime.getDeviceProperties(0)\n"
        "    name = props['name']\n"
        "    out['device'] = name.decode() if isinstance(name, bytes) else name\n"
        "    out['cupy'] = cupy.__version__\n"
        "    out['cuda_runtime'] = cupy.cuda.runtime.runtimeGetVersion()\n"
        "except Exception as exc:\n"
        "    out['error'] = f'{type(exc).__name__}: {exc}'\n"
        "try:\n"
        "    import torch\n"
        "    out['torch'] = torch.__version__\n"
        "    out['torch_cuda'] = torch.cuda.is_available()\n"
        "except Exception as exc:\n"
        "    out['torch'] = f'unavailable: {type(exc).__name__}'\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (proc.stderr or "no output").strip().splitlines()[-1:]}


def _steps(python: str, dry: bool, work: Path) -> list[tuple[str, list[str], Path | None]]:
    """(name, command, the JSON file it writes or None) for every step."""
    steps: list[tuple[str, list[str], Path | None]] = []
    if not dry:
        wheels = sorted((ROOT / ".whl").glob("*.whl"))
        install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        if wheels:
            steps.append(("wheels", [*install, "--no-index", *map(str, wheels)], None))
        steps.append(("install", [*install, "-e", str(ROOT)], None))
    tests = ["tests/backend/test_gpu.py", "tests/backend/test_matmul_precision.py"]
    steps.append(("tests", [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests], None))
    bench = [python, str(ROOT / "bench" / "bench_train.py"), "--gpu", "--repeats", "1"]
    if dry:
        bench += ["--simulated", "--n", "512", "--hidden", "32", "--methods", "plain,ksparse"]
        bench += ["--epochs", "1"]
    steps.append(("bench_train", [*bench, "--json", str(work / "bench_train.json")], work / "bench_train.json"))
    nccl = [python, str(ROOT / "scripts" / "nccl_one_rank.py")]
    steps.append(("nccl_one_rank", nccl + (["--simulated"] if dry else []), None))
    for precision in ("float32", "tf32"):
        out = work / f"topk_{precision}.json"
        topk = [python, str(ROOT / "bench" / "topk_speed.py"), "--matmul-precision", precision]
        topk += ["--torch-python", python]
        if dry:
            topk += ["--device", "simulated", "--shapes", "32x256", "--batch", "128"]
            topk += ["--steps", "1", "--warmup", "1"]
        else:
            topk += ["--device", "gpu", "--steps", "5", "--warmup", "2"]
        steps.append((f"topk_{precision}", [*topk, "--json", str(out)], out))
    return steps


def run(dry: bool, out: Path, budget: float, python: str) -> int:
    started = time.monotonic()
    # Each benchmark's own JSON goes to a scratch folder; the report embeds them.
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    report: dict[str, Any] = {
        "dry_run": dry,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "budget_seconds": budget,
        "steps": {},
    }
    if not dry:
        report["gpu"] = _gpu_environment(python)
        if "device" not in report["gpu"]:
            out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"gpu-check: no usable GPU: {report['gpu'].get('error')}", file=sys.stderr)
            return 2
    failed = False
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, command, result_file in _steps(python, dry, work):
        left = budget - (time.monotonic() - started)
        if left < 10:
            report["steps"][name] = {"skipped": "the time budget was spent"}
            failed = True
            continue
        print(f"gpu-check: {name} ({left:.0f} s left) ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        entry: dict[str, Any] = {"command": command}
        try:
            proc = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left
            )
            entry["rc"] = proc.returncode
            entry["output_tail"] = (proc.stdout + proc.stderr)[-TAIL:]
        except subprocess.TimeoutExpired as exc:
            entry["rc"] = None
            entry["error"] = f"timed out after {left:.0f} s"
            partial = exc.stdout or b""
            entry["output_tail"] = (partial.decode() if isinstance(partial, bytes) else partial)[-TAIL:]
        entry["seconds"] = round(time.monotonic() - t0, 1)
        if result_file is not None and result_file.exists():
            entry["result"] = json.loads(result_file.read_text())
        failed |= entry["rc"] != 0
        report["steps"][name] = entry
        report["wall_seconds"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(report, indent=2, default=float) + "\n")  # after every step
        print(f"gpu-check: {name}: rc {entry['rc']} in {entry['seconds']} s", file=sys.stderr)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"gpu-check: wrote {out} ({report['wall_seconds']} s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the simulated device, tiny sizes")
    default_out = Path(os.environ["OUT"]) / "gpu-check.json" if os.environ.get("OUT") else (
        ROOT / "bench" / "results" / "gpu-check.json"
    )
    parser.add_argument("--out", type=Path, default=default_out, help="the JSON to write")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of every step")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return run(args.dry_run, args.out, args.budget, args.python)


if __name__ == "__main__":
    sys.exit(main())
