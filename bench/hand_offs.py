"""Spinning against blocking hand-offs between sparsekit's threads, measured in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/hand_offs.py --methods plain,kl

Two parts, both alternating the two modes so that a drifting host moves both alike:

* ``product``: a 256×784×1000 float32 product split over two threads (the encoder product
  of the MNIST benchmark), 300 calls per mode: the worker's start lag (from the call to the
  start of its part) and the call's percentiles;
* ``epochs``: one training epoch (20,000 MNIST images, hidden 1000, batch 256) per mode and
  round; the median of the pairs' ratios (spinning ÷ blocking).

Spinning is ``SPARSEKIT_SPIN_US`` at its default, blocking is ``SPARSEKIT_SPIN_US=0``; the
workers are restarted between modes (they read the setting when they start). Prints one JSON
object per part; ``--json PATH`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any

import numpy as np
from cpuinfo import cpu_model  # bench/, on the path when run as a script

from sparsekit.backend import spin, threads
from sparsekit.backend.process import own_threads

MODES = {"spin": str(spin.DEFAULT_SPIN_US), "block": "0"}


def _restart_workers(mode: str) -> None:
    os.environ["SPARSEKIT_SPIN_US"] = MODES[mode]
    if threads._workers is not None:
        threads._workers.stop()
    threads._workers = None


def product(calls: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 784), dtype=np.float32)
    b = rng.standard_normal((1000, 784), dtype=np.float32).T
    out = np.empty((256, 1000), dtype=np.float32)
    result: dict[str, Any] = {"part": "product", "shape": [256, 784, 1000]}
    started: list[float] = []

    def part(lo: int, hi: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            started.append(time.perf_counter())
        np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])

    for mode in ("block", "spin", "block", "spin"):
        _restart_workers(mode)
        lags, seconds = [], []

        with own_threads():
            for _ in range(calls // 2):
                start = time.perf_counter()
                threads.split_run(part, 1000, min_size=2)
                seconds.append(time.perf_counter() - start)
                lags.append(started[-1] - start)
                time.sleep(0.0002)  # a gap, as between the products of a step
        entry = result.setdefault(mode, {"lag_us": [], "call_us": []})
        entry["lag_us"] += [1e6 * x for x in lags]
        entry["call_us"] += [1e6 * x for x in seconds]
    for mode in MODES:
        entry = result[mode]
        result[mode] = {
            "lag_us_p50_p90": np.percentile(entry["lag_us"], [50, 90]).round(1).tolist(),
            "call_us_p10_p50_p90": np.percentile(entry["call_us"], [10, 50, 90]).round().tolist(),
        }
    return result


def epochs(name: str, rounds: int, data_root: str | None) -> dict[str, Any]:
    from sparsekit.data import load_mnist
    from sparsekit.methods.registry import load_registry
    from sparsekit.training.settings import resolve_config
    from sparsekit.training.trainer import Trainer

    data = load_mnist(data_root, subset=20000)
    settings = {"k": 25, "k_start": 25} if name == "ksparse" else {}
    method = load_registry().create(name, **settings)
    cfg = resolve_config(
        method,
        hidden=1000,
        batch_size=256,
        epochs=1 + 2 * rounds,
        dtype="float32",
        optimizer=None if method.own_update else "adam",
        seed=0,
    )
    trainer = Trainer(method, data, cfg)
    trainer.train_epoch()  # warm-up: compiled loops, caches
    seconds: dict[str, list[float]] = {"spin": [], "block": []}
    for r in range(rounds):
        for mode in ("spin", "block") if r % 2 else ("block", "spin"):
            _restart_workers(mode)
            seconds[mode].append(trainer.train_epoch()["seconds"])
    ratios = [s / b for s, b in zip(seconds["spin"], seconds["block"], strict=True)]
    return {
        "part": "epochs",
        "method": name,
        "rounds": rounds,
        "spin_median_s": statistics.median(seconds["spin"]),
        "block_median_s": statistics.median(seconds["block"]),
        "spin_over_block_median": statistics.median(ratios),
        "ratios": [round(x, 3) for x in ratios],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="plain,kl,arora,ksparse")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--data", default=os.environ.get("SPARSEKIT_TEST_DATA"))
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("SPARSEKIT_NUM_THREADS", "2")
    print(cpu_model(), flush=True)
    results = [product(args.calls)]
    print(json.dumps(results[-1]), flush=True)
    for name in filter(None, args.methods.split(",")):
        results.append(epochs(name, args.rounds, args.data))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"cpu": cpu_model(), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
