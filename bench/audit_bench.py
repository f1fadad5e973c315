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
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tomli_w

from platform_node.audit import AuditLog, LogSettings
from veil._internal.merkle import verify_consistency, verify_inclusion
from veil.audit.client import AuditClient
from veil.audit.entry import AuditEvent, EventType, encode_entry
from veil.certs import init_dev_pki
from veil.checkpoint import Signer, verify_checkpoint
from veil.config import TLSConfig
from veil.server import wait_healthy
from veil.tlog import LogStore
from veil.tls import PeerIdentity, secure_channel
from veil.uscc import make_uscc

RECORD_TARGET = 5_000.0
ORIGIN = "bench.veil/log"
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
        f"sqlite:///{d / 'p.db'}", LogSettings(d / "log.key", ORIGIN), actor="platform/p"
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
    audit = await AuditLog.open(url, LogSettings(key, ORIGIN), actor="platform/p")
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


def start_nodes(workdir: Path, entries: int) -> tuple[list[subprocess.Popen[bytes]], str]:
    certs, data, configs = workdir / "certs", workdir / "data", workdir / "config"
    for d in (data, configs):
        d.mkdir(parents=True, exist_ok=True)
    init_dev_pki(
        certs, [("platform", "platform"), ("gateway", "gateway"), ("auditor", "bench-auditor")]
    )
    url = f"sqlite:///{data / 'platform.db'}"
    asyncio.run(prefill(url, certs / "log.key", entries))
    ports = {}
    for name in ("platform", "gateway"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
    tls = {"ca": "../certs/ca.pem"}
    docs = {
        "platform": {
            "node": {
                "role": "platform",
                "name": "platform",
                "listen": f"127.0.0.1:{ports['platform']}",
            },
            "tls": {**tls, "cert": "../certs/platform.pem", "key": "../certs/platform.key"},
            "store": {"url": url},
            "platform": {"aggregate_interval_s": 0},
            "log": {"key": "../certs/log.key", "origin": ORIGIN},
        },
        "gateway": {
            "node": {
                "role": "gateway",
                "name": "gateway",
                "listen": f"127.0.0.1:{ports['gateway']}",
            },
            "tls": {**tls, "cert": "../certs/gateway.pem", "key": "../certs/gateway.key"},
            "peers": [
                {
                    "name": "platform",
                    "role": "platform",
                    "address": f"127.0.0.1:{ports['platform']}",
                }
            ],
        },
    }
    procs = []
    for name, doc in docs.items():
        path = configs / f"{name}.toml"
        path.write_text(tomli_w.dumps(doc))
        log = (workdir / f"{name}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "veil_cli", name, "serve", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[1],
            )
        )
    return procs, f"127.0.0.1:{ports['gateway']}"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_proofs(workdir: Path, address: str, samples: int) -> dict[str, list[float]]:
    certs = workdir / "certs"
    tls = TLSConfig(
        ca=certs / "ca.pem", cert=certs / "bench-auditor.pem", key=certs / "bench-auditor.key"
    )
    await wait_healthy(address, tls, PeerIdentity("gateway", "gateway"), timeout_s=120)
    verifier = Signer.load(certs / "log.key").verifier()
    rng = random.Random(7)
    out: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    async with secure_channel(address, tls, PeerIdentity("gateway", "gateway")) as channel:
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
        store = LogStore(f"sqlite:///{workdir / 'data' / 'platform.db'}", table_prefix="audit_log_")
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
    procs, address = start_nodes(workdir, args.entries)
    try:
        lat = asyncio.run(bench_proofs(workdir, address, args.samples))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
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
