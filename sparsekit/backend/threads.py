"""Threads that split elementwise and sparse work between matrix products (CPU).

:func:`split_run` calls a function on contiguous parts of a range, one part per thread; NumPy
and the fused loops (:mod:`sparsekit.backend.fused`) release the GIL, so the parts run on
several cores with the same result, element for element, as one call over the whole range.
:func:`split_elementwise` does the same for an in-place update of whole arrays (the
optimizers'), :func:`matmul` for a large matrix product, :func:`run_tasks` for independent
tasks (two weights' gradients and updates). Code outside ``backend/`` calls these
and never picks a thread count or a part size (``tests/architecture/test_door.py``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sparsekit.backend import spin

#: Arrays smaller than this many elements are updated on the calling thread alone.
PARALLEL_MIN_SIZE = 1 << 18

_workers: _Workers | None = None
_workers_lock = threading.Lock()
#: Held while a split_run call uses the workers; a concurrent (or nested) call runs whole.
_split_lock = threading.Lock()
_local = threading.local()


def cpu_threads() -> int:
    """Threads for elementwise work and split products: ``SPARSEKIT_NUM_THREADS``, else
    ``OMP_NUM_THREADS`` (how MPI ranks and job schedulers give a process its share of the
    cores: ``docs/distributed.md``), else the usable CPUs (≤ 4).

    The same number BLAS uses by default, and the two never run at the same time (the
    threads of :func:`split_run` work between matrix products), so they do not
    oversubscribe the cores. Processes that share a machine must each be given their
    share: sparsekit's threads spin briefly between parts (:mod:`sparsekit.backend.spin`).
    """
    for name in ("SPARSEKIT_NUM_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(name, "").split(",")[0].strip()  # OpenMP's "4,2": the outer level
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                pass
    return max(1, min(usable_cpus(), 4))


_affinity: tuple[int, int] | None = None  # (pid, usable CPUs): one system call per process


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where known, else ``os.cpu_count()``)."""
    global _affinity
    pid = os.getpid()
    if _affinity is None or _affinity[0] != pid:
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            usable = os.cpu_count() or 1
        _affinity = (pid, usable)
    return _affinity[1]


class _Workers:
    """Threads that each run one part of a :func:`split_run` call, woken by raw locks.

    Worker ``i`` always takes part ``i + 1`` (the calling thread takes part 0). A hand-off
    through two locks costs about half as much as a ``ThreadPoolExecutor`` round trip
    (futures, conditions): 11 against 24 µs on the machine of ``docs/performance.md``.
    Each worker's parts given and finished are also counted, in :attr:`counts` (a cache line
    apart), so that a wait interrupted by Ctrl-C can still wait until the part is done
    (:meth:`finish`), and so that both sides can spin on them before blocking on a lock
    (:mod:`sparsekit.backend.spin`): a worker for its next part, the caller for the part's end.
    """

    def __init__(self, count: int) -> None:
        self.key = (os.getpid(), count)  # a forked child must not use its parent's threads
        self._go = [threading.Lock() for _ in range(count)]
        self._done = [threading.Lock() for _ in range(count)]
        self._tasks: list[tuple[Any, int, int] | None] = [None] * count
        self._errors: list[BaseException | None] = [None] * count
        self._issued = [0] * count
        self._spin = spin.spinner()
        # counts[_given(i)]: parts given to worker i; counts[_finished(i)]: parts it finished
        self.counts = np.zeros(2 * count * _LINE, dtype=np.int64)
        for lock in (*self._go, *self._done):
            lock.acquire()
        for i in range(count):
            threading.Thread(
                target=self._loop, args=(i,), name=f"sparsekit-{i}", daemon=True
            ).start()

    def _loop(self, i: int) -> None:
        _local.worker = True
        taken = 0
        spin, counts = self._spin, self.counts
        if spin is not None:
            spin.wait(counts, _given(i), 1, grace=True)
        while True:
            self._go[i].acquire()
            taken += 1
            task = self._tasks[i]
            if task is None:  # stopped
                return
            fn, lo, hi = task
            try:
                fn(lo, hi)
            except BaseException as exc:  # handed to the caller by finish()
                self._errors[i] = exc
            finally:
                self._tasks[i] = None
                self._done[i].release()
                # counted after the release (see _recover), and with the GIL released when
                # spinning: the caller, woken by the count, then finds the GIL free
                if spin is None:
                    counts[_finished(i)] = taken
                else:
                    spin.store_then_wait(counts, _finished(i), taken, _given(i), taken + 1)

    def start(self, i: int, fn: Any, lo: int, hi: int) -> None:
        self._tasks[i] = (fn, lo, hi)
        self._issued[i] += 1
        self._go[i].release()
        self.counts[_given(i)] = self._issued[i]  # after the release: a spinning worker that
        # sees it takes the lock at once

    def finish(self, count: int) -> tuple[list[BaseException | None], BaseException | None]:
        """Block until workers ``0 … count − 1`` have finished every part given to them.

        Returns their exceptions and, apart, one raised in this thread while it waited
        (Ctrl-C): the caller raises it once no worker touches its arrays any more. An
        interrupted process that let a worker run on would be finalised under it (a crash:
        "PyThreadState_Get: ... the GIL is released").
        """
        interrupt: BaseException | None = None
        errors = []
        for i in range(count):
            try:
                if self._spin is not None:
                    self._spin.wait(self.counts, _finished(i), self._issued[i])
                self._done[i].acquire()
            except BaseException as exc:  # Ctrl-C inside the wait, or just after it
                interrupt = interrupt or exc
                self._recover(i)
            error, self._errors[i] = self._errors[i], None
            errors.append(error)
        return errors, interrupt

    def _recover(self, i: int) -> None:
        """After an exception in :meth:`finish`'s acquire: wait, through further Ctrl-C, until
        worker ``i`` has finished its part, and leave its done-lock held whether or not the
        interrupted acquire took it (the worker releases it before counting the part)."""
        while True:
            try:
                while self.counts[_finished(i)] < self._issued[i]:
                    time.sleep(0.001)
                self._done[i].acquire(blocking=False)
                return
            except BaseException:  # a second Ctrl-C: the first one is raised
                continue

    def stop(self) -> None:
        for i, go in enumerate(self._go):
            self._tasks[i] = None
            self._issued[i] += 1
            go.release()
            self.counts[_given(i)] = self._issued[i]


#: int64 slots of a cache line: the counters of :class:`_Workers` are this far apart.
_LINE = 8


def _given(i: int) -> int:
    return 2 * i * _LINE


def _finished(i: int) -> int:
    return (2 * i + 1) * _LINE


def _worker_threads(count: int) -> _Workers:
    global _workers
    with _workers_lock:
        if _workers is None or _workers.key != (os.getpid(), count):
            if _workers is not None and _workers.key[0] == os.getpid():
                _workers.stop()
            _workers = _Workers(count)
        return _workers


def split_run(fn: Any, size: int, min_size: int | None = None) -> None:
    """Call ``fn(start, stop)`` on contiguous parts of ``range(size)``, in parallel if large.

    The calling thread does the first part itself. NumPy releases the GIL inside ufunc
    loops, so in-place elementwise work on disjoint slices runs on several cores; the
    result is the same, element for element, as one call over the whole range.
    """
    if min_size is None:
        min_size = PARALLEL_MIN_SIZE
    parts = min(cpu_threads(), size) if size >= min_size else 1
    # One call at a time uses the workers: a call from another thread meanwhile, or from
    # inside a part, does its whole range on its own thread (the same result).
    if parts <= 1 or getattr(_local, "worker", False) or not _split_lock.acquire(blocking=False):
        fn(0, size)
        return
    try:
        workers = _worker_threads(parts - 1)
        cuts = [size * i // parts for i in range(parts + 1)]
        try:
            for i in range(1, parts):
                workers.start(i - 1, fn, cuts[i], cuts[i + 1])
            fn(cuts[0], cuts[1])
        finally:  # every part finished before returning or raising, Ctrl-C included
            errors, interrupt = workers.finish(parts - 1)
        if interrupt is not None:
            raise interrupt
        for error in errors:
            if error is not None:
                raise error
    finally:
        _split_lock.release()


def run_tasks(xp: Any, tasks: Sequence[Callable[[], Any]]) -> None:
    """Run independent ``tasks`` (callables without arguments), each once.

    On the CPU, inside :func:`~sparsekit.backend.process.own_threads` (BLAS on one thread),
    with at least as many tasks as threads, they run side by side, one thread taking one or
    more whole tasks, and whatever a task splits (:func:`split_run`, :func:`matmul`) runs on
    its own thread; otherwise, and on a device (one stream keeps their order), one after
    another, each free to split its work over all the threads. Which way they ran must not
    change a task's result: a product side by side is one BLAS call on one thread, one
    after another its rows split over the threads, the same bits for the weight gradients'
    products (Hᵀ G: every shape tried, 2 and 4 threads; ``tests/training/
    test_gradient_sink.py`` trains both ways).

    Two weight gradients of a dense step, each a product and then its optimizer update, run
    side by side on two threads: each product packs its operands once instead of each part
    packing the unsplit one, the thread that wrote a gradient updates it, and two hand-offs
    of a step's nine go (docs/performance.md: plain 4%, kl 4–8% faster on two threads).
    """
    # (products_split is per thread: inside a worker's part this is one after another)
    side_by_side = xp is np and products_split.depth and len(tasks) >= cpu_threads() > 1
    if not side_by_side:
        for task in tasks:
            task()
        return
    split_run(lambda lo, hi: [task() for task in tasks[lo:hi]], len(tasks), min_size=1)


#: Cost of an element of NumPy's float32 ``tanh`` (or ``exp``, ``log``) against one cheap
#: arithmetic pass (``add``), for :func:`split_elementwise`'s ``cost``: 670 against 42 µs
#: over 256,000 elements (AMD EPYC, NumPy 2.4.6, whose float32 tanh is not vectorised there).
TRANSCENDENTAL_COST = 16


def split_elementwise(fn: Any, *arrays: Any, cost: float = 1.0) -> None:
    """Call ``fn(*parts)`` on matching contiguous parts of ``arrays`` (arrays of one size), in
    parallel if large; the parts together cover every element once.

    For an elementwise, in-place update such as Adam's: when every array is a C-contiguous
    NumPy array, their flat views are cut at the same offsets by :func:`split_run`; otherwise
    (a device array, a strided view) ``fn`` runs once on the arrays themselves. Either way
    each element gets the same operations, so the same bits. ``cost`` is the work of ``fn``
    per element in cheap arithmetic passes (:data:`TRANSCENDENTAL_COST` for a tanh): the
    more work, the smaller the arrays worth a second thread.
    """
    if all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays):
        flat = [a.reshape(-1) for a in arrays]
        split_run(
            lambda lo, hi: fn(*(a[lo:hi] for a in flat)),
            flat[0].size,
            min_size=max(2, int(PARALLEL_MIN_SIZE / max(cost, 1.0))),
        )
    else:
        fn(*arrays)


#: Multiply-adds a kernel's part should have at least, for a second thread to pay.
_MIN_PART_WORK_FACTOR = 4


def min_rows(work_per_row: int) -> int:
    """Rows below which a kernel stays on one thread (about PARALLEL_MIN_SIZE multiply-adds)."""
    return max(2, -(-PARALLEL_MIN_SIZE * _MIN_PART_WORK_FACTOR // max(1, work_per_row)))


def work_shares(work: int) -> int:
    """How many parts ``work`` multiply-adds are worth (at most :func:`cpu_threads`), by the
    rule of :func:`min_rows`: for work split by its own measure, not by rows."""
    return max(1, min(cpu_threads(), work // (PARALLEL_MIN_SIZE * _MIN_PART_WORK_FACTOR)))


class _ProductsSplit(threading.local):
    #: > 0 inside :func:`sparsekit.backend.process.own_threads` (BLAS on one thread).
    depth = 0


products_split = _ProductsSplit()

#: Multiply-adds below which a product runs as one BLAS call even inside own_threads.
PRODUCT_MIN_WORK = 1 << 22


def matmul(a: Any, b: Any, plus: Any = None) -> Any:
    """``a @ b``, then ``+= plus`` (a row added to every row: a layer's bias) when given;
    inside :func:`~sparsekit.backend.process.own_threads`, large NumPy products are split
    over :func:`split_run`'s threads, each part one single-threaded BLAS call followed by
    the addition on its own part of the result (while it is in that core's cache; the same
    bits as one addition over the whole result).

    Each part packs the whole of the operand it does not split, so the split is along the
    longer side of the result: by columns of ``b`` when the result is wider than tall (each
    thread then packs all of ``a``, the smaller operand), else by rows of ``a``. Splitting
    X·W_encᵀ (256×784 by 784×1000) by rows instead packed W_enc twice and cost 1.33 ms
    against 1.07 ms by columns and 1.02 ms for two-thread BLAS (docs/performance.md).
    """
    if (
        products_split.depth
        and isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.ndim == 2
        and b.ndim == 2
        and (plus is None or (isinstance(plus, np.ndarray) and plus.shape == (b.shape[1],)))
    ):
        rows, inner = a.shape
        cols = b.shape[1]
        if rows * inner * cols >= PRODUCT_MIN_WORK and cpu_threads() > 1:
            out = np.empty((rows, cols), dtype=np.result_type(a, b))
            if cols > rows:

                def part(lo: int, hi: int) -> None:
                    np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
                    if plus is not None:
                        out[:, lo:hi] += plus[lo:hi]

                split_run(part, cols, min_size=2)
            else:

                def part(lo: int, hi: int) -> None:
                    np.matmul(a[lo:hi], b, out=out[lo:hi])
                    if plus is not None:
                        out[lo:hi] += plus

                split_run(part, rows, min_size=2)
            return out
    out = a @ b
    if plus is not None:
        out += plus
    return out
