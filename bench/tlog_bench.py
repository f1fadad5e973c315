"""Transparency log benchmark: batched append throughput and proof latency.

Run from the repository root::

    python bench/tlog_bench.py                   # 1,000,000 entries (a few minutes)
    python bench/tlog_bench.py --entries 100000  # quicker
    python bench/tlog_bench.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test

Prints one table: appends/s for several batch sizes on a fresh log, then inclusion
and consistency proof latency (p50/p99, served from the store, each proof verified)
on a log of ``--entries`` entries.  Targets (issue 7, 2-core machine): at least
5,000 appends/s batched; proof p50 at most 5 ms at 1,000,000 entries.

Entries are 200 bytes, about the size of a usage record made of hashes and ids.
With ``--url`` the benchmark uses (and then drops) tables prefixed ``tlog_bench_``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine

from veil._internal.merkle import leaf_hash, verify_consistency, verify_inclusion
from veil.tlog import LogStore
from veil.tlog.schema import Tables

ENTRY_SIZE = 200
APPEND_TARGET = 5_000.0
PROOF_P50_TARGET_MS = 5.0


def entry(i: int) -> bytes:
    return (b"%012d:" % i).ljust(ENTRY_SIZE, b".")


def drop_tables(url: str, prefix: str) -> None:
    engine = create_engine(url)
    Tables(prefix).metadata.drop_all(engine)
    engine.dispose()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_appends(url: str, prefix: str, batch: int, total: int) -> tuple[float, float]:
    """(appends per wall-clock second, appends per CPU second of this process)."""
    drop_tables(url, prefix)
    store = LogStore(url, table_prefix=prefix)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, total, batch):
            store.append_batch([entry(i) for i in range(first, min(total, first + batch))])
        return total / (time.perf_counter() - start), total / (time.process_time() - cpu)
    finally:
        store.close()
        drop_tables(url, prefix)


def timed(samples: int, op: Callable[[random.Random], None]) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread) milliseconds per call.  The machine is shared,
    so the CPU figure is the one that does not move with other processes' load."""
    rng = random.Random(42)
    wall, cpu = [], []
    for _ in range(samples):
        start, cstart = time.perf_counter(), time.thread_time()
        op(rng)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - cstart) * 1000)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="log size for proofs")
    parser.add_argument("--samples", type=int, default=1_000, help="proofs per measurement")
    parser.add_argument("--url", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--build-batch", type=int, default=10_000)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="tlog-bench-")
    url = args.url or f"sqlite:///{os.path.join(tmp.name, 'bench.db')}"
    prefix = "tlog_bench_"
    rows: list[tuple[str, str, str]] = []

    for batch, total in ((1, 500), (100, 20_000), (1_000, 50_000), (10_000, 100_000)):
        rate, cpu_rate = bench_appends(url, prefix, batch, total)
        target = f">= {APPEND_TARGET:,.0f}" if batch > 1 else "(unbatched)"
        rows.append(
            (
                f"append, batch {batch:,} ({total:,} entries)",
                f"{rate:,.0f} /s (cpu {cpu_rate:,.0f} /s)",
                target,
            )
        )
        print(f"... {rows[-1][0]}: {rows[-1][1]}", file=sys.stderr)

    drop_tables(url, prefix)
    store = LogStore(url, table_prefix=prefix)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, args.entries, args.build_batch):
            last = min(args.entries, first + args.build_batch)
            store.append_batch([entry(i) for i in range(first, last)])
        build, build_cpu = time.perf_counter() - start, time.process_time() - cpu
        n = store.size()
        rows.append(
            (
                f"build log of {n:,} (batch {args.build_batch:,})",
                f"{n / build:,.0f} /s (cpu {n / build_cpu:,.0f} /s)",
                f">= {APPEND_TARGET:,.0f}",
            )
        )
        print(f"... {rows[-1][0]}: {rows[-1][1]} in {build:.1f} s", file=sys.stderr)
        root = store.root(n)

        def inclusion(rng: random.Random) -> None:
            i = rng.randrange(n)
            verify_inclusion(leaf_hash(entry(i)), i, n, store.inclusion_proof(i, n), root)

        def by_hash(rng: random.Random) -> None:
            i = rng.randrange(n)
            index, proof = store.inclusion_proof_by_leaf_hash(leaf_hash(entry(i)), n)
            verify_inclusion(leaf_hash(entry(i)), index, n, proof, root)

        roots: dict[int, bytes] = {}

        def consistency(rng: random.Random) -> None:
            m = rng.randrange(1, n)
            if m not in roots:
                roots[m] = store.root(m)
            verify_consistency(m, n, store.consistency_proof(m, n), roots[m], root)

        # Old roots are fetched outside the timed section.
        warm = random.Random(42)
        for _ in range(args.samples):
            m = warm.randrange(1, n)
            roots[m] = store.root(m)

        for label, op in (
            ("inclusion proof", inclusion),
            ("inclusion proof by leaf hash", by_hash),
            ("consistency proof", consistency),
        ):
            ms, cpu_ms = timed(args.samples, op)
            p50, p99 = statistics.median(ms), percentile(ms, 0.99)
            cpu50 = statistics.median(cpu_ms)
            target = f"p50 <= {PROOF_P50_TARGET_MS:g} ms" if n >= 1_000_000 else "(scaled down)"
            rows.append(
                (
                    f"{label} @ {n:,} (+verify)",
                    f"p50 {p50:.2f} / p99 {p99:.2f} ms (cpu p50 {cpu50:.2f} ms)",
                    target,
                )
            )
            print(f"... {rows[-1][0]}: {rows[-1][1]}", file=sys.stderr)
    finally:
        store.close()
        drop_tables(url, prefix)
        tmp.cleanup()

    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}}  {'result':>{vwidth}}  target")
    print("-" * (width + vwidth + 20))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
