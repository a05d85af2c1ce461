"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM.

While :func:`stop_on_signals` is active, the first SIGINT or SIGTERM only sets
``trainer.stop_requested``: the trainer finishes the step it is in and returns from
:meth:`~sparsekit.training.trainer.Trainer.fit`. The run directory then holds the checkpoint of the
last completed epoch (a partial epoch is discarded, so at most one epoch of work is lost with
the default ``--checkpoint-every 1``), and :class:`Interrupted` turns the stop into one
line on stderr and exit code 130. A second signal stops at once (a ``KeyboardInterrupt``);
files are written atomically, so even that, or ``kill -9``, leaves no half-written file.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparsekit.errors import Interrupted

__all__ = ["STOP_SIGNALS", "Interrupted", "message", "stop_on_signals"]

#: The signals that ask a run to stop after the current step.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)


def message(run_dir: str | Path) -> str:
    return f"interrupted; resume with: sparsekit train --resume {run_dir}"


@contextmanager
def stop_on_signals(trainer: Any, run_dir: str | Path) -> Iterator[list[int]]:
    """Run ``trainer.fit()`` in this block to stop cleanly on SIGINT/SIGTERM.

    In the block the first signal sets ``trainer.stop_requested``; a second one aborts at once
    (``KeyboardInterrupt``). When the block ends before the last epoch because of a signal,
    or is aborted, :class:`Interrupted` is raised, naming the command that resumes the run.
    Yields the list of signals received. Outside the main thread (where Python cannot install
    handlers) the handlers in place stay.
    """
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    except KeyboardInterrupt:
        raise Interrupted(message(run_dir)) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
    if received and trainer.epoch < trainer.config.epochs:
        raise Interrupted(message(run_dir))
