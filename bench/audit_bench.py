"""Transparency-log benchmark through the product paths: ``AuditLog.record`` and the gateway.

Run from the repository root::

    python bench/audit_bench.py                     # 100,000-entry log behind the gateway
    python bench/audit_bench.py --entries 1000000   # issue 7's scale (prefill takes a while)

Prints one table:

* **record/s** — events appended through ``AuditLog.record`` (canonical JSON encoding,
  group-committed batches, search index) by 1, 50 and 500 concurrent producers on a
  fresh SQLite log.  Target (issue 7, 2-core machine): at least 5,000 appends/s batched.
* **proof latency via the gateway** — a real platform and gateway (separate processes,
  mutual TLS) over a log of ``--entries`` entries: ``GetInclusionProof`` for random
  leaves and ``GetConsistencyProof`` for random size pairs, p50/p99 as an auditor sees
  them (client → gateway → platform → store), every proof verified client-side.
  Target for the store alone: p50 at most 5 ms at 1,000,000 entries
  (``bench/tlog_bench.py``); here the two mTLS hops are included.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from platform_node.audit import AuditLog, LogSettings
from veil._internal.merkle import verify_consistency, verify_inclusion
from veil.audit.client import AuditClient
from veil.audit.entry import AuditEvent, EventType, encode_entry
from veil.checkpoint import Signer, verify_checkpoint
from veil.tlog import LogStore
from veil.uscc import make_uscc
from veil_cli.audit_setup import LOG_KEY_FILE, LOG_ORIGIN
from veil_cli.client import load_client_config
from veil_cli.federation import Federation

RECORD_TARGET = 5_000.0
USCCS = [make_uscc("9", "1", "110105", f"MA{i:06d}") for i in range(50)]


def event(i: int) -> AuditEvent:
    return AuditEvent(
        type=EventType.LOOKUP,
        actor=f"institution/bank-{i % 7}",
        request_id=f"{i:032x}",
        enterprise=USCCS[i % len(USCCS)],
        providers=("court", "samr"),
        result_sha256=f"{i:064x}",
    )


async def bench_record(workdir: Path, producers: int, total: int) -> float:
    d = Path(tempfile.mkdtemp(dir=workdir))
    audit = await AuditLog.open(
        f"sqlite:///{d / 'p.db'}", LogSettings(d / "log.key", LOG_ORIGIN), actor="platform/p"
    )

    async def producer(k: int) -> None:
        for i in range(k, total, producers):
            await audit.record(event(i))

    t0 = time.perf_counter()
    await asyncio.gather(*(producer(k) for k in range(producers)))
    elapsed = time.perf_counter() - t0
    await audit.close()
    return total / elapsed


async def prefill(url: str, key: Path, entries: int) -> None:
    """Fill the platform's log the way the sequencer does, in large batches."""
    audit = await AuditLog.open(url, LogSettings(key, LOG_ORIGIN), actor="platform/p")
    now = dt.datetime.now(dt.UTC)
    done = audit.store.size()
    t0 = time.perf_counter()
    while done < entries:
        n = min(10_000, entries - done)
        leaves = [encode_entry(event(i), now) for i in range(done, done + n)]
        first = await asyncio.to_thread(audit.store.append_batch, leaves)
        await asyncio.to_thread(audit.index.add, first, leaves)
        done += n
        rate = done / (time.perf_counter() - t0)
        print(f"\rprefill {done:,}/{entries:,} ({rate:,.0f}/s)", end="", file=sys.stderr)
    print(file=sys.stderr)
    await audit.checkpoint(fresh=True)
    await audit.close()


def start_nodes(workdir: Path, entries: int) -> Federation:
    """A platform and a gateway (no providers) set up exactly as ``veil demo`` does,
    over a log prefilled with ``entries`` entries."""
    fed = Federation(workdir / "federation", providers=())
    fed.prepare()
    url = f"sqlite:///{fed.data / 'platform.db'}"
    asyncio.run(prefill(url, fed.certs / LOG_KEY_FILE, entries))
    fed.start()
    asyncio.run(fed.wait_healthy(timeout_s=300))
    return fed


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_proofs(fed: Federation, samples: int) -> dict[str, list[float]]:
    config = load_client_config(fed.workdir / "auditor.toml")
    verifier = Signer.load(fed.certs / LOG_KEY_FILE).verifier()
    rng = random.Random(7)
    out: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    async with config.gateway_channel() as channel:
        client = AuditClient(channel)
        cp = verify_checkpoint(bytes((await client.checkpoint(fresh=True)).note), verifier)
        size, root = cp.size, cp.root_hash
        for _ in range(20):  # warm up channels and caches
            await client.inclusion_proof(size, index=rng.randrange(size))
        for _ in range(samples):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            proof = await client.inclusion_proof(size, index=index)
            out["inclusion"].append((time.perf_counter() - t0) * 1000)
            verify_inclusion(bytes(proof.leaf_hash), index, size, list(proof.hashes), root)
        store = LogStore(f"sqlite:///{fed.data / 'platform.db'}", table_prefix="audit_log_")
        try:
            for _ in range(samples):
                size1 = rng.randrange(1, size)
                t0 = time.perf_counter()
                hashes = await client.consistency_proof(size1, size)
                out["consistency"].append((time.perf_counter() - t0) * 1000)
                # the old root, read directly from the database (untimed)
                verify_consistency(size1, size, hashes, store.root(size1), root)
        finally:
            store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=20_000, help="events per record run")
    parser.add_argument("--samples", type=int, default=500, help="proofs per kind")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="veil-audit-bench-"))
    rows: list[tuple[str, str, str]] = []
    for producers in (1, 50, 500):
        total = args.records if producers > 1 else min(args.records, 1000)
        rate = asyncio.run(bench_record(workdir, producers, total))
        ok = "" if producers == 1 else ("PASS" if rate >= RECORD_TARGET else "FAIL")
        rows.append((f"AuditLog.record, {producers} producers", f"{rate:,.0f}/s", ok))
    fed = start_nodes(workdir, args.entries)
    try:
        lat = asyncio.run(bench_proofs(fed, args.samples))
    finally:
        fed.stop()
    for kind, samples in lat.items():
        rows.append(
            (
                f"{kind} proof via gateway, {args.entries:,} entries",
                f"p50 {statistics.median(samples):.2f} ms, p99 {pct(samples, 0.99):.2f} ms",
                "",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'result':<34}  target")
    for name, result, ok in rows:
        print(f"{name:<{width}}  {result:<34}  {ok}")
    print(f"(work directory {workdir}; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
