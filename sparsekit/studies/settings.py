"""What every method of a comparison (and every trial of a sweep) shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsekit.errors import ParameterError

#: Shared sizes used when the caller leaves them unset (methods' own defaults differ, and a
#: comparison needs one value for all).
COMPARE_DEFAULTS = {"hidden": 196, "epochs": 10, "batch_size": 128}
#: Training settings that may be set per method with ``method.name=value``.
PER_METHOD_SETTINGS = ("lr", "optimizer", "momentum", "tied", "center")
#: Settings every method shares; ``method.name=value`` may not change them.
SHARED_SETTINGS = ("hidden", "epochs", "batch_size", "seed", "dtype", "gpu")


@dataclass(frozen=True)
class CompareSettings:
    """What every method of a comparison shares."""

    dataset: str = "mnist"
    data: str | None = None
    download: bool = False
    subset: int | None = None
    seed: int = 0
    hidden: int = COMPARE_DEFAULTS["hidden"]
    epochs: int = COMPARE_DEFAULTS["epochs"]
    batch_size: int = COMPARE_DEFAULTS["batch_size"]
    dtype: str = "float32"
    gpu: bool = False
    snapshot_every: int = 1
    #: Frames each progression.gif shows at most, evenly spread over the snapshots taken.
    gif_frames: int = 60

    def validate(self) -> CompareSettings:
        frames = self.gif_frames
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
            raise ParameterError(f"gif frames must be an integer >= 2, got {frames!r}")
        for name in ("hidden", "epochs", "batch_size", "snapshot_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(
                    f"{name.replace('_', ' ')} must be a positive integer, got {value!r}"
                )
        if self.subset is not None and (
            isinstance(self.subset, bool) or not isinstance(self.subset, int) or self.subset < 1
        ):
            raise ParameterError(
                f"subset must be a positive number of samples, got {self.subset!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed must be an integer >= 0, got {self.seed!r}")
        return self

    def data_spec(self) -> dict[str, Any]:
        """How a run reloads its data (stored in the run's config and checkpoint)."""
        spec = self.dataset
        if Path(spec).exists():
            spec = str(Path(spec).resolve())
        return {
            "spec": spec,
            "data": str(Path(self.data).resolve()) if self.data is not None else None,
            "split": "train",
            "subset": self.subset,
            "download": False,
            "remove_mean": False,
            "zca": False,
            "seed": self.seed,
        }
