"""Training from a shard folder on disk against the same rows from memory: steps/s and peak RSS.

    .venv/bin/python bench/stream_speed.py                    # 10 GB folder, as issue 29 asks
    .venv/bin/python bench/stream_speed.py --size-gb 2 --steps 12 --stream-memory 256

TopK 768 -> 16,384 (k 32, batch 4,096, float32, Adam; AuxK with dead_after one batch on both
sides, so it runs). The folder (``--folder``, default
``/tmp/sparsekit-stream-bench``; never inside the repository) holds ``--size-gb`` of float32
``.npy`` shards of ``--shard-rows`` rows each, written once and reused while its size matches.
The rows are Gaussian of rank 16 plus a little noise: speed does not depend on what they mean.

Two sides, each in a fresh worker process, alternating for ``--repeats`` rounds:

* ``disk``: ``load_dataset(folder, stream_memory=...)``, the trainer's stream plan (windows of
  shuffled segments read ahead by the background reader). Before each disk round the
  shards' pages are dropped from the page cache with ``posix_fadvise(POSIX_FADV_DONTNEED)``
  (no root needed; ``drop_caches`` would need it), so the reads come from the disk; the
  JSON records whether that call was available.
* ``memory``: the first ``(warmup + steps) × batch`` rows of the same folder loaded into an
  array first (the rows the disk side's steps also take, in count), trained through the
  in-memory batch plan.

Per side: the median seconds per step over ``--steps`` timed steps after ``--warmup`` steps
(the first window's read is in the warm-up), steps/s, the worker's peak resident memory
(``ru_maxrss``) and the longest time a step waited for its batch (the disk side's stall).
The ratio is memory steps/s ÷ disk steps/s per round, the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpuinfo import cpu_model  # bench/, on the path when run as a script

ROOT = Path(__file__).resolve().parents[1]
DIM, HIDDEN, K, BATCH = 768, 16384, 32, 4096


def make_folder(folder: Path, size_gb: float, shard_rows: int, dim: int) -> dict[str, Any]:
    """Write (or reuse) a folder of ``size_gb`` of float32 shards."""
    import numpy as np

    rows_total = int(size_gb * 1e9 // (dim * 4))
    shards = max(1, -(-rows_total // shard_rows))
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "bench.json"
    want = {"rows": rows_total, "dim": dim, "shard_rows": shard_rows}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return {"written": False, "seconds": 0.0, **want}
    for old in folder.glob("*.npy"):
        old.unlink()
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((16, dim)).astype(np.float32)
    left = rows_total
    for i in range(shards):
        n = min(shard_rows, left)
        left -= n
        x = rng.standard_normal((n, 16), dtype=np.float32) @ basis
        x += 0.01 * rng.standard_normal((n, dim), dtype=np.float32)
        np.save(folder / f"shard_{i:05d}.npy", x)
    os.sync()
    stamp.write_text(json.dumps(want))
    return {"written": True, "seconds": time.perf_counter() - start, **want}


def drop_pages(folder: Path) -> bool:
    """Drop the shards' pages from the page cache (``POSIX_FADV_DONTNEED``)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in folder.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One side, in this (fresh) process."""
    import numpy as np

    import sparsekit
    from sparsekit.data import ArrayDataset, load_dataset
    from sparsekit.training.settings import resolve_config
    from sparsekit.training.trainer import Callback, Trainer, make_method

    total = args.warmup + args.steps
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.side == "disk":
        data: Any = load_dataset(args.folder, stream_memory=args.stream_memory, stats_rows=8192)
    else:
        stream = load_dataset(args.folder, stats_rows=8192)
        rows = []
        count = 0
        for j in range(len(stream.segments)):
            rows.append(stream.read_segment(j))
            count += len(rows[-1])
            if count >= total * args.batch:
                break
        data = ArrayDataset(np.concatenate(rows)[: total * args.batch], name="memory")
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    class Timer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.last = time.perf_counter()

        def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
            self.last = time.perf_counter()

        def on_step_end(self, trainer: Trainer, step: int, steps: int) -> None:
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now
            if len(self.times) >= total:
                trainer.stop_requested = True

    class Waits:
        """Wraps the plan's ``batch`` to time how long each step waits for its rows."""

        def __init__(self, plan: Any) -> None:
            self.plan, self.waits = plan, []

        def __getattr__(self, name: str) -> Any:
            return getattr(self.plan, name)

        def batch(self, step: int, dtype: Any) -> Any:
            start = time.perf_counter()
            out = self.plan.batch(step, dtype)
            self.waits.append(time.perf_counter() - start)
            return out

    # dead_after fixed (one batch, as bench/topk_speed.py): by default it is a tenth of the
    # run's samples, which differ between the sides (the folder's rows, the rows loaded)
    method = make_method("topk", k=args.k, dead_after=args.batch)
    config = resolve_config(method, hidden=args.hidden, batch_size=args.batch, epochs=1, seed=0)
    timer = Timer()
    trainer = Trainer(method, data, config, callbacks=[timer])
    waits = Waits(trainer.batches)
    trainer.batches = waits
    trainer.fit()
    timed = timer.times[args.warmup : total]
    median = statistics.median(timed)
    return {
        "side": args.side,
        "sparsekit": sparsekit.__version__,
        "median_step_s": median,
        "steps_per_s": 1.0 / median,
        "timed_steps": len(timed),
        "longest_batch_wait_s": max(waits.waits[args.warmup : total]),
        "median_batch_wait_s": statistics.median(waits.waits[args.warmup : total]),
        "first_batch_wait_s": waits.waits[0],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_after_imports_mib": rss_before,
        "rss_after_data_mib": rss_data,
        "window_segments": getattr(data, "window_segments", None),
        "segment_rows": getattr(data, "segment_rows", None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="/tmp/sparsekit-stream-bench")
    parser.add_argument("--size-gb", type=float, default=10.0)
    parser.add_argument("--shard-rows", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stream-memory", type=int, default=1024, help="MiB")
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--k", type=int, default=K)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--side", choices=("disk", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(worker(args)))
        return
    if Path(args.folder).resolve().is_relative_to(ROOT):
        parser.error("--folder must be outside the repository")
    folder = make_folder(Path(args.folder), args.size_gb, args.shard_rows, DIM)
    print(f"folder: {args.folder} {folder}", flush=True)
    rounds: list[dict[str, Any]] = []
    for r in range(args.repeats):
        row: dict[str, Any] = {}
        for side in ("disk", "memory"):
            dropped = drop_pages(Path(args.folder)) if side == "disk" else None
            cmd = [sys.executable, __file__, "--side", side, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(f"{side} worker failed:\n{proc.stderr}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["page_cache_dropped"] = dropped
            row[side] = result
            print(f"round {r + 1} {side}: {result['steps_per_s']:.3f} steps/s, peak "
                  f"{result['peak_rss_mib']:.0f} MiB, longest wait "
                  f"{result['longest_batch_wait_s'] * 1000:.1f} ms", flush=True)
        row["memory_over_disk"] = row["memory"]["steps_per_s"] / row["disk"]["steps_per_s"]
        rounds.append(row)
    ratio = statistics.median(r["memory_over_disk"] for r in rounds)
    summary = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"cpu": cpu_model(platform.processor()), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "folder": folder,
        "rounds": rounds,
        "median_memory_over_disk": ratio,
        "disk_peak_rss_mib": max(r["disk"]["peak_rss_mib"] for r in rounds),
    }
    print(f"memory/disk steps/s (median of {len(rounds)}): {ratio:.3f}; disk peak RSS "
          f"{summary['disk_peak_rss_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
