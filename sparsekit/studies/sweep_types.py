"""What a sweep is made of: its trials, its plan, its events and its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit.layout import RESULTS
from sparsekit.studies.jobs import MethodJob, MethodResult

# The trial states, here too for the sweep's users (defined in sparsekit.studies.states).
from sparsekit.studies.states import (  # noqa: F401
    FAILED,
    FINISHED,
    NOT_RUN,
    PARTIAL,
    TRIAL_STATES,
    trial_state,
)

#: Measures a best setting may be chosen by, and whether higher is better.
BEST_BY = {"fve": True, "mse": False, "loss": False}

@dataclass(frozen=True)
class Trial:
    """One point of the grid: a method with all its settings, and its run directory."""

    id: str
    job: MethodJob
    #: The values of this trial's grid axes, for display (``{"k": 10, "seed": 0}``).
    label: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.job.method


@dataclass
class SweepPlan:
    """A checked sweep file: every trial, and how to report on them."""

    name: str
    trials: list[Trial]
    plugins: tuple[str, ...] = ()
    best_by: str = "fve"
    title: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # the TOML text
    path: Path | None = None


@dataclass(frozen=True)
class SweepEvent:
    """Progress of a sweep, as ``on_event`` receives it.

    ``kind``: ``"planned"`` (``trials``, ``todo``, ``skipped``, ``directory``), ``"cluster"``
    (``dashboard``: the address or None, ``scheduler``, ``workers``, ``threads``: trials
    at once, ``env``: the thread variables of a local cluster's workers), then per trial the
    kinds of :class:`~sparsekit.studies.jobs.CompareEvent` (``"status"``, ``"started"``,
    ``"progress"``, ``"epoch"``, ``"resumed"`` when a lost worker's trial starts again
    elsewhere; ``data["worker"]`` is the worker's address) and
    ``"finished"`` / ``"failed"`` (``result``: a :class:`~sparsekit.studies.jobs.MethodResult`).
    """

    kind: str
    trial: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sweep:
    """The outcome of :func:`run_sweep`."""

    directory: Path
    plan: SweepPlan
    results: dict[str, MethodResult]
    #: Trials that were already finished and not run again.
    skipped: list[str] = field(default_factory=list)
    report: dict[str, Path] = field(default_factory=dict)
    dashboard: str | None = None

    @property
    def finished(self) -> list[str]:
        return [k for k, r in self.results.items() if r.ok]

    @property
    def failed(self) -> list[str]:
        return [k for k, r in self.results.items() if not r.ok]

    @property
    def results_csv(self) -> Path:
        return self.directory / RESULTS
