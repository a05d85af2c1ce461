#!/usr/bin/env python
"""Train every built-in method briefly on MNIST and collect its figures in docs/gallery/.

Usage (from the repository root)::

    .venv/bin/python scripts/make_gallery.py --data ../shared/data [--subset 10000] [--epochs 4]

For each method it runs ``sparsekit train`` into a temporary folder, redraws the figures with
``sparsekit export --max-filters 100`` (a 10x10 grid keeps the files small) into
``docs/gallery/<method>/``, copies ``summary.json``, drops a ``progression.gif`` of 1 MB or
more, and finally rewrites ``docs/gallery.md`` with the command, the time it took and a table
of the final measures. Nothing is downloaded (``--no-download``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("plain", "l2", "kl", "arora", "ksparse")
GIF_LIMIT = 1 << 20


def sparsekit(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sparsekit.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"sparsekit {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "docs" / "gallery"))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()

    out = Path(args.out)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for method in args.methods:
            t0 = time.perf_counter()
            run_dir = sparsekit(
                "train", method, "--data", args.data, "--subset", str(args.subset),
                "--epochs", str(args.epochs), "--out", work, "--no-download",
            )  # fmt: skip
            dest = out / method
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            sparsekit("export", run_dir, "--max-filters", "100", "--out", str(dest))
            shutil.copy(Path(run_dir) / "summary.json", dest / "summary.json")
            gif = dest / "progression.gif"
            if gif.exists() and gif.stat().st_size >= GIF_LIMIT:
                gif.unlink()
            summary = json.loads((dest / "summary.json").read_text())
            rows.append((method, summary, time.perf_counter() - t0, gif.exists()))
            print(f"{method}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    total = time.perf_counter() - started
    write_doc(out.parent / "gallery.md", rows, args, total)


def write_doc(path: Path, rows: list, args: argparse.Namespace, total: float) -> None:
    lines = [
        "# Gallery",
        "",
        "Every built-in method trained briefly on MNIST with its default settings (see",
        "`sparsekit list`), as `sparsekit train` leaves it: the first 100 filters, how they",
        "changed (one frame per epoch), 20 held-out test images above their reconstructions,",
        "and the training curves. Short runs: the filters are still far from converged.",
        "",
        "Made with (from the repository root, on a shared 2-core CPU):",
        "",
        "```console",
        f"$ .venv/bin/python scripts/make_gallery.py --data ../shared/data --subset {args.subset}"
        f" --epochs {args.epochs}",
        "```",
        "",
        f"which took {total / 60:.1f} minutes. It runs, for each method,",
        f"`sparsekit train METHOD --subset {args.subset} --epochs {args.epochs}` and",
        "`sparsekit export RUN_DIR --max-filters 100 --out docs/gallery/METHOD`",
        "(see [runs.md](runs.md)).",
        "",
        "| method | hidden | epochs | final loss | mse | mean active | dead units | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, s, _, _ in rows:
        f = s["final"]
        lines.append(
            f"| [{method}](#{method}) | {s['train']['hidden']} | {s['epochs']} | "
            f"{f['loss']:.4f} | {f['mse']:.4f} | {f['mean_active']:.1f} | {f['dead_units']} | "
            f"{s['total_seconds']:.0f} |"
        )
    for method, s, _, has_gif in rows:
        params = ", ".join(f"{k}={v}" for k, v in s["method_params"].items()) or "no parameters"
        t = s["train"]
        lines += [
            "",
            f"## {method}",
            "",
            f"{params}; hidden {t['hidden']}, {t['optimizer']} lr {t['lr']}, batch "
            f"{t['batch_size']}, {'tied' if t['tied'] else 'untied'}.",
            "",
            f"![{method} filters](gallery/{method}/filters.png)",
        ]
        if has_gif:
            lines.append(f"![{method} filter progression](gallery/{method}/progression.gif)")
        lines += [
            "",
            f"![{method} reconstructions](gallery/{method}/reconstructions.png)",
            "",
            f"![{method} curves](gallery/{method}/curves.png)",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
