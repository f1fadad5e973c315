"""Verification benchmark (issue 4) through the gateway, on loopback, with the real daemons.

Run from the repository root::

    python bench/verification_bench.py              # 200 requests per row, 20 s throughput
    python bench/verification_bench.py --quick      # 60 requests, 8 s

Starts a whole federation (``veil_cli.federation.Federation``: gateway, platform and one
provider node per unit as separate processes, mutual TLS), enrols four enterprises with
grants to verify, then measures as a bank sees it (client → gateway → platform →
providers → back, every answer signed and its client assertion fresh):

* **single** — one provider: "VAT paid last year ≥ t" at the tax bureau;
* **composite** — six providers, "no arrears anywhere and an annual report and a
  property": the ``all`` protocol, 2048-bit Paillier under the platform's key, pairwise
  X25519 masks, fresh randomizers on every ciphertext;
* **baseline** — the same six-provider fan-out with no encryption: every condition sent
  in the clear to its provider and answered to the platform (``plaintext_baseline``, a
  platform setting enabled for this benchmark only); its calls to each provider are
  batched under load (``VerifyClaimMany``) as the encrypted protocol's are
  (``ContributeMany``), so the ratio prices the encryption, not the batching;
* **VerifyMany** — the composite check in batches of ``--many`` (32) per call, as a bank
  monitoring its loan book sends them: each check still its own enterprise, grant,
  budget, provider contributions, signed result and log entry; the call, the caller's
  checks and the admission transaction are shared, and the providers receive the batch's
  contributions in shared calls;
* **capacity** — the composite check one per call again, with ``--capacity`` (64) in
  flight: what the federation sustains once its batching (the gateway's coalescing, the
  platform's shared provider calls) has all the load it can use, with the latency each
  check then takes.  At 16 in flight the two cores are not saturated (about 15 % idle).

Each row starts after its warm-up once the federation is idle again
(``Federation.settle``: the first composite check makes every provider build its
randomizer tables in the background, about 0.65 s of CPU each, which would otherwise
share the cores with the next row).  Latency p50/p99 with one request at a time;
throughput with ``--concurrency`` requests in flight over one channel; CPU time per
check summed over every process (from /proc), both one at a time and while
``--concurrency`` are in flight (idle work amortised: the steadier figure on a shared
machine).
The answer cache is off, so every request reaches the providers; thresholds cycle so
answers mix true and false (a true ``all`` needs one decryption, false or no record two).
Targets (issue 4, 2-core machine): single p50 ≤ 10 ms, composite p50 ≤ 40 ms, ≥ 100
composite checks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import pct, sequential, sustained
from bench._speed import probe
from veil.errors import from_status_bytes
from veil.v1 import authorization_pb2 as apb
from veil.v1 import (
    authorization_pb2_grpc,
    verification_pb2_grpc,
)
from veil.v1 import verification_pb2 as vpb
from veil_cli.authz_setup import enroll_enterprise, onboard_institution
from veil_cli.calls import call_gateway
from veil_cli.client import load_client_config
from veil_cli.commands.data import generate_to_dir
from veil_cli.commands.demo import wait_for_aggregation
from veil_cli.commands.enterprise import make_grant_jws
from veil_cli.federation import INSTITUTION, Federation
from veil_cli.verify_setup import prepare_verification

PURPOSE = "loan_origination"
BENCH_DAILY_QUOTA = 100_000_000  # the demo's 10,000 a day would run out mid-run
LOAN = "LOAN-BENCH-1"
FIELDS = [
    "tax_in_arrears",
    "tax_vat_paid_last_year",
    "si_in_arrears",
    "hf_consecutive_normal_months",
    "util_water_in_arrears",
    "util_elec_in_arrears",
    "util_gas_in_arrears",
    "re_certificate_no",
    "samr_report_year",
]
SIX = [
    {"field": "tax_in_arrears", "op": "eq", "value": False},
    {"field": "si_in_arrears", "op": "eq", "value": False},
    {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"},
    {"field": "util_water_in_arrears", "op": "eq", "value": False},
    {"field": "util_elec_in_arrears", "op": "eq", "value": False},
    {"field": "util_gas_in_arrears", "op": "eq", "value": False},
    {"exists": "re_properties"},
    {
        "exists": "samr_annual_report",
        "where": [{"field": "samr_report_year", "op": "eq", "value": 2024}],
    },
]
TARGETS = {"single_p50": 10.0, "composite_p50": 40.0, "composite_rate": 100.0}
_counter = itertools.count(1)


def vat(i: int) -> dict[str, object]:
    return {"field": "tax_vat_paid_last_year", "op": "ge", "value": str(10_000 * i), "unit": "CNY"}


def claim_for(kind: str) -> str:
    i = next(_counter) % 40  # thresholds 0 … 390,000 CNY: a mix of true and false answers
    if kind == "single":
        return json.dumps(vat(i))
    return json.dumps({"all": [*SIX, vat(i)]})


async def prepare(fed: Federation, enterprises: int) -> list[tuple[str, str]]:
    fed.prepare()
    prepare_verification(
        fed, {"budget": 1_000_000_000, "cache_ttl_s": 0, "plaintext_baseline": True}
    )
    generate_to_dir(fed.data, enterprises=enterprises, seed=11, units=fed.providers, progress=False)
    await fed.launch()
    await wait_for_aggregation(fed.workdir / "admin.toml")
    await onboard_institution(fed, INSTITUTION, daily_quota=BENCH_DAILY_QUOTA)
    with (fed.data / "labels.csv").open(newline="") as fh:
        usccs = [row["uscc"] for _, row in zip(range(4), csv.DictReader(fh), strict=False)]
    out = []
    for uscc in usccs:
        config = str(enroll_enterprise(fed, uscc, f"企业{uscc[-4:]}"))
        grant = await call_gateway(
            config,
            authorization_pb2_grpc.AuthorizationServiceStub,
            "CreateGrant",
            apb.CreateGrantRequest(
                grant_jws=make_grant_jws(
                    config,
                    institution=INSTITUTION,
                    fields=FIELDS,
                    uses=["verify"],
                    purpose=PURPOSE,
                    loan_ref=LOAN,
                    days=1,
                )
            ),
        )
        out.append((uscc, grant.grant_id))
    return out


async def run(args: argparse.Namespace, fed: Federation) -> list[dict[str, object]]:
    subjects = await prepare(fed, args.enterprises)
    cycle = itertools.cycle(subjects)
    config = load_client_config(fed.workdir / "client.toml")
    rows: list[dict[str, object]] = []
    async with config.gateway_channel() as channel:
        stub = verification_pb2_grpc.VerificationServiceStub(channel)

        def ask(kind: str) -> Callable[[], Awaitable[vpb.VerifyResponse]]:
            async def one() -> vpb.VerifyResponse:
                uscc, grant = next(cycle)
                answer: vpb.VerifyResponse = await stub.Verify(
                    vpb.VerifyRequest(
                        uscc=uscc,
                        grant_id=grant,
                        purpose=PURPOSE,
                        loan_ref=LOAN,
                        claim_json=claim_for("single" if kind == "single" else "composite"),
                        plaintext_baseline=kind == "baseline",
                    ),
                    timeout=30.0,
                )
                return answer

            return one

        # the baseline answers exactly what the encrypted protocol answers
        uscc, grant = subjects[0]
        claim = json.dumps({"all": SIX})
        answers = [
            await stub.Verify(
                vpb.VerifyRequest(
                    uscc=uscc,
                    grant_id=grant,
                    purpose=PURPOSE,
                    loan_ref=LOAN,
                    claim_json=claim,
                    plaintext_baseline=baseline,
                ),
                timeout=30.0,
            )
            for baseline in (False, True)
        ]
        assert answers[0].result == answers[1].result, "baseline and protocol disagree"
        assert answers[1].protocol == vpb.VERIFICATION_PROTOCOL_PLAINTEXT

        pids = list(fed.processes)
        for kind in ("single", "composite", "baseline"):
            call = ask(kind)
            for _ in range(args.warmup):  # pools, key caches, connections
                await call()
            await fed.settle()
            before = fed.cpu_seconds()
            latencies = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                await call()
                latencies.append((time.perf_counter() - t0) * 1000)
            after = fed.cpu_seconds()
            spent = {n: (after[n] - before[n]) / args.requests * 1000 for n in pids}
            cpu_ms = sum(spent.values())
            roles = {n.name: n.role for n in fed.nodes}
            by_role = {
                role: sum(v for n, v in spent.items() if roles[n] == role)
                for role in ("gateway", "platform", "provider")
            }
            latencies.sort()

            async def one(_: int, call: Callable[[], Awaitable[object]] = call) -> None:
                await call()

            before = fed.cpu_seconds()
            client_before = time.process_time()
            rate, loaded_latencies = await sustained(args.seconds, args.concurrency, one)
            done = len(loaded_latencies)
            after = fed.cpu_seconds()
            client = (time.process_time() - client_before) / max(1, done) * 1000
            loaded = {n: (after[n] - before[n]) / max(1, done) * 1000 for n in pids}
            loaded_by_role = {
                role: sum(v for n, v in loaded.items() if roles[n] == role)
                for role in ("gateway", "platform", "provider")
            }
            rows.append(
                {
                    "kind": kind,
                    "p50": statistics.median(latencies),
                    "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                    "rate": rate,
                    "cpu_ms": cpu_ms,
                    "cpu_gateway": by_role["gateway"],
                    "cpu_platform": by_role["platform"],
                    "cpu_providers": by_role["provider"],
                    "cpu_loaded": sum(loaded.values()),
                    **{f"loaded_{role}": v for role, v in loaded_by_role.items()},
                    "loaded_client": client,
                }
            )
        rows.append(await capacity_row(args, fed, ask("composite")))
        rows.append(await many_row(args, fed, stub, cycle))
    return rows


async def capacity_row(
    args: argparse.Namespace, fed: Federation, call: Callable[[], Awaitable[vpb.VerifyResponse]]
) -> dict[str, object]:
    """Composite checks one per call with ``--capacity`` in flight: the rate the
    federation sustains once its batching has all the load it can use, and how long each
    check then takes (latency under load, not one at a time)."""
    await fed.settle()

    async def one(_: int) -> None:
        await call()

    rate, latencies = await sustained(args.seconds, args.capacity, one)
    return {"kind": "capacity", "rate": rate, "p50": pct(latencies, 50), "p99": pct(latencies, 99)}


async def many_row(
    args: argparse.Namespace,
    fed: Federation,
    stub: verification_pb2_grpc.VerificationServiceAsyncStub,
    cycle: Iterator[tuple[str, str]],
) -> dict[str, object]:
    """The composite check through ``VerifyMany``: batches of ``--many`` checks (each
    its own enterprise, grant, budget, signed result and log entry), latency per batch
    one at a time, throughput with ``--many-concurrency`` batches in flight."""

    async def batch() -> None:
        requests = []
        for _ in range(args.many):
            uscc, grant = next(cycle)
            requests.append(
                vpb.VerifyRequest(
                    uscc=uscc,
                    grant_id=grant,
                    purpose=PURPOSE,
                    loan_ref=LOAN,
                    claim_json=claim_for("composite"),
                )
            )
        answer = await stub.VerifyMany(vpb.VerifyManyRequest(requests=requests), timeout=60.0)
        refused = [r.error for r in answer.results if r.WhichOneof("outcome") != "answer"]
        if refused:
            raise SystemExit(f"a benchmark check was refused: {from_status_bytes(refused[0])}")

    for _ in range(3):
        await batch()
    await fed.settle()
    pids = list(fed.processes)
    roles = {n.name: n.role for n in fed.nodes}
    before = fed.cpu_seconds()

    async def a_batch(_: int) -> None:
        await batch()

    latencies = sorted(await sequential(max(5, args.requests // args.many), a_batch))
    after = fed.cpu_seconds()
    alone = {n: (after[n] - before[n]) / (len(latencies) * args.many) * 1000 for n in pids}
    await fed.settle()
    before = fed.cpu_seconds()
    client_before = time.process_time()
    batches_per_s, batches = await sustained(args.seconds, args.many_concurrency, a_batch)
    rate, done = batches_per_s * args.many, len(batches) * args.many
    after = fed.cpu_seconds()
    client = (time.process_time() - client_before) / max(1, done) * 1000
    loaded = {n: (after[n] - before[n]) / max(1, done) * 1000 for n in pids}

    def by_role(spent: dict[str, float]) -> dict[str, float]:
        return {
            role: sum(v for n, v in spent.items() if roles[n] == role)
            for role in ("gateway", "platform", "provider")
        }

    one, busy = by_role(alone), by_role(loaded)
    return {
        "kind": "many",
        "p50": statistics.median(latencies),
        "p99": latencies[-1],
        "rate": rate,
        "cpu_ms": sum(alone.values()),
        "cpu_gateway": one["gateway"],
        "cpu_platform": one["platform"],
        "cpu_providers": one["provider"],
        "cpu_loaded": sum(loaded.values()),
        **{f"loaded_{role}": v for role, v in busy.items()},
        "loaded_client": client,
    }


LABELS = {
    "single": "single provider (tax: VAT ≥ t)",
    "composite": "6-provider composite, Paillier 2048 + masks",
    "baseline": "6-provider fan-out, no encryption",
    "many": "6-provider composite, VerifyMany batches",
}
TABLE_KINDS = ("single", "composite", "baseline", "many")  # the capacity row is reported apart


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        "\nload average at the end (the federation itself included; others share the "
        f"machine): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(
        f"\nverification through the gateway, {args.requests} requests per latency row, "
        f"throughput with {args.concurrency} in flight for {args.seconds:g} s, "
        f"{os.cpu_count()} cores\n"
    )
    print(
        f"VerifyMany row: batches of {args.many} checks; its p50/p99 are of a whole batch "
        f"(one at a time, worst of the run as p99), its throughput with "
        f"{args.many_concurrency} batches in flight\n"
    )
    print(f"{'check':48s} {'p50 ms':>8s} {'p99 ms':>8s} {'checks/s':>9s} {'CPU ms/check':>13s}")
    by = {str(r["kind"]): r for r in rows}
    rows = [by[k] for k in TABLE_KINDS]
    for row in rows:
        print(
            f"{LABELS[str(row['kind'])]:48s} {row['p50']:8.1f} {row['p99']:8.1f} "
            f"{row['rate']:9.1f} {row['cpu_ms']:13.1f}"
        )
    print("\nCPU ms per check by role, one at a time (gateway / platform / all providers):")
    for row in rows:
        print(
            f"  {LABELS[str(row['kind'])]:46s} {row['cpu_gateway']:6.1f} / "
            f"{row['cpu_platform']:6.1f} / {row['cpu_providers']:6.1f}"
        )
    print(
        f"\nCPU ms per check while {args.concurrency} are in flight (idle work amortised; "
        "the steadier figure): total = gateway / platform / all providers; and this "
        "benchmark's own client (the bank: its client assertions, TLS and gRPC), which "
        "shares the same cores"
    )
    for row in rows:
        print(
            f"  {LABELS[str(row['kind'])]:46s} {row['cpu_loaded']:6.1f} = "
            f"{row['loaded_gateway']:5.1f} / {row['loaded_platform']:5.1f} / "
            f"{row['loaded_provider']:5.1f}; client {row['loaded_client']:5.1f}"
        )
    comp = {k: float(v) for k, v in by["composite"].items() if k != "kind"}  # type: ignore[arg-type]
    base = {k: float(v) for k, v in by["baseline"].items() if k != "kind"}  # type: ignore[arg-type]
    single = float(by["single"]["p50"])  # type: ignore[arg-type]
    print(
        f"\ncost of privacy (composite / baseline): p50 ×{comp['p50'] / base['p50']:.2f}, "
        f"throughput ×{comp['rate'] / base['rate']:.2f}, "
        f"CPU ×{comp['cpu_ms'] / base['cpu_ms']:.2f}"
    )

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    cap = by["capacity"]
    capacity_rate = float(cap["rate"])  # type: ignore[arg-type]
    print(
        f"composite, one check per call, {args.capacity} in flight (capacity): "
        f"{capacity_rate:.1f} checks/s, latency under that load p50 {cap['p50']:.0f} ms, "
        f"p99 {cap['p99']:.0f} ms"
    )
    many = float(by["many"]["rate"])  # type: ignore[arg-type]
    print(
        f"targets: single p50 ≤ {TARGETS['single_p50']:g} ms "
        f"({met(single <= TARGETS['single_p50'])}), "
        f"composite p50 ≤ {TARGETS['composite_p50']:g} ms "
        f"({met(comp['p50'] <= TARGETS['composite_p50'])}), "
        f"≥ {TARGETS['composite_rate']:g} composite/s: one check per call, "
        f"{args.concurrency} in flight ({met(comp['rate'] >= TARGETS['composite_rate'])}), "
        f"{args.capacity} in flight ({met(capacity_rate >= TARGETS['composite_rate'])}), "
        f"VerifyMany ({met(many >= TARGETS['composite_rate'])})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--capacity",
        type=int,
        default=64,
        help="composite checks in flight for the capacity row (one per call)",
    )
    parser.add_argument("--enterprises", type=int, default=400)
    parser.add_argument("--many", type=int, default=32, help="checks per VerifyMany batch")
    parser.add_argument("--many-concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup, args.seconds = 60, 10, 8.0
    before = probe()
    with tempfile.TemporaryDirectory(prefix="veil-verify-bench-") as tmp:
        fed = Federation(Path(tmp))
        try:
            rows = asyncio.run(run(args, fed))
        finally:
            fed.stop()
    report(rows, args)
    print(f"machine speed (bench/_speed.py) before: {before}; after: {probe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
