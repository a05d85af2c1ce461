"""Shared pieces of the experiments: machine description, data, timing, result files.

The data directory (every script's ``--data`` default, :data:`DEFAULT_DATA`) is sparsekit's
own: ``$SPARSEKIT_DATA`` when set, else the per-user cache where ``sparsekit download mnist``
puts MNIST (:func:`sparsekit.data.paths.resolve_data_dir`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from sparsekit.data.paths import resolve_data_dir
from sparsekit.training.trainer import Callback

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = str(resolve_data_dir())


def machine() -> dict[str, Any]:
    """CPU model, core count and library versions, for the record of a result."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import scipy
    import sklearn

    import sparsekit

    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sklearn": sklearn.__version__,
        "sparsekit": sparsekit.__version__,
    }


class Clock:
    """Wall-clock seconds of named phases."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.times[name] = round(now - self._start, 2)
        self._start = now
        return self.times[name]


def write_result(name: str, result: dict[str, Any], out: str | Path | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


class EpochPrinter(Callback):
    """A trainer callback that prints one line per epoch (flushed, for logs)."""

    def __init__(self, label: str = "") -> None:
        self.label = label

    def on_epoch_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        extra = ""
        if hasattr(trainer.method, "current_k"):
            extra = f" k {trainer.method.current_k}"
        print(
            f"{self.label}epoch {metrics['epoch']:>3}{extra}  mse {metrics['mse']:.5f}  "
            f"fve {metrics.get('fve', float('nan')):.4f}  active {metrics['mean_active']:.1f}  "
            f"dead {metrics['dead_units']}  coherence {metrics.get('coherence', float('nan')):.3f}"
            f"  {metrics['seconds']:.1f}s",
            flush=True,
        )
