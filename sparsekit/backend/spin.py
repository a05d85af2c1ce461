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
``pause`` hint between reads on x86. Its budget is wall time (``clock_gettime``), and it
yields its CPU every microsecond or so: a yield that comes back late means another thread
wanted the CPU (another process sharing the machine), and spinning then only keeps it from
running. So the wait blocks at once, and every wait of the process blocks for the next
:data:`QUIET_S` before spinning is tried again.
"""

from __future__ import annotations

import os
import platform
import struct
import sys
import threading
import time
from typing import Any

import numpy as np

from sparsekit.backend import jit

#: Default longest spin before blocking, in µs (``SPARSEKIT_SPIN_US`` overrides; 0: never).
#: A dense step on two threads hands work over every 0.1–3 ms; a worker that spins through
#: the step's serial stretches (up to about 2 ms) is never woken. Measured (plain, two threads,
#: AMD EPYC AVX2 guest), an epoch spinning up to 2,000 µs took 0.93× the blocking one, up to
#: 500 µs 0.97×; on the Intel guest, 2,000 µs 0.82× (docs/performance.md, "Hand-offs spin
#: first"). Processes that share the CPUs are handled by the check below, not the budget.
DEFAULT_SPIN_US = 2000.0

#: After seeing its part posted, a worker spins this much longer before taking the GIL: the
#: posting thread holds it for a few µs more (it still calls its own part), and a worker that
#: asked for it then would sleep until the posting thread enters native code.
GRACE_US = 10.0

#: Reads of a counter between two ``sched_yield`` calls (about a µs).
YIELD_EVERY = 32

#: A yield that takes longer than this (µs) ran another thread: the CPU is wanted. An idle
#: CPU's yield returns in under a µs, and another thread given the CPU keeps it until it
#: blocks or its time slice ends (milliseconds). Alone on the Intel guest of
#: docs/performance.md, spinning 5 s, 37 yields took over 50 µs (the host, or a kernel
#: thread), 4 over 100 µs and 1 over 200 µs.
CONTENDED_YIELD_US = 200.0

#: After a wait found its CPU wanted, every wait blocks at once for this long (seconds).
#: Two plain trainings sharing two CPUs, each spinning on both, took 12–13 s an epoch
#: (2,000 µs, without this) against 6.3–7.1 s blocking: a spinning thread that gave its CPU
#: away came back only after the other process's time slice, late for its own hand-off.
QUIET_S = 0.1

#: clock_gettime's monotonic clock on each system whose 64-bit timespec is two int64s.
_CLOCKS = {"linux": 1, "darwin": 6}

#: The spin-wait hint of each machine (LLVM's name); elsewhere the loop reads without one.
_HINTS = {"x86_64": "llvm.x86.sse2.pause", "amd64": "llvm.x86.sse2.pause"}

# The intrinsics and the compiled loop, made by _build() once Numba is needed: importing
# Numba costs a noticeable part of a second, and `import sparsekit` must not pay it.
_load_acquire: Any = None
_store_release: Any = None
_yield_cpu: Any = None
_now_ns: Any = None
_compiled: Any = None
_build_lock = threading.Lock()

#: What a wait returns: the counter reached its target, the budget ran out, the CPU is wanted.
SEEN, TIMED_OUT, CONTENDED = 1, 0, -1


def _spin(
    counters: Any,
    store_at: int,
    value: int,
    index: int,
    target: int,
    budget_ns: int,
    grace_ns: int,
    contended_ns: int,
) -> int:
    # `counters[store_at] = value` unless store_at < 0 (with the GIL already released: a
    # thread woken by the store finds it free), then read counters[index] until it reaches
    # target (SEEN, after grace_ns more of reading), budget_ns have passed (TIMED_OUT) or a
    # yield took longer than contended_ns (CONTENDED)
    if store_at >= 0:
        _store_release(counters, store_at, value)
    start = _now_ns()
    i = 0
    while True:
        if _load_acquire(counters, index) >= target:
            if grace_ns > 0:
                seen = _now_ns()
                while _now_ns() - seen < grace_ns:
                    _load_acquire(counters, index)
            return SEEN
        i += 1
        if i % YIELD_EVERY == 0:
            before = _now_ns()
            _yield_cpu()
            after = _now_ns()
            if after - before > contended_ns:
                return CONTENDED
            if after - start > budget_ns:
                return TIMED_OUT


def _build(numba: Any, clock_id: int) -> Any:
    """Define the intrinsics (an atomic acquire load after a spin hint; an atomic release
    store; a yield; the monotonic clock) and compile :func:`_spin` with them (or load it
    from Numba's cache)."""
    global _load_acquire, _store_release, _yield_cpu, _now_ns
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

    @intrinsic
    def now_ns(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            i32, i64 = ir.IntType(32), ir.IntType(64)
            spec = cgutils.alloca_once(builder, ir.LiteralStructType([i64, i64]))
            fnty = ir.FunctionType(i32, [i32, spec.type])
            clock = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
            builder.call(clock, [ir.Constant(i32, clock_id), spec])
            seconds = builder.load(cgutils.gep_inbounds(builder, spec, 0, 0))
            nanoseconds = builder.load(cgutils.gep_inbounds(builder, spec, 0, 1))
            return builder.add(builder.mul(seconds, ir.Constant(i64, 10**9)), nanoseconds)

        return types.int64(), codegen

    _load_acquire, _store_release, _yield_cpu = load_acquire, store_release, yield_cpu
    _now_ns = now_ns
    try:
        compiled = numba.njit(nogil=True, cache=True)(_spin)
    except Exception:  # no writable cache location: this process only
        compiled = numba.njit(nogil=True)(_spin)
    compiled(np.zeros(1, dtype=np.int64), 0, 0, 0, 1, 1, 0, 1)  # compiled, or loaded, now
    return compiled


def _clock_id() -> int | None:
    """clock_gettime's monotonic clock here, or None (the loop's clock is unknown)."""
    if struct.calcsize("P") != 8:
        return None
    return next((c for name, c in _CLOCKS.items() if sys.platform.startswith(name)), None)


def _compiled_spin() -> Any:
    global _compiled
    if _compiled is None:
        clock_id = _clock_id()
        numba = jit.load_numba() if clock_id is not None else None
        if numba is None:
            return None
        with _build_lock:
            if _compiled is None:
                _compiled = _build(numba, clock_id)
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
    """The compiled waits with today's budget; after a wait found its CPU wanted, every wait
    blocks at once (returns False) for :data:`QUIET_S`."""

    def __init__(self, spin: Any, spin_us: float) -> None:
        self._spin = spin
        self.budget_ns = int(spin_us * 1e3)
        self._grace_ns = int(GRACE_US * 1e3)
        self._contended_ns = int(CONTENDED_YIELD_US * 1e3)
        self._quiet_until = 0.0
        #: Waits that found the CPU wanted (each starting a quiet spell), for tests and benches.
        self.contended = 0

    def _run(
        self, counters: np.ndarray, store_at: int, value: int, index: int, target: int, grace: bool
    ) -> bool:
        if self._quiet_until and time.monotonic() < self._quiet_until:
            if store_at >= 0:
                counters[store_at] = value
            return False
        found = self._spin(
            counters,
            store_at,
            value,
            index,
            target,
            self.budget_ns,
            self._grace_ns if grace else 0,
            self._contended_ns,
        )
        if found == CONTENDED:
            self.contended += 1
            self._quiet_until = time.monotonic() + QUIET_S
        return found == SEEN

    def wait(self, counters: np.ndarray, index: int, target: int, grace: bool = False) -> bool:
        """Spin until ``counters[index] >= target``; False when the budget ran out first, or
        the CPU is wanted by another thread (the caller then blocks)."""
        return self._run(counters, -1, 0, index, target, grace)

    def store_then_wait(
        self, counters: np.ndarray, store_at: int, value: int, index: int, target: int
    ) -> bool:
        """``counters[store_at] = value``, then :meth:`wait` (with the grace) for ``index``."""
        return self._run(counters, store_at, value, index, target, True)


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
