"""The background reader: results in order, at most ``depth`` ahead, errors raised where taken."""

from __future__ import annotations

import threading
import time

import pytest

from sparsekit.backend.prefetch import Prefetcher


def test_results_come_in_order_and_the_producer_stays_bounded_ahead():
    produced: list[int] = []

    def produce(i: int) -> int:
        produced.append(i)
        return i * i

    reader = Prefetcher(produce, range(6), depth=1)
    time.sleep(0.2)
    assert len(produced) <= 2  # one waiting in the queue, one made and blocked on it
    assert [reader.next() for _ in range(6)] == [0, 1, 4, 9, 16, 25]
    with pytest.raises(IndexError):
        reader.next()
    reader.close()


def test_an_error_in_the_producer_is_raised_by_next():
    def produce(i: int) -> int:
        if i == 2:
            raise ValueError("bad shard")
        return i

    reader = Prefetcher(produce, range(5))
    assert reader.next() == 0 and reader.next() == 1
    with pytest.raises(ValueError, match="bad shard"):
        reader.next()


def test_close_stops_the_thread_while_it_waits():
    before = threading.active_count()
    reader = Prefetcher(lambda i: i, range(100), depth=1)
    time.sleep(0.05)
    reader.close()
    assert threading.active_count() == before
