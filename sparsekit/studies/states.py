"""The four states of a sweep trial or a compared method, defined once.

``--dry-run``, results.csv, each run's summary.json, comparison.json and the reports all
show the state :func:`trial_state` reads from a run directory's files. This module imports
nothing of sparsekit's studies, so that every one of them can use it.
"""

from __future__ import annotations

from pathlib import Path

from sparsekit.files import read_json_or_none
from sparsekit.layout import CHECKPOINT, FAILURE, MEASURES

__all__ = ["FAILED", "FINISHED", "NOT_RUN", "PARTIAL", "TRIAL_STATES", "trial_state"]

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
