"""Measure how a sweep scales with the workers of a local Dask cluster (docs/sweeps.md).

    python scripts/sweep_scaling.py docs/examples/sweep-scaling.toml --workers 1 2

Runs the whole sweep once per worker count, each time into a fresh folder (nothing is
skipped), and prints a Markdown table: wall-clock seconds from the command's start to the
last trial (cluster start-up included), the seconds the cluster took to start, trials per
hour, the mean seconds per trial, and the mean seconds each trial spent loading its data
(between its "loading data" and "started" events, in its worker). Also prints what one copy
of the data costs in memory and time when loaded in a fresh process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(sweep_file: Path, workers: int) -> dict[str, float]:
    from sparsekit.studies.sweep import run_sweep

    stamps: dict[str, float] = {}
    loading: dict[str, float] = {}
    load_seconds: list[float] = []

    def on_event(event) -> None:
        now = time.perf_counter()
        if event.kind == "cluster":
            stamps["cluster"] = now
        elif event.kind == "status" and event.data.get("text") == "loading data":
            loading[event.trial] = now
        elif event.kind == "started" and event.trial in loading:
            load_seconds.append(now - loading.pop(event.trial))

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as out:
        start = time.perf_counter()
        sweep = run_sweep(sweep_file, out=out, workers=workers, on_event=on_event, report=False)
        wall = time.perf_counter() - start
    n = len(sweep.finished)
    if sweep.failed:
        raise SystemExit(f"{len(sweep.failed)} trials failed: {sweep.failed}")
    return {
        "workers": workers,
        "load": load,
        "trials": n,
        "wall": wall,
        "startup": stamps.get("cluster", start) - start,
        "per_hour": 3600.0 * n / wall,
        "per_trial": statistics.mean(r.seconds for r in sweep.results.values()),
        "loading": statistics.mean(load_seconds) if load_seconds else float("nan"),
    }


DATA_PROBE = """
import resource, sys, time
import numpy as np
from sparsekit.data import load_dataset
from sparsekit.studies.sweep import load_sweep_file
data = load_sweep_file(sys.argv[1])[0].get("data", {})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
ds = load_dataset(data.get("dataset", "mnist"), data.get("data"), split="train", subset=data.get("subset"))
x = ds.take(np.arange(len(ds)))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(f"{len(ds)} {ds.dim} {wall:.2f} {cpu:.2f} {x.nbytes / 2**20:.0f} {grown:.0f}")
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts, run in this order"
    )
    args = parser.parse_args(argv)
    probe = subprocess.run(
        [sys.executable, "-c", DATA_PROBE, str(args.sweep_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    n, dim, seconds, cpu, mib, grown = probe.stdout.split()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(
        f"data: {n} samples x {dim}, loaded in a fresh process in {seconds} s ({cpu} s of CPU), "
        f"{mib} MiB as float32, peak memory +{grown} MiB\n"
    )
    print(
        "| workers | load before | trials | wall s | cluster start s | trials / hour "
        "| s / trial | data loading s / trial |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for workers in args.workers:
        r = run_once(args.sweep_file, workers)
        print(
            f"| {r['workers']} | {r['load']:.1f} | {r['trials']} | {r['wall']:.0f} | "
            f"{r['startup']:.1f} | {r['per_hour']:.0f} | {r['per_trial']:.1f} | "
            f"{r['loading']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
