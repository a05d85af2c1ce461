"""Fused loops: a formula's compiled twin, and the op that picks between the two.

NumPy runs an expression such as Adam's update as a dozen separate passes over each weight
matrix, each reading and writing megabytes; a fused loop does the same arithmetic in one
pass, element by element: Adam with weight decay takes a third of the time inside a training
step (``docs/performance.md``). Each loop is written as plain Python **next to the formula it
mirrors** (KL's in ``methods/kl.py``, Arora's in ``methods/arora.py``, Adam's in
``training/optim.py``, the sigmoid's in ``core/activations.py``; a loop that is no formula's
twin, such as the minibatch gather, is a backend op: ``backend/gather.py``,
``backend/counting.py``) and declared with :func:`loop`; this module compiles it
with Numba on first use, for the dtype it meets (float32 on the hot path, float64 in gradient
checks), and Numba caches it on disk, so later processes load it in a fraction of a second.

A formula with a twin is an :class:`Op`: the math code calls the op, and the op runs the
twin when it can (Numba present and working, ``SPARSEKIT_JIT`` not 0, contiguous writeable
NumPy arrays) and the reference formula otherwise. The math code never branches on which
one exists. Twins keep the reference's order of operations, so the results are the same bits
(``tests/backend/test_fused.py`` checks every op both ways); only sums of squares (weight decay's
value, Arora's row norms) are accumulated in float64 instead. One twin is an algorithm's
faster schedule rather than the same operations: coordinate descent's
(``coders/cd.py``) sweeps active sets between full sweeps and stops by the reference's rule,
so the two agree to that rule's tolerance (checked by objective and support).

Loops release the GIL, so :func:`run` spreads large arrays over the threads of
:func:`~sparsekit.backend.threads.split_run` (Numba's own thread pool is never used).
Scalars are passed already converted to the arrays' dtype: a Python float would make Numba
compute in float64.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from sparsekit.backend import jit, threads
from sparsekit.files import one_line_reason

_lock = threading.Lock()
_state: dict[str, Any] = {}

#: What a twin returns when it cannot run; the op then runs the reference formula.
NOT_RUN: Any = type("NotRun", (), {"__repr__": lambda self: "NOT_RUN"})()

#: Options for every loop. error_model "numpy": no zero-division checks (they would stop
#: vectorisation); nogil: the threads of split_run run them in parallel.
_BASE_OPTIONS = {"nogil": True, "error_model": "numpy"}


def enabled() -> bool:
    """Whether fused loops may run: Numba importable, ``SPARSEKIT_JIT`` not 0, none failed."""
    if "numba" not in _state:
        with _lock:
            if "numba" not in _state:
                _state["numba"] = jit.load_numba()
    return _state["numba"] is not None


def disable(reason: str) -> None:
    """Stop using the loops for the rest of the process (after one failed to compile)."""
    with _lock:
        if _state.get("numba") is not None:
            warnings.warn(
                f"sparsekit: fused loops off, using NumPy ({reason})", RuntimeWarning, stacklevel=3
            )
        _state["numba"] = None


class Loop:
    """A loop written as plain Python, compiled by Numba on first use (see :func:`loop`)."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.options = {**_BASE_OPTIONS, **options}
        self._compiled: Any = None
        self._ready: set[str] = set()

    def __repr__(self) -> str:
        return f"Loop({self.name})"

    def ready(self, key: str, *warm: Any) -> Callable[..., Any] | None:
        """The compiled loop, ready for the type signature ``key``: the first time, compiled
        (or loaded from Numba's cache) on this thread by calling it on ``warm`` (empty arrays,
        so nothing changes). None when the loops are off or this one fails to compile (then
        all are off)."""
        if not enabled():
            return None
        if self._compiled is None:
            with _lock:
                if self._compiled is None:
                    numba = _state["numba"]
                    try:
                        self._compiled = numba.njit(cache=True, **self.options)(self.py)
                    except Exception:  # no writable cache location: this process only
                        self._compiled = numba.njit(**self.options)(self.py)
        if key not in self._ready:
            try:
                self._compiled(*warm)
            except Exception as exc:  # a platform where Numba cannot compile: NumPy for good
                disable(one_line_reason(exc, name=True))
                return None
            self._ready.add(key)
        return self._compiled if enabled() else None


def loop(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Declare ``fn`` (plain Python over arrays and scalars) a fused loop: ``@loop`` or
    ``@loop(fastmath={"reassoc"})`` for extra Numba options."""
    if fn is None:
        return lambda f: Loop(f, options)
    return Loop(fn, options)


class Op:
    """A formula with a reference implementation and, optionally, a fused twin.

    Calling the op runs the twin, or the reference when the twin returns :data:`NOT_RUN`
    (or none is declared, or the loops are off). ``op.reference`` and ``op.fused`` are the
    two paths, for tests that compare them bit for bit.
    """

    def __init__(self, reference: Callable[..., Any]) -> None:
        self.reference = reference
        self.fused: Callable[..., Any] | None = None
        self.__doc__ = reference.__doc__
        self.__name__ = reference.__name__
        self.__wrapped__ = reference

    def twin(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Declare the fused twin (decorator); it returns NOT_RUN when it cannot run."""
        self.fused = fn
        return fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fused is not None:
            result = self.fused(*args, **kwargs)
            if result is not NOT_RUN:
                return result
        return self.reference(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Op({self.reference.__module__}.{self.__name__})"


def op(reference: Callable[..., Any]) -> Op:
    """Declare a reference formula as an :class:`Op` (decorator); add its twin with
    ``@name.twin``."""
    return Op(reference)


def usable(*arrays: Any) -> bool:
    """Whether the loops can take these arrays: writeable, C-contiguous NumPy floats of one
    dtype and one shape (the loops index them without bounds checks)."""
    first = arrays[0]
    return (
        isinstance(first, np.ndarray)
        and first.dtype in (np.float32, np.float64)
        and all(
            isinstance(a, np.ndarray)
            and a.dtype == first.dtype
            and a.shape == first.shape
            and a.flags.c_contiguous
            and a.flags.writeable
            for a in arrays
        )
    )


def run(fused_loop: Loop, arrays: tuple[Any, ...], scalars: tuple[float, ...]) -> bool:
    """Run an elementwise loop over flat views of ``arrays`` (``scalars`` cast to their
    dtype), large arrays split over threads. False, having changed nothing, when it cannot."""
    return run_sum(fused_loop, arrays, scalars) is not None


def run_sum(fused_loop: Loop, arrays: tuple[Any, ...], scalars: tuple[float, ...]) -> float | None:
    """As :func:`run`; returns what the loop returns, summed over the parts (the optimizers'
    Σp²; 0.0 for loops that return nothing), or ``None`` when it did not run."""
    if not usable(*arrays):  # checked first: a GPU run never loads Numba
        return None
    dtype = arrays[0].dtype
    args = tuple(map(dtype.type, scalars))
    flat = [a.reshape(-1) for a in arrays]
    fn = fused_loop.ready(dtype.char, *(a[:0] for a in flat), *args)
    if fn is None:
        return None
    if flat[0].size < threads.PARALLEL_MIN_SIZE:  # what split_run would do, minus its cost
        return float(fn(*flat, *args) or 0.0)
    parts: dict[int, Any] = {}

    def part(lo: int, hi: int) -> None:
        parts[lo] = fn(*(a[lo:hi] for a in flat), *args)

    threads.split_run(part, flat[0].size)
    return float(sum(parts[lo] or 0.0 for lo in sorted(parts)))  # in order: deterministic


def run_rows(fused_loop: Loop, arrays: tuple[Any, ...], scalars: tuple[Any, ...]) -> bool:
    """Run a row loop over 2-D ``arrays`` of one shape, their rows split over threads.

    ``scalars`` are passed as given (the loops that take them convert them themselves).
    False, having changed nothing, when the loops are unavailable or the arrays unsuitable.
    """
    if not usable(*arrays) or arrays[0].ndim != 2:
        return False
    fn = fused_loop.ready(arrays[0].dtype.char, *(a[:0] for a in arrays), *scalars)
    if fn is None:
        return False
    rows, cols = arrays[0].shape
    threads.split_run(
        lambda lo, hi: fn(*(a[lo:hi] for a in arrays), *scalars),
        rows,
        min_size=max(2, threads.PARALLEL_MIN_SIZE // max(1, cols)),
    )
    return True


def run_columns(fn: Callable[[int, int], None], rows: int, columns: int) -> None:
    """Call ``fn(lo, hi)`` on ranges of columns covering ``range(columns)`` once, on threads
    when ``rows`` × ``columns`` is worth it: for a row-major loop that takes every row of its
    columns (a column's sum then runs row after row, the same bits for any ranges)."""
    threads.split_run(fn, columns, min_size=threads.min_rows(rows))


def run_row_blocks(
    fused_loop: Loop,
    shared: tuple[Any, ...],
    split: tuple[Any, ...],
    scalars: tuple[Any, ...],
    work_per_row: int,
) -> bool:
    """Run a loop over blocks of rows: ``fn(*shared, *(a[lo:hi] for a in split), *scalars)``,
    the blocks on threads, for loops whose rows are independent problems (a coder's rows).

    ``shared`` arrays are passed whole to every block (read only); ``split`` arrays (any
    dtypes, one first dimension) are cut at the same rows; ``work_per_row`` (about the
    multiply-adds of a row) decides whether a second thread pays. The caller checks the
    arrays are ones its loop can take. False when the loops are unavailable.
    """
    arrays = shared + split
    if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays):
        return False
    fn = fused_loop.ready(
        split[0].dtype.char, *shared, *(a[:0] for a in split), *scalars
    )  # compiled on empty blocks: nothing changes
    if fn is None:
        return False
    threads.split_run(
        lambda lo, hi: fn(*shared, *(a[lo:hi] for a in split), *scalars),
        split[0].shape[0],
        min_size=threads.min_rows(work_per_row),
    )
    return True
