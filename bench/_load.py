"""Load shapes the online benchmarks share: one request at a time, many in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sequential(n: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def sustained(
    seconds: float, concurrency: int, call: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    stop = time.perf_counter() + seconds
    latencies: list[float] = []
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await call(next(counter))
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - t0), latencies
