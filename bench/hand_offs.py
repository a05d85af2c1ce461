"""Spinning against blocking hand-offs between sparsekit's threads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/hand_offs.py --methods plain,kl

Three parts, each alternating the two modes so that a drifting host moves both alike:

* ``product``: a 256×784×1000 float32 product split over two threads (the encoder product
  of the MNIST benchmark), 300 calls per mode: the worker's start lag (from the call to the
  start of its part) and the call's percentiles;
* ``epochs``: one training epoch (20,000 MNIST images, hidden 1000, batch 256) per mode and
  round; the median of the pairs' ratios (spinning ÷ blocking).

* ``shared``: two processes training at once (``--shared-rounds`` rounds per mode, each
  process two epochs with two threads after a warm-up one) on a machine of two CPUs: the
  case where a spinning thread takes a CPU the other process wants (the spin gives up, and
  waits block for a while, once a yield comes back late: ``sparsekit.backend.spin``).

Spinning is ``SPARSEKIT_SPIN_US`` at its default, blocking is ``SPARSEKIT_SPIN_US=0``; the
workers are restarted between modes (they read the setting when they start). Prints one JSON
object per part; ``--json PATH`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def _medians(part: str, name: str, rounds: int, seconds: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "part": part,
        "method": name,
        "rounds": rounds,
        "spin_median_s": statistics.median(seconds["spin"]),
        "block_median_s": statistics.median(seconds["block"]),
    }


def epochs(name: str, rounds: int, data_root: str | None) -> dict[str, Any]:
    trainer = _trainer(name, 1 + 2 * rounds, data_root)
    trainer.train_epoch()  # warm-up: compiled loops, caches
    seconds: dict[str, list[float]] = {"spin": [], "block": []}
    for r in range(rounds):
        for mode in ("spin", "block") if r % 2 else ("block", "spin"):
            _restart_workers(mode)
            seconds[mode].append(trainer.train_epoch()["seconds"])
    ratios = [s / b for s, b in zip(seconds["spin"], seconds["block"], strict=True)]
    return {
        **_medians("epochs", name, rounds, seconds),
        "spin_over_block_median": statistics.median(ratios),
        "ratios": [round(x, 3) for x in ratios],
    }


def _trainer(name: str, epochs_: int, data_root: str | None) -> Any:
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
        epochs=epochs_,
        dtype="float32",
        optimizer=None if method.own_update else "adam",
        seed=0,
    )
    return Trainer(method, data, cfg)


def child(name: str, epochs_: int, data_root: str | None) -> None:
    """One of the two processes of ``shared``: prints its epochs' seconds (after a warm-up)
    and how many waits found their CPU wanted."""
    trainer = _trainer(name, epochs_ + 1, data_root)
    trainer.train_epoch()
    seconds = [trainer.train_epoch()["seconds"] for _ in range(epochs_)]
    workers = threads._workers
    contended = workers._spin.contended if workers and workers._spin else 0
    print(json.dumps({"seconds": seconds, "contended": contended}), flush=True)


def shared(name: str, rounds: int, data_root: str | None) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {"spin": [], "block": []}
    contended: dict[str, int] = {"spin": 0, "block": 0}
    for r in range(rounds):
        for mode in ("spin", "block") if r % 2 else ("block", "spin"):
            env = dict(os.environ, SPARSEKIT_SPIN_US=MODES[mode], SPARSEKIT_NUM_THREADS="2")
            command = [sys.executable, __file__, "--child", name, "--data", data_root or ""]
            procs = [
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(2)
            ]
            for proc in procs:
                out, _ = proc.communicate()
                if proc.returncode:
                    raise SystemExit(f"shared: a training process failed ({proc.returncode})")
                found = json.loads(out.strip().splitlines()[-1])
                seconds[mode] += found["seconds"]
                contended[mode] += found["contended"]
    medians = _medians("shared", name, rounds, seconds)
    return {
        **medians,
        "spin_over_block": medians["spin_median_s"] / medians["block_median_s"],
        "spin_contended_waits": contended["spin"],
        "seconds": {mode: [round(x, 2) for x in v] for mode, v in seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="plain,kl,arora,ksparse")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--data", default=os.environ.get("SPARSEKIT_TEST_DATA"))
    parser.add_argument("--shared-rounds", type=int, default=3)
    parser.add_argument("--parts", default="product,epochs,shared")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.child:
        child(args.child, 2, args.data or None)
        return
    os.environ.setdefault("SPARSEKIT_NUM_THREADS", "2")
    parts = set(args.parts.split(","))
    print(cpu_model(), flush=True)
    results = []
    if "product" in parts:
        results.append(product(args.calls))
        print(json.dumps(results[-1]), flush=True)
    for name in filter(None, args.methods.split(",")):
        if "epochs" in parts:
            results.append(epochs(name, args.rounds, args.data))
            print(json.dumps(results[-1]), flush=True)
        if "shared" in parts:
            results.append(shared(name, args.shared_rounds, args.data))
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"cpu": cpu_model(), "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
