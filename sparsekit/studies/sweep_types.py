"""What a sweep is made of: its trials, its plan, its events and its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsekit.files import read_json_or_none
from sparsekit.layout import CHECKPOINT, FAILURE, MEASURES, RESULTS
from sparsekit.studies.jobs import MethodJob, MethodResult

#: Measures a best setting may be chosen by, and whether higher is better.
BEST_BY = {"fve": True, "mse": False, "loss": False}

# The four states of a trial, the same in ``--dry-run``, results.csv, each run's
# summary.json and the report; :func:`trial_state` is the one place that decides them.
#: Its measures are there: trained to the end and measured.
FINISHED = "finished"
#: Stopped part way (Ctrl-C, a lost worker) with a checkpoint: the next run resumes it.
PARTIAL = "partial"
#: Ended with an error (failure.json says why); the next run trains it again.
FAILED = "failed"
#: Nothing to resume from: never started, or stopped before its first checkpoint.
NOT_RUN = "not run"
TRIAL_STATES = (FINISHED, PARTIAL, FAILED, NOT_RUN)


def trial_state(run_dir: str | Path) -> str:
    """The state of the trial in ``run_dir``, from its files alone (one of TRIAL_STATES).

    An interruption is not a failure: a failure.json that says ``interrupted`` yields to
    the checkpoint (``partial``), or to ``not run`` without one; any other failure.json
    makes it ``failed`` even with a checkpoint, since the error would come back.
    """
    run_dir = Path(run_dir)
    if (run_dir / MEASURES).is_file():
        return FINISHED
    if (run_dir / FAILURE).is_file():
        failure = read_json_or_none(run_dir / FAILURE)
        if not (isinstance(failure, dict) and failure.get("status") == "interrupted"):
            return FAILED
    if (run_dir / CHECKPOINT).is_file():
        return PARTIAL
    return NOT_RUN


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
