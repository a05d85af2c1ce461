"""Spin-waits for the hand-offs between sparsekit's threads (CPU).

Why spin: a thread that blocks on a lock lets its CPU go idle, and waking it costs an
inter-processor interrupt; in a virtual machine whose guest halts an idle CPU at once
(``/sys/module/haltpoll/parameters/guest_halt_poll_ns`` 0, as on the machines of
``docs/performance.md``) also an exit to the host and back. There a worker started on its part
50–120 µs after it was handed one, and the calling thread, blocked until the worker finished,
woke as late: lags and waits took 2.8 ms of a 20 ms dense training step on two threads,
about ten hand-offs a step. The GIL adds such a wake whenever one thread wants it while the
other holds it.

So a thread that expects work soon first spins: a compiled loop reads a counter, with the GIL
released, for a bounded time, and the thread blocks on its lock only after that, as
OpenBLAS's and OpenMP's threads do. The locks stay the source of truth: a spin only ends
early when the lock it precedes is already free, so it saves the sleep and never changes
who runs what. Numba compiles the loops (:mod:`sparsekit.backend.jit`); without it, or with
``SPARSEKIT_SPIN_US=0``, threads block at once as before.

A loop reads a counter (an int64 array's element) by an atomic acquire load, with a
``pause`` hint between reads on x86.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from typing import Any

import numpy as np

from sparsekit.backend import jit

#: Default longest spin before blocking, in µs (``SPARSEKIT_SPIN_US`` overrides; 0: never).
#: A dense step on two threads hands work over every 0.1–3 ms. Measured (plain, two threads,
#: AMD EPYC AVX2 guest): 2,000 µs made an epoch 0.93× the blocking one, 500 µs 0.97×; but two
#: such trainings at once on the two CPUs took 1.23× as long with 2,000 µs and the same time
#: with 500 µs (and with blocking). 500 is the default: a machine used by one training at a
#: time may set 2,000.
DEFAULT_SPIN_US = 500.0

#: After seeing its part posted, a worker spins this much longer before taking the GIL: the
#: posting thread holds it for a few µs more (it still calls its own part), and a worker that
#: asked for it then would sleep until the posting thread enters native code.
GRACE_US = 10.0

#: Reads of a counter between two ``sched_yield`` calls (about a µs): a spinning thread hands
#: its CPU to any other thread that wants it, so processes that share the CPUs (two trainings
#: on one machine, each with every CPU) spin less against each other. Without the yield, two
#: such plain trainings on two CPUs took 12–13 s an epoch (2,000 µs budget) instead of
#: 6.3–7.1 s blocking; with it 8.0–8.5 s, and with the 500 µs default 6.5–7.0 s.
YIELD_EVERY = 32

#: The spin-wait hint of each machine (LLVM's name); elsewhere the loop reads without one.
_HINTS = {"x86_64": "llvm.x86.sse2.pause", "amd64": "llvm.x86.sse2.pause"}

# The three intrinsics and the compiled loop, made by _build() once Numba is needed: importing
# Numba costs a noticeable part of a second, and `import sparsekit` must not pay it.
_load_acquire: Any = None
_store_release: Any = None
_yield_cpu: Any = None
_compiled: Any = None
_build_lock = threading.Lock()


def _spin(
    counters: Any, store_at: int, value: int, index: int, target: int, spins: int, grace: int
) -> bool:
    # `counters[store_at] = value` unless store_at < 0 (with the GIL already released: a
    # thread woken by the store finds it free), then read counters[index] until it reaches
    # target (True, after `grace` reads more) or `spins` reads have been made (False)
    if store_at >= 0:
        _store_release(counters, store_at, value)
    for i in range(spins):
        if _load_acquire(counters, index) >= target:
            for _ in range(grace):
                _load_acquire(counters, index)
            return True
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            _yield_cpu()
    return False


def _build(numba: Any) -> Any:
    """Define the intrinsics (an atomic acquire load after a spin hint; an atomic release
    store) and compile :func:`_spin` with them (or load it from Numba's cache)."""
    global _load_acquire, _store_release, _yield_cpu
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    def pointer(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])

    @intrinsic
    def load_acquire(typingctx: Any, counters: Any, index: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            hint = _HINTS.get(platform.machine().lower())
            if hint is not None:
                fnty = ir.FunctionType(ir.VoidType(), [])
                builder.call(cgutils.get_or_insert_function(builder.module, fnty, hint), [])
            return builder.load_atomic(pointer(context, builder, signature, args), "acquire", 8)

        return types.int64(counters, index), codegen

    @intrinsic
    def store_release(typingctx: Any, counters: Any, index: Any, value: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            value = context.cast(builder, args[2], signature.args[2], types.int64)
            builder.store_atomic(value, pointer(context, builder, signature, args), "release", 8)
            return context.get_dummy_value()

        return types.void(counters, index, value), codegen

    @intrinsic
    def yield_cpu(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            fnty = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
            return context.get_dummy_value()

        return types.void(), codegen

    _load_acquire, _store_release, _yield_cpu = load_acquire, store_release, yield_cpu
    try:
        compiled = numba.njit(nogil=True, cache=True)(_spin)
    except Exception:  # no writable cache location: this process only
        compiled = numba.njit(nogil=True)(_spin)
    compiled(np.zeros(1, dtype=np.int64), 0, 0, 0, 1, 1, 0)  # compiled, or loaded, now
    return compiled


def _compiled_spin() -> Any:
    global _compiled
    if _compiled is None:
        numba = jit.load_numba()
        if numba is None:
            return None
        with _build_lock:
            if _compiled is None:
                _compiled = _build(numba)
    return _compiled


def budget_us() -> float:
    """The longest spin before blocking, in µs: ``SPARSEKIT_SPIN_US``, else the default."""
    env = os.environ.get("SPARSEKIT_SPIN_US", "").strip()
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            pass
    return DEFAULT_SPIN_US


class Spinner:
    """The compiled waits, with budgets in reads of a counter (calibrated once, here)."""

    def __init__(self, spin: Any, spin_us: float) -> None:
        self._spin = spin
        counters = np.zeros(1, dtype=np.int64)
        reads, seconds = 10_000, []
        for _ in range(3):  # the fastest of three: a descheduled thread would inflate one
            start = time.perf_counter()
            spin(counters, -1, 0, 0, 1, reads, 0)
            seconds.append(time.perf_counter() - start)
        seconds_per_read = max(min(seconds) / reads, 1e-10)
        self.spins = int(spin_us * 1e-6 / seconds_per_read)
        self.grace = int(GRACE_US * 1e-6 / seconds_per_read)

    def wait(self, counters: np.ndarray, index: int, target: int, grace: bool = False) -> bool:
        """Spin until ``counters[index] >= target``; False when the budget ran out first."""
        return bool(
            self._spin(counters, -1, 0, index, target, self.spins, self.grace if grace else 0)
        )

    def store_then_wait(
        self, counters: np.ndarray, store_at: int, value: int, index: int, target: int
    ) -> bool:
        """``counters[store_at] = value``, then :meth:`wait` (with the grace) for ``index``."""
        return bool(self._spin(counters, store_at, value, index, target, self.spins, self.grace))


def spinner() -> Spinner | None:
    """A :class:`Spinner` with today's budget, or None: threads then block at once (spinning
    off, Numba off or missing, or a platform where the loop does not compile)."""
    spin_us = budget_us()
    if spin_us <= 0 or not jit.requested():
        return None
    try:
        spin = _compiled_spin()
    except Exception:
        return None
    return None if spin is None else Spinner(spin, spin_us)
