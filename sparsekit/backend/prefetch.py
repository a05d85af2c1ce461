"""Work done ahead on a background thread: the reader that keeps the disk busy during a step.

:class:`Prefetcher` calls ``produce(item)`` for each item in order on one daemon thread and
keeps at most ``depth`` results waiting, so memory stays bounded however fast it runs.
Reading a file (``os.pread``) and most NumPy copies release the GIL, so the step and the
reads overlap. An exception in ``produce`` is raised again by :meth:`Prefetcher.next`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: Seconds between looks at the stop flag while the queue is full.
_POLL = 0.05


class Prefetcher:
    """``produce(items[0]), produce(items[1]), ...`` computed ahead, taken with :meth:`next`."""

    def __init__(
        self, produce: Callable[[Any], Any], items: Sequence[Any], depth: int = 1
    ) -> None:
        self._queue: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._left = len(items)
        self._thread = threading.Thread(
            target=self._run, args=(produce, list(items)), name="sparsekit-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, produce: Callable[[Any], Any], items: list[Any]) -> None:
        for item in items:
            if self._stop.is_set():
                return
            try:
                result: tuple[bool, Any] = (True, produce(item))
            except BaseException as exc:  # handed to the consumer, raised there
                result = (False, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(result, timeout=_POLL)
                    break
                except queue.Full:
                    continue
            if not result[0]:
                return

    def next(self) -> Any:
        """The next result (waiting for it if it is not ready)."""
        if self._left <= 0:
            raise IndexError("no more items")
        ok, value = self._queue.get()
        self._left -= 1
        if not ok:
            self.close()
            raise value
        return value

    def close(self) -> None:
        """Stop the thread (after the item it is producing) and drop what is waiting."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
