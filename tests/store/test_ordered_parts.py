"""fetch_in_order: concurrent fetches, in-order consumption, a bounded number of parts held."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from zoo.store.ordered_parts import fetch_in_order


class Tally:
    """Counts parts fetched and consumed, and the most held or fetching at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fetched = self.consumed = self.fetching = 0
        self.most_held = self.most_fetching = 0
        self.order: list[int] = []

    def start_fetch(self) -> None:
        with self.lock:
            self.fetching += 1
            self.most_fetching = max(self.most_fetching, self.fetching)

    def end_fetch(self) -> None:
        with self.lock:
            self.fetching -= 1
            self.fetched += 1
            self.most_held = max(self.most_held, self.fetched - self.consumed)

    def consume(self, part: int) -> None:
        with self.lock:
            self.order.append(part)
            self.consumed += 1


def run(count: int, *, concurrency: int, window: int, fetch_delay: float,
        consume_delay: float, tally: Tally, fail_fetch: int | None = None,
        fail_consume: int | None = None) -> None:
    rng = random.Random(7)
    delays = [fetch_delay * rng.uniform(0.2, 1.8) for _ in range(count)]

    async def fetch(i: int) -> int:
        tally.start_fetch()
        try:
            await asyncio.sleep(delays[i])
            if i == fail_fetch:
                raise ConnectionResetError(f"part {i} dropped")
        finally:
            tally.end_fetch()
        return i

    def consume(i: int) -> None:
        time.sleep(consume_delay)
        if i == fail_consume:
            raise OSError(28, "No space left on device")
        tally.consume(i)

    with ThreadPoolExecutor(1) as worker:
        asyncio.run(fetch_in_order(count, fetch, consume, concurrency=concurrency,
                                   window=window, executor=worker))


def test_every_part_is_consumed_once_in_order_with_bounded_fetches() -> None:
    tally = Tally()
    run(40, concurrency=4, window=8, fetch_delay=0.004, consume_delay=0.0, tally=tally)
    assert tally.order == list(range(40))
    assert tally.most_fetching == 4  # concurrent, and never more than asked


def test_a_slow_consumer_holds_back_the_fetches() -> None:
    """Fast downloads and a slow disk: parts fetched but not yet written stay within the
    window (counting a part handed to the writer as still held until it is written)."""
    tally = Tally()
    run(30, concurrency=3, window=6, fetch_delay=0.001, consume_delay=0.01, tally=tally)
    assert tally.order == list(range(30))
    assert tally.most_held <= 6


def test_a_failed_fetch_stops_the_rest_and_is_raised() -> None:
    tally = Tally()
    with pytest.raises(ConnectionResetError, match="part 5 dropped"):
        run(200, concurrency=2, window=4, fetch_delay=0.002, consume_delay=0.0,
            tally=tally, fail_fetch=5)
    assert tally.fetched < 20  # the window stopped the later parts from starting
    assert tally.order == list(range(len(tally.order)))
    assert 5 not in tally.order


def test_a_failed_write_stops_the_downloads_and_is_raised() -> None:
    tally = Tally()
    with pytest.raises(OSError, match="No space left"):
        run(200, concurrency=2, window=4, fetch_delay=0.001, consume_delay=0.001,
            tally=tally, fail_consume=3)
    assert tally.order == [0, 1, 2]
    assert tally.fetched <= 3 + 1 + 4  # consumed, the failed one, at most a window ahead


def test_nonsense_bounds_are_refused() -> None:
    with ThreadPoolExecutor(1) as worker, pytest.raises(ValueError, match="at least 1"):
        asyncio.run(fetch_in_order(1, asyncio.sleep, print, concurrency=0, window=1,
                                   executor=worker))
