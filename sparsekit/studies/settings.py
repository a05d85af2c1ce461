"""What every method of a comparison (and every trial of a sweep) shares.

:class:`CompareSettings` has a field per ``compare`` setting of
:data:`sparsekit.training.settings.SETTINGS` (the declaration), and the keys of a sweep
file's ``[data]`` and ``[train]`` tables are those settings too: a setting declared there
appears here with nothing to add.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from sparsekit.training.settings import (
    PER_METHOD,
    SHARED,
    TRAIN_CONFIG_SETTINGS,
    Setting,
    check_settings,
)

__all__ = [
    "COMPARE_DEFAULTS",
    "DATA_KEYS",
    "PER_METHOD_SETTINGS",
    "SHARED_SETTINGS",
    "TRAIN_KEYS",
    "CompareSettings",
]

#: Shared sizes used when the caller leaves them unset (methods' own defaults differ, and a
#: comparison needs one value for all).
COMPARE_DEFAULTS = {s.name: s.default for s in SHARED if s.tunable}
#: Training settings that may be set per method with ``method.name=value``.
PER_METHOD_SETTINGS = tuple(s.name for s in PER_METHOD)
#: Settings every method shares; ``method.name=value`` may not change them.
SHARED_SETTINGS = tuple(s.name for s in TRAIN_CONFIG_SETTINGS if not s.per_method)
#: The keys of a sweep file's ``[data]`` table, and of its ``[train]`` table (which also
#: takes :data:`PER_METHOD_SETTINGS`, as a default for every method).
DATA_KEYS = tuple(s.name for s in SHARED if s.group == "data")
TRAIN_KEYS = tuple(s.name for s in SHARED if s.group != "data")

#: A comparison run from Python downloads only when asked (``sparsekit compare`` asks by
#: default, as ``sparsekit train`` does).
_LIBRARY_DEFAULTS = {"download": False}


def _field(s: Setting) -> tuple[str, Any, Any]:
    default = _LIBRARY_DEFAULTS.get(s.name, s.default)
    if isinstance(default, Path):
        default = str(default)
    annotation = s.type | None if s.optional else s.type
    return s.name, annotation, field(default=default)


# The fields, made from the declaration; the class below adds the behaviour (and is the one
# pickled into worker processes, so it is an ordinary module-level class).
_CompareFields = make_dataclass("_CompareFields", [_field(s) for s in SHARED], frozen=True)
_CompareFields.__module__ = __name__


@dataclass(frozen=True)
class CompareSettings(_CompareFields):  # type: ignore[misc, valid-type]
    """What every method of a comparison shares: one field per ``compare`` setting of
    :data:`~sparsekit.training.settings.SETTINGS` (``dataset``, ``data``, ``download``,
    ``subset``, ``epochs``, ``hidden``, ``batch_size``, ``seed``, ``dtype``, ``gpu``,
    ``snapshot_every``, ``gif_frames``), with its declared default."""

    def validate(self) -> CompareSettings:
        """Raise :class:`~sparsekit.errors.ParameterError` for an impossible value (the
        declaration's one-line message); return self."""
        check_settings(asdict(self))
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
            "stream_memory": self.stream_memory,
            "remove_mean": False,
            "zca": False,
            "seed": self.seed,
        }
