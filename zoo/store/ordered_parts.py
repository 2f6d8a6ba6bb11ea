"""Parts fetched concurrently and consumed in order, with a bounded number held in memory.

A large object is downloaded as ranges, several at a time, while one worker thread hashes and
writes them in order. :func:`fetch_in_order` keeps at most ``window`` parts fetched but not yet
consumed: a part is fetched only once the part ``window`` places before it has been consumed,
so a slow disk (or a slow hash) holds back the downloads instead of piling parts up in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")


async def fetch_in_order(
    count: int,
    fetch: Callable[[int], Awaitable[T]],
    consume: Callable[[T], None],
    *,
    concurrency: int,
    window: int,
    executor: Executor,
) -> None:
    """Fetch parts ``0..count-1`` (at most ``concurrency`` at a time) and hand each to
    ``consume``, in order, on ``executor``. At most ``window`` parts are held fetched and not
    yet consumed. The first failure (a fetch or a consume) stops the rest and is raised."""
    if concurrency < 1 or window < 1:
        raise ValueError("concurrency and window must be at least 1")
    loop = asyncio.get_running_loop()
    cond = asyncio.Condition()
    slots = asyncio.Semaphore(concurrency)
    ready: dict[int, T] = {}
    consumed = 0  # parts 0..consumed-1 are consumed
    failed = False

    async def fail() -> None:
        nonlocal failed
        async with cond:
            failed = True
            cond.notify_all()

    async def part(i: int) -> None:
        async with cond:
            await cond.wait_for(lambda: failed or i < consumed + window)
            if failed:
                return
        try:
            async with slots:
                data = await fetch(i)
        except BaseException:
            await fail()
            raise
        async with cond:
            ready[i] = data
            cond.notify_all()

    async def consumer() -> None:
        nonlocal consumed
        for i in range(count):
            def arrived(i: int = i) -> bool:
                return failed or i in ready

            async with cond:
                await cond.wait_for(arrived)
                if failed:
                    return
                data = ready.pop(i)
            try:
                await loop.run_in_executor(executor, consume, data)
            except BaseException:
                await fail()
                raise
            del data
            async with cond:
                consumed = i + 1
                cond.notify_all()

    results = await asyncio.gather(consumer(), *(part(i) for i in range(count)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
