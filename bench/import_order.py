"""Does training speed depend on how a script imports sparsekit? (issue 17, item 4)

Trains ``sparsekit.train("ksparse", mnist, hidden=1000, epochs=2, k=25, k_start=25)`` on the
60,000 MNIST training images in fresh processes, alternating three ways of starting:

* ``numpy-first``: ``import numpy`` then ``import sparsekit``, nothing else (most scripts);
* ``sparsekit-first``: ``import sparsekit`` before NumPy;
* ``command``: as the ``sparsekit`` command: ``sparsekit.tune_process()`` first.

It prints the median training seconds of each and their ratios to ``command``. Older
sparsekit versions (before ``tune_process`` existed) run the ``command`` case without it.

    python bench/import_order.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from sae_compare import cpu_model  # bench/ is on sys.path when this script runs

CHILD = """
import sys, time
mode = sys.argv[1]
if mode == "numpy-first":
    import numpy
    import sparsekit
else:
    import sparsekit
    if mode == "command" and hasattr(sparsekit, "tune_process"):
        sparsekit.tune_process()
    import numpy
from sparsekit.data import load_dataset
data = load_dataset("mnist", split="train")
start = time.perf_counter()
sparsekit.train("ksparse", data, hidden=1000, epochs=2, k=25, k_start=25, seed=0)
print(time.perf_counter() - start)
"""

MODES = ("numpy-first", "sparsekit-first", "command")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True
            )
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            seconds[mode].append(float(out.stdout.strip().splitlines()[-1]))
            print(
                f"[bench] round {r + 1}/{args.repeats} {mode}: {seconds[mode][-1]:.2f} s",
                flush=True,
            )
    median = {m: statistics.median(v) for m, v in seconds.items()}
    cpu = cpu_model()
    print(
        f"CPU: {cpu.get('model', cpu['machine'])} ({cpu['cpus']} CPUs); load average {os.getloadavg()}"
    )
    for mode in MODES:
        ratio = median[mode] / median["command"]
        print(f"{mode:<16} {median[mode]:7.2f} s   {ratio:5.2f}x the command")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "seconds": seconds, "median": median}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
