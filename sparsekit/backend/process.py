"""Process-wide tuning: the one place sparsekit changes anything outside its own objects.

A library must not change the process it is imported into (a notebook, a web server), so
nothing here runs on ``import sparsekit`` or when a :class:`~sparsekit.Trainer` is built.
Two things are offered:

* :func:`tune_process`, an explicit call (the ``sparsekit`` command makes it first thing):
  glibc keeps freed step temporaries for reuse (:func:`keep_freed_memory`).
* :func:`own_threads`, a scope the trainer opens around its steps on the CPU: BLAS runs on one
  thread inside it and sparsekit splits the work itself (matrix products by rows, elementwise
  loops by ranges: :mod:`sparsekit.backend.threads`), so no BLAS thread spins while
  sparsekit's threads work and a script that imported NumPy first trains as fast as the
  command. The previous BLAS limits are restored when the scope ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from sparsekit.backend import threads

#: glibc's malloc settings made by :func:`keep_freed_memory`: free memory kept at the top of
#: the heap (bytes; the largest value mallopt takes), and no block served by mmap.
MALLOC_TRIM_THRESHOLD = (1 << 31) - 1
MALLOC_MMAP_MAX = 0

_malloc_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next training step instead of unmapping it.

    A step allocates and frees temporaries from a few MiB (the H×D gradients of a small
    model, λW of weight decay) to hundreds (the B×H pre-activations of a wide SAE: 256 MiB
    at 4,096 × 16,384). With glibc's defaults, blocks above a self-adjusting threshold (at
    most 32 MiB) are mmapped and unmapped on free, and the heap's free top is trimmed, so
    they come back as fresh pages on the next step: thousands of page faults a step, and
    in a virtual machine that hands freed pages back to its host, a tenth of a step (TopK
    at 768 → 16,384: 2.65 → 2.23 s a step). So no block is mmapped (``M_MMAP_MAX`` 0:
    every block comes from the heap, whose free space the next step reuses) and up to
    2 GiB of free heap is kept (``M_TRIM_THRESHOLD``). Memory in use is unaffected: the peak
    is the same, and a process holds on to at most 2 GiB that it no longer uses. Called by
    :func:`tune_process`; does nothing outside glibc or with ``SPARSEKIT_MALLOC_TUNING=0``.
    Returns whether the settings were made.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if os.environ.get("SPARSEKIT_MALLOC_TUNING", "1").strip() == "0":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False
        m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
        ok = libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1
        ok = libc.mallopt(m_mmap_max, MALLOC_MMAP_MAX) == 1 and ok
    except (OSError, AttributeError):  # pragma: no cover - no C library to talk to
        return False
    _malloc_tuned = ok
    return ok


def tune_process() -> dict[str, bool]:
    """Tune this process for training; returns what was done, by name.

    * ``keep_freed_memory``: glibc's malloc thresholds raised (:func:`keep_freed_memory`), so
      a step's freed temporaries are reused instead of unmapped and faulted in again.

    Process-wide and not undone: call it from a program's entry point (the ``sparsekit``
    command does), not from library code. Training does not need it for its threads
    (:func:`own_threads`).
    """
    return {"keep_freed_memory": keep_freed_memory()}


@contextlib.contextmanager
def own_threads() -> Iterator[None]:
    """BLAS on one thread for the duration of the scope (restored afterwards), while
    sparsekit's own threads split products and loops (see the module docstring).

    Uses threadpoolctl; without it (or with no BLAS it recognises) the scope changes nothing.
    Inside another such scope (a coder called by a training step) it changes nothing either,
    and costs nothing: threadpoolctl's limits take about a millisecond to set.
    """
    if threads.products_split.depth:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency
        yield
        return

    with threadpool_limits(limits=1, user_api="blas"):
        threads.products_split.depth += 1
        try:
            yield
        finally:
            threads.products_split.depth -= 1
