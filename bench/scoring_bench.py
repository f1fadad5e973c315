"""Joint-model scoring benchmark: real daemons on loopback, 6 providers × 40 features.

Run from the repository root::

    python bench/scoring_bench.py --quick        # ~3 min: fewer requests, small batch
    python bench/scoring_bench.py                # the figures in docs/performance.md
    python bench/scoring_bench.py --batch-only --enterprises 1000000   # batch rows only
    python bench/scoring_bench.py --batch-only --population DIR  # a `veil data generate` DIR

It starts a federation (6 provider nodes, the platform, the gateway; separate processes,
mutual TLS), generates a population, fits and approves a 40-feature model spread over
the 6 providers (raw, binned, WOE and one-hot encodings), enrolls enterprises with
grants, and prints one table:

* **online score** through the gateway (client → gateway → platform → 6 providers →
  Paillier 2048-bit secure sum → signed score): latency p50/p99 one request at a time,
  throughput with ``--concurrency`` requests in flight and with ``--capacity`` (64: what
  the federation sustains once its batching has all the load it can use), for each provider
  randomizer mode (``djn`` and ``full``, see ``provider_node/scoring.py``); then the
  same scores through ``ScoreMany`` (``--many`` per call, at most ``--many-concurrency``
  calls in flight: fewer where a mode sustains less, so a call stays inside the
  platform's provider deadline), as a bank re-scoring its loan book sends them: each
  score still its own grant, quota, rounds, attestation and log entry;
* **the same fan-out in plaintext**: the bank fetches the same fields through the same
  path (``FetchAuthorized``: gateway → platform → the same 6 providers, grant checks,
  tokens, ledgers, audit log) and evaluates the model itself — what scoring costs
  without any encryption, hence the cost-of-privacy ratio;
* **the crypto lower bound**: the exponentiations of one score, micro-benchmarked
  in-process on this machine with the protocol's own code (each provider's encrypted
  partial, mask, re-randomization and a fresh randomizer; the platform's decryption);
* **batch**: two full-coverage CKKS jobs over every registered enterprise, end to end
  (including each provider's one pass over its store), with the CPU every daemon used
  (``/proc/<pid>/stat``) and hence the CPU-bound rate; then, in-process, the CKKS part
  alone per 4096-enterprise chunk and the store read + featurization per enterprise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform as platform_module
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import pct, sequential, sustained
from bench._speed import probe
from platform_node.models.demo import Template, fit_demo_model
from platform_node.scoring import TOTAL_BOUND_BITS
from veil.errors import from_status_bytes

PROVIDERS = ("samr", "court", "tax", "social_insurance", "housing_fund", "utilities")
VOLTAGES = ("0.22kV", "0.38kV", "10kV", "20kV", "35kV", "66kV", "110kV", "220kV")
BENCH_TEMPLATES: tuple[Template, ...] = (
    # samr (12)
    Template("samr_abnormal", "samr", "samr_abnormal_listed", "raw"),
    Template(
        "samr_abnormal_reason",
        "samr",
        "samr_abnormal_reason",
        "one_hot",
        categories=(
            "annual_report_missing",
            "disclosure_missing",
            "false_disclosure",
            "unreachable_address",
        ),
        reference="annual_report_missing",
    ),
    Template("samr_failed_checks", "samr", "samr_failed_checks_3y", "raw", clip=(0, 3)),
    Template("samr_capital", "samr", "samr_registered_capital", "raw", log=True),
    Template("samr_headcount", "samr", "samr_headcount", "raw", aggregate="latest", log=True),
    Template(
        "samr_report_year",
        "samr",
        "samr_report_year",
        "binned",
        aggregate="latest",
        edges=(2023.0, 2024.0),
    ),
    Template("samr_guarantee", "samr", "samr_external_guarantee", "raw", aggregate="latest"),
    Template("samr_share_max", "samr", "samr_shareholding_ratio", "raw", aggregate="max"),
    Template("samr_paid", "samr", "samr_contribution_paid", "raw", aggregate="sum", log=True),
    Template("samr_pledges", "samr", "samr_pledged_amount", "raw", aggregate="count", clip=(0, 3)),
    Template(
        "samr_pledge_status",
        "samr",
        "samr_pledge_status",
        "one_hot",
        aggregate="latest",
        categories=("valid", "invalid"),
        reference="valid",
    ),
    Template(
        "samr_reg_status",
        "samr",
        "samr_reg_status",
        "one_hot",
        categories=("active", "revoked", "deregistered", "cancelled", "moved_out"),
        reference="active",
    ),
    # utilities (12)
    Template("water_3m", "utilities", "util_water_avg_3m", "raw", log=True),
    Template("water_6m", "utilities", "util_water_avg_6m", "raw", log=True),
    Template("water_arrears", "utilities", "util_water_in_arrears", "raw"),
    Template(
        "elec_use",
        "utilities",
        "util_elec_use_type",
        "one_hot",
        categories=(
            "large_industrial",
            "general_industrial_commercial",
            "agricultural",
            "residential",
            "other",
        ),
        reference="general_industrial_commercial",
    ),
    Template(
        "elec_voltage",
        "utilities",
        "util_elec_voltage_level",
        "one_hot",
        categories=VOLTAGES,
        reference="0.38kV",
    ),
    Template(
        "elec_risk",
        "utilities",
        "util_elec_risk_grade",
        "one_hot",
        categories=("low", "medium", "high"),
        reference="low",
    ),
    Template("elec_3m", "utilities", "util_elec_avg_3m", "raw", log=True),
    Template("elec_6m", "utilities", "util_elec_avg_6m", "raw", log=True),
    Template("elec_12m", "utilities", "util_elec_avg_12m", "raw", log=True),
    Template("elec_arrears", "utilities", "util_elec_in_arrears", "raw"),
    Template("gas_3m", "utilities", "util_gas_avg_3m", "raw", log=True),
    Template("gas_arrears", "utilities", "util_gas_in_arrears", "raw"),
    # tax (6)
    Template(
        "tax_grade",
        "tax",
        "tax_grade",
        "one_hot",
        aggregate="latest",
        categories=("A", "B", "M", "C", "D"),
        reference="B",
    ),
    Template(
        "tax_grade_year",
        "tax",
        "tax_grade_year",
        "binned",
        aggregate="latest",
        edges=(2023.0, 2024.0),
    ),
    Template("tax_abnormal", "tax", "tax_abnormal_taxpayer", "raw"),
    Template("tax_arrears", "tax", "tax_in_arrears", "raw"),
    Template(
        "tax_months_woe",
        "tax",
        "tax_consecutive_normal_months",
        "woe",
        edges=(6.0, 12.0, 24.0, 36.0, 60.0),
    ),
    Template("tax_months", "tax", "tax_consecutive_normal_months", "raw", clip=(0, 60)),
    # housing fund (3)
    Template("hf_contributors", "housing_fund", "hf_avg_monthly_contributors", "raw", log=True),
    Template(
        "hf_months", "housing_fund", "hf_consecutive_normal_months", "binned", edges=(12.0, 36.0)
    ),
    Template(
        "hf_participant", "housing_fund", "hf_avg_monthly_contributors", "raw", aggregate="exists"
    ),
    # social insurance (2)
    Template("si_arrears", "social_insurance", "si_in_arrears", "raw"),
    Template("si_insured", "social_insurance", "si_in_arrears", "raw", aggregate="exists"),
    # court (5)
    Template("court_dishonest", "court", "court_dishonest_performance", "raw", aggregate="exists"),
    Template(
        "court_dishonest_perf",
        "court",
        "court_dishonest_performance",
        "one_hot",
        aggregate="latest",
        categories=("none_performed", "partly_performed"),
        reference="none_performed",
    ),
    Template("court_bankruptcy", "court", "court_bankruptcy_type", "raw", aggregate="exists"),
    Template(
        "court_judgments", "court", "court_judgment_case_no", "raw", aggregate="count", clip=(0, 3)
    ),
    Template(
        "court_terminated",
        "court",
        "court_terminated_case_no",
        "raw",
        aggregate="count",
        clip=(0, 3),
    ),
)
assert len(BENCH_TEMPLATES) == 40 and {t.provider for t in BENCH_TEMPLATES} == set(PROVIDERS)
MODEL_ID = "bench-40"
PURPOSE = "loan_origination"
BENCH_DAILY_QUOTA = 100_000_000  # the demo's 10,000 a day would run out mid-run
LOAN = "LOAN-BENCH-1"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from veil_cli.federation import Federation

        self.args = args
        self.fed = Federation(workdir, providers=PROVIDERS)
        self.rows: list[tuple[str, str]] = []

    def row(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name}: {value}", flush=True)

    async def setup(self) -> None:
        from veil_cli.authz_setup import onboard_institution
        from veil_cli.commands.data import generate_to_dir
        from veil_cli.commands.demo import wait_for_aggregation
        from veil_cli.federation import INSTITUTION
        from veil_cli.score_demo import import_model, prepare_scoring

        fed = self.fed
        fed.prepare()
        prepare_scoring(fed, randomizer=self.args.randomizers[0])
        t0 = time.perf_counter()
        generate_to_dir(
            fed.data,
            enterprises=self.args.enterprises,
            seed=17,
            units=fed.providers,
            progress=False,
        )
        print(
            f"generated {self.args.enterprises:,} enterprises in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        await fed.launch()
        await wait_for_aggregation(fed.workdir / "admin.toml")
        await onboard_institution(fed, INSTITUTION, daily_quota=BENCH_DAILY_QUOTA)
        self.document = fit_demo_model(fed.data, model_id=MODEL_ID, templates=BENCH_TEMPLATES)
        self.document["on_provider_unavailable"] = "fail"
        self.document.pop("required_providers", None)
        self.info = await import_model(str(fed.workdir / "admin.toml"), self.document)
        from veil_cli.score_demo import model_fields

        self.fields = model_fields(self.document)
        print(
            f"model {MODEL_ID}: 40 features over 6 providers, {len(self.fields)} fields", flush=True
        )
        await self.enroll()

    async def enroll(self) -> None:
        import csv

        from veil.v1 import authorization_pb2 as apb
        from veil.v1 import authorization_pb2_grpc
        from veil_cli.authz_setup import enroll_enterprise
        from veil_cli.calls import call_gateway
        from veil_cli.commands.enterprise import make_grant_jws
        from veil_cli.federation import INSTITUTION

        with (self.fed.data / "labels.csv").open(newline="") as fh:
            usccs = [
                r["uscc"]
                for _, r in zip(
                    range(self.args.enterprises_enrolled), csv.DictReader(fh), strict=False
                )
            ]
        self.targets: list[tuple[str, str, str]] = []  # uscc, score grant, fetch grant
        for uscc in usccs:
            config = str(enroll_enterprise(self.fed, uscc, f"企业{uscc[-4:]}"))
            ids = []
            for uses in (["score"], ["fetch"]):
                info = await call_gateway(
                    config,
                    authorization_pb2_grpc.AuthorizationServiceStub,
                    "CreateGrant",
                    apb.CreateGrantRequest(
                        grant_jws=make_grant_jws(
                            config,
                            institution=INSTITUTION,
                            fields=self.fields,
                            uses=uses,
                            purpose=PURPOSE,
                            loan_ref=LOAN,
                            days=1,
                        )
                    ),
                )
                ids.append(info.grant_id)
            self.targets.append((uscc, ids[0], ids[1]))
        print(f"enrolled {len(self.targets)} enterprises with score and fetch grants", flush=True)

    # -- the online protocol through the gateway ------------------------------------------

    async def online(self, mode: str) -> None:
        from veil.client_auth import assertion_interceptors
        from veil.v1 import scoring_pb2 as spb
        from veil.v1 import scoring_pb2_grpc
        from veil_cli.client import load_client_config

        config = load_client_config(self.fed.workdir / "client.toml")
        async with config.gateway_channel() as channel:
            stub = scoring_pb2_grpc.ScoringServiceStub(channel)
            del assertion_interceptors

            async def one(i: int) -> None:
                uscc, grant, _ = self.targets[i % len(self.targets)]
                await stub.Score(
                    spb.ScoreRequest(
                        uscc=uscc, model_id=MODEL_ID, grant_id=grant, purpose=PURPOSE, loan_ref=LOAN
                    ),
                    timeout=30,
                )

            await sequential(10, one)  # warm-up: connections, caches, pools
            await self.fed.settle()  # the providers' new pools fill in the background
            lat = await sequential(self.args.requests, one)
            self.row(
                f"online score [{mode}], p50 / p99 one at a time",
                f"{pct(lat, 50):.1f} / {pct(lat, 99):.1f} ms",
            )
            before = self.fed.cpu_seconds()
            rate, loaded = await sustained(self.args.seconds, self.args.concurrency, one)
            self.row(
                f"online score [{mode}], throughput ({self.args.concurrency} in flight)",
                f"{rate:.1f} scores/s (p50 {pct(loaded, 50):.0f} ms, p99 {pct(loaded, 99):.0f} ms)",
            )
            self.cpu_row(f"online score [{mode}]", before, len(loaded))
            self.online_p50 = pct(lat, 50)
            self.online_rate = rate
            # Capacity: one score per call with more in flight, for as many as about two
            # seconds of work at this mode's rate (inside the provider deadline).
            capacity = max(1, min(self.args.capacity, int(rate * 2)))
            await self.fed.settle()
            full_rate, loaded = await sustained(self.args.seconds, capacity, one)
            self.row(
                f"online score [{mode}], capacity ({capacity} in flight)",
                f"{full_rate:.1f} scores/s (p50 {pct(loaded, 50):.0f} ms, "
                f"p99 {pct(loaded, 99):.0f} ms)",
            )
            many = self.args.many

            refusals: list[str] = []

            async def batch(i: int) -> None:
                requests = []
                for j in range(many):
                    uscc, grant, _ = self.targets[(i * many + j) % len(self.targets)]
                    requests.append(
                        spb.ScoreRequest(
                            uscc=uscc,
                            model_id=MODEL_ID,
                            grant_id=grant,
                            purpose=PURPOSE,
                            loan_ref=LOAN,
                        )
                    )
                answer = await stub.ScoreMany(spb.ScoreManyRequest(requests=requests), timeout=60)
                refusals.extend(
                    str(from_status_bytes(r.error))
                    for r in answer.results
                    if r.WhichOneof("outcome") != "answer"
                )

            await sequential(2, batch)
            if refusals:
                raise SystemExit(f"a benchmark score was refused: {refusals[0]}")
            await self.fed.settle()
            # Items in flight are kept to about two seconds of work at the rate this mode
            # sustains one per call, well inside the platform's 5 s provider deadline:
            # 128 at once with full randomizers (≈ 32 /s) would time out by design.
            in_flight = max(1, min(self.args.many_concurrency, int(rate * 2 / many)))
            before = self.fed.cpu_seconds()
            rate, loaded = await sustained(self.args.seconds, in_flight, batch)
            answered = len(loaded) * many - len(refusals)
            refused = f"; {len(refusals)} refused, e.g. {refusals[0]}" if refusals else ""
            self.row(
                f"online score [{mode}], ScoreMany ({many} per call, {in_flight} calls in flight)",
                f"{rate * many * answered / max(1, len(loaded) * many):.1f} scores/s "
                f"(a call's p50 {pct(loaded, 50):.0f} ms){refused}",
            )
            self.cpu_row(f"online score [{mode}], ScoreMany", before, len(loaded) * many)

    async def plaintext(self) -> None:
        from platform_node.models.demo import Template  # noqa: F401  (same model, in the clear)
        from veil.scoring.plain import plain_logit
        from veil.scoring.spec import parse_model
        from veil.values import from_record
        from veil_cli.client import load_client_config
        from veil_cli.commands.fetch import fetch_authorized

        spec = parse_model(self.document)
        client = str(self.fed.workdir / "client.toml")
        load_client_config(client)

        async def one(i: int) -> None:
            uscc, _, grant = self.targets[i % len(self.targets)]
            _, datasets = await fetch_authorized(
                client, uscc, self.fields, grant_id=grant, purpose=PURPOSE, loan_ref=LOAN
            )
            rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for ds in datasets:
                rows.setdefault(ds.source, {})[ds.dataset_id] = [from_record(r) for r in ds.records]
            spec.scale.apply(plain_logit(spec, rows))

        await sequential(5, one)
        await self.fed.settle()
        lat = await sequential(self.args.requests, one)
        self.row(
            "plaintext fan-out (FetchAuthorized + local model), p50 / p99",
            f"{pct(lat, 50):.1f} / {pct(lat, 99):.1f} ms",
        )
        before = self.fed.cpu_seconds()
        rate, loaded = await sustained(self.args.seconds, self.args.concurrency, one)
        self.row(
            f"plaintext fan-out, throughput ({self.args.concurrency} in flight)",
            f"{rate:.1f} req/s (p50 {pct(loaded, 50):.0f} ms, p99 {pct(loaded, 99):.0f} ms)",
        )
        self.cpu_row("plaintext fan-out", before, len(loaded))
        self.plain_p50, self.plain_rate = pct(lat, 50), rate

    # -- the crypto lower bound, in process --------------------------------------------------

    def crypto_floor(self) -> None:
        from fractions import Fraction  # noqa: F401

        from platform_node.models.demo import store_for
        from platform_node.scoring import install_request
        from provider_node.scoring import build_installed, protect, unprotected_partial
        from veil.catalog import load_catalog
        from veil.crypto import (
            MaskKey,
            PaillierKeys,
            RandomnessPool,
            add_many,
            ciphertext_bytes,
            full_randomizer,
            my_mask,
        )
        from veil.crypto.pool import _DJN, _SMEAR_BASES
        from veil.scoring.spec import parse_model

        spec = parse_model(dict(self.document, version=1))
        keys = PaillierKeys.load(self.fed.workdir / "keys" / "scoring-paillier.key")
        catalog = load_catalog()
        warm = RandomnessPool(keys.public, 64, short_exponent=True)
        warm.wait_ready(64, timeout=120)
        parts = {
            u: build_installed(install_request(spec, u, keys.public, warm), u, catalog)
            for u in spec.providers
        }
        stores = {u: store_for(self.fed.data, u, catalog) for u in spec.providers}
        masks = {u: MaskKey.generate() for u in spec.providers}
        uscc = self.targets[0][0]
        rows = {u: stores[u].fetch(uscc, parts[u].part.fields) for u in spec.providers}
        reps = 30

        def timed(fn: Callable[[], object]) -> float:
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1000)
            return statistics.median(samples)

        def partial_of(unit: str) -> Callable[[], object]:
            return lambda: unprotected_partial(parts[unit], rows[unit])

        per_provider = {u: timed(partial_of(u)) for u in spec.providers}
        peers = {u: masks[u].public_bytes() for u in spec.providers}
        mask_ms = timed(
            lambda: my_mask(
                masks["tax"],
                "tax",
                peers,
                request_id="r" * 32,
                context="score",
                modulus=keys.public.n,
            )
        )
        raw = unprotected_partial(parts["tax"], rows["tax"])
        protect_ms = timed(lambda: ciphertext_bytes(protect(raw, 1, warm)))
        djn = _DJN(keys.public, 256, _SMEAR_BASES)
        djn_ms = timed(djn.value)
        full_ms = statistics.median(
            [timed_once(lambda: full_randomizer(keys.public)) for _ in range(10)]
        )
        answers = [protect(unprotected_partial(parts[u], rows[u]), 1, warm) for u in spec.providers]
        decrypt_ms = timed(
            lambda: keys.decrypt_small(add_many(answers), bound_bits=TOTAL_BOUND_BITS)
        )
        warm.close()
        for s in stores.values():
            s.close()
        compute = sum(per_provider.values()) + len(spec.providers) * (mask_ms + protect_ms)
        cores = os.cpu_count() or 1
        critical = max(per_provider.values()) + mask_ms + protect_ms + decrypt_ms
        for mode, rand in (("djn", djn_ms), ("full", full_ms)):
            cpu = compute + len(spec.providers) * rand + decrypt_ms
            self.row(
                f"crypto lower bound [{mode}]: CPU per score (all parties)",
                f"{cpu:.1f} ms → ≤ {1000 * cores / cpu:.0f} scores/s on {cores} cores; "
                f"critical path (pools warm) {critical:.1f} ms",
            )
        self.row(
            "  of which",
            f"partials {', '.join(f'{u} {v:.2f}' for u, v in per_provider.items())} ms; "
            f"mask {mask_ms:.3f}; protect {protect_ms:.3f}; randomizer DJN {djn_ms:.2f} / "
            f"full {full_ms:.2f}; decrypt {decrypt_ms:.2f}",
        )

    # -- batch -----------------------------------------------------------------------------

    async def setup_batch(self) -> None:
        """``--batch-only``: the federation, a population (generated, or copied from
        ``--population``), physical aggregation and the 40-feature model — fitted on a
        small population of the same generator (fitting reads every row in Python, too
        slow for a million), no enrollment."""
        import veil_cli.commands.demo as demo_cmd
        from veil_cli.authz_setup import onboard_institution
        from veil_cli.commands.data import generate_to_dir
        from veil_cli.federation import INSTITUTION
        from veil_cli.score_demo import import_model, prepare_scoring

        fed = self.fed
        fed.prepare()
        prepare_scoring(fed, randomizer=self.args.randomizers[0])
        t0 = time.perf_counter()
        if self.args.population:
            for unit in (*fed.providers, "labels"):
                ext = ".csv" if unit == "labels" else ".db"
                shutil.copyfile(
                    Path(self.args.population) / f"{unit}{ext}", fed.data / f"{unit}{ext}"
                )
            print(f"copied the population in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            generate_to_dir(
                fed.data,
                enterprises=self.args.enterprises,
                seed=17,
                units=fed.providers,
                progress=False,
            )
            print(
                f"generated {self.args.enterprises:,} enterprises in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        small = fed.workdir / "fit-population"
        generate_to_dir(small, enterprises=5000, seed=17, units=fed.providers, progress=False)
        await fed.launch()
        demo_cmd.AGGREGATION_TIMEOUT_S = 3600.0
        t0 = time.perf_counter()
        await demo_cmd.wait_for_aggregation(fed.workdir / "admin.toml")
        print(f"physical aggregation in {time.perf_counter() - t0:.1f} s", flush=True)
        await onboard_institution(fed, INSTITUTION, daily_quota=BENCH_DAILY_QUOTA)
        self.document = fit_demo_model(small, model_id=MODEL_ID, templates=BENCH_TEMPLATES)
        self.document["on_provider_unavailable"] = "fail"
        self.document.pop("required_providers", None)
        self.info = await import_model(str(fed.workdir / "admin.toml"), self.document)

    def cpu_row(self, label: str, before: Mapping[str, float], requests: int) -> None:
        """CPU ms per request by role over a throughput run (the figure least moved by
        other load on the machine)."""
        after = self.fed.cpu_seconds()
        roles = {n.name: n.role for n in self.fed.nodes}
        spent = {r: 0.0 for r in ("gateway", "platform", "provider")}
        for name, t in after.items():
            if name in before and roles.get(name) in spent:
                spent[roles[name]] += (t - before[name]) * 1000 / max(1, requests)
        self.row(
            f"{label}, CPU ms per request: gateway / platform / all providers",
            f"{spent['gateway']:.1f} / {spent['platform']:.1f} / {spent['provider']:.1f} "
            f"(total {sum(spent.values()):.1f})",
        )

    async def batch(self) -> None:
        from veil.v1 import scoring_pb2 as spb
        from veil.v1 import scoring_pb2_grpc
        from veil_cli.calls import call_platform

        admin = str(self.fed.workdir / "admin.toml")
        cores = os.cpu_count() or 1
        for run in ("run 1", "run 2"):
            load = os.getloadavg()[0]
            cpu0, own0 = self.fed.cpu_seconds(), time.process_time()
            job = await call_platform(
                admin,
                scoring_pb2_grpc.BatchAdminStub,
                "StartBatch",
                spb.StartBatchRequest(model_id=MODEL_ID),
            )
            t0 = time.perf_counter()
            done = await follow_tolerantly(admin, job.job_id)
            wall = time.perf_counter() - t0
            assert done.state == "done", done.error
            cpu1 = self.fed.cpu_seconds()
            used = {n: cpu1[n] - cpu0.get(n, 0.0) for n in cpu1}
            total = sum(used.values()) + time.process_time() - own0
            providers = sum(v for n, v in used.items() if n not in ("platform", "gateway"))
            self.row(
                f"batch, {run} (load {load:.1f})",
                f"{done.scored:,} enterprises in {wall:.1f} s → "
                f"{done.scored / wall:,.0f} enterprises/s "
                f"({done.chunks} ciphertexts of ≤ 4096); CPU {total:.1f} s "
                f"(providers {providers:.1f}, platform {used.get('platform', 0.0):.1f}) → "
                f"{done.scored * cores / total:,.0f} enterprises/s on {cores} cores",
            )
        self.ckks_floor()

    def ckks_floor(self) -> None:
        """CKKS alone: one 4096-slot chunk through every provider's products and the sum."""
        import numpy as np
        import tenseal as ts

        from platform_node.models.demo import store_for
        from provider_node.scoring_batch import (
            BatchJob,
            _load_values,
            partial_vector,
            protect_vector,
        )
        from veil.catalog import load_catalog
        from veil.scoring.ckks import (
            FLOOD_SIGMA,
            MASK_BOUND,
            SLOTS,
            load_public_context,
            new_secret_context,
            public_context_bytes,
        )
        from veil.scoring.part import model_part
        from veil.scoring.spec import parse_model

        spec = parse_model(dict(self.document, version=1))
        ctx = new_secret_context()
        pub = load_public_context(public_context_bytes(ctx))
        catalog = load_catalog()
        import csv

        with (self.fed.data / "labels.csv").open(newline="") as fh:
            usccs = [r["uscc"] for r in csv.DictReader(fh)][:SLOTS]
        usccs = (usccs * (SLOTS // max(1, len(usccs)) + 1))[:SLOTS]
        total_ms = load_s = 0.0
        blobs = []
        for u in spec.providers:
            part = model_part(spec, u)
            weights = {
                f.spec.name: [
                    ts.ckks_vector_from(pub, ts.ckks_vector(ctx, [w] * SLOTS).serialize())
                    for w in f.weights()
                ]
                for f in spec.features_of(u)
            }
            job = BatchJob("bench", part, pub, weights, FLOOD_SIGMA, MASK_BOUND, SLOTS)
            store = store_for(self.fed.data, u, catalog)
            t0 = time.process_time()
            job.values = _load_values(store, part, catalog)
            load_s += time.process_time() - t0
            store.close()
            t0 = time.process_time()
            blobs.append(
                protect_vector(job, partial_vector(job, usccs), np.zeros(SLOTS)).serialize()
            )
            total_ms += (time.process_time() - t0) * 1000
        t0 = time.process_time()
        acc = None
        for b in blobs:
            ct = ts.ckks_vector_from(ctx, b)
            acc = ct if acc is None else acc + ct
        assert acc is not None
        acc.decrypt()
        platform_ms = (time.process_time() - t0) * 1000
        cores = os.cpu_count() or 1
        per_chunk = total_ms + platform_ms
        self.row(
            "batch, CKKS alone (features in memory)",
            f"{per_chunk:.0f} ms CPU per 4096 enterprises (providers {total_ms:.0f}, platform "
            f"{platform_ms:.0f}) → ≤ {SLOTS * 1000 * cores / per_chunk:,.0f} enterprises/s "
            f"on {cores} cores",
        )
        population = sum(1 for _ in (self.fed.data / "labels.csv").open()) - 1
        self.row(
            "batch, store read + featurization (all providers, in-process)",
            f"{load_s:.1f} s CPU for ~{population:,} enterprises "
            f"({load_s * 1e6 / max(1, population):.0f} µs CPU each)",
        )

    async def restart_providers(self, randomizer: str) -> None:
        from veil_cli.authz_setup import _update

        for node in self.fed.nodes:
            if node.role == "provider":
                proc = self.fed.processes.pop(node.name)
                proc.terminate()
                proc.wait(timeout=30)
                _update(
                    self.fed.configs / f"{node.name}.toml", "scoring", {"randomizer": randomizer}
                )
        self.fed.start(roles=("provider",))
        await self.fed.wait_healthy()


async def follow_tolerantly(admin: str, job_id: str) -> Any:
    """Poll a batch job until it ends; a poll that cannot connect (a new TLS channel per
    poll, on a machine shared at load 30+) is retried, not fatal to the measurement."""
    from veil.errors import Unavailable
    from veil.v1 import scoring_pb2 as spb
    from veil.v1 import scoring_pb2_grpc
    from veil_cli.calls import call_platform

    misses = 0
    while True:
        try:
            job = await call_platform(
                admin,
                scoring_pb2_grpc.BatchAdminStub,
                "GetBatch",
                spb.GetBatchRequest(job_id=job_id),
            )
        except Unavailable:
            misses += 1
            if misses > 20:
                raise
            await asyncio.sleep(1.0)
            continue
        if job.state != "running":
            return job
        await asyncio.sleep(0.5)


def timed_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


async def main(args: argparse.Namespace) -> None:
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="veil-scoring-bench-"))
    )
    bench = Bench(args, workdir)
    speed = probe()
    print(
        f"machine: {os.cpu_count()} cores, "
        f"{platform_module.processor() or platform_module.machine()}, "
        f"Python {platform_module.python_version()}; workdir {workdir}; speed: {speed}",
        flush=True,
    )
    try:
        if args.batch_only:
            await bench.setup_batch()
            await bench.batch()
        else:
            await online_rows(bench, args)
    finally:
        codes = bench.fed.stop()
        if not args.workdir and all(c == 0 for c in codes.values()):
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    width = max(len(n) for n, _ in bench.rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 60}")
    for name, value in bench.rows:
        print(f"{name:<{width}}  {value}")
    print(f"machine speed (bench/_speed.py) before: {speed}; after: {probe()}")


async def online_rows(bench: Bench, args: argparse.Namespace) -> None:
    """The full run: online rows, plaintext fan-out, crypto floor, then the batch rows."""
    await bench.setup()
    for i, mode in enumerate(args.randomizers):
        if i:
            await bench.restart_providers(mode)
        await bench.online(mode)
        if i == 0:
            first = (bench.online_p50, bench.online_rate)
    await bench.plaintext()
    bench.row(
        f"cost of privacy [{args.randomizers[0]}] (online / plaintext)",
        f"latency × {first[0] / bench.plain_p50:.2f}, "
        f"throughput × {first[1] / bench.plain_rate:.2f}",
    )
    bench.crypto_floor()
    if not args.no_batch:
        await bench.batch()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests, a smaller population")
    parser.add_argument("--enterprises", type=int, default=20_000)
    parser.add_argument(
        "--requests", type=int, default=200, help="sequential requests per latency row"
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="duration of each throughput row"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--capacity",
        type=int,
        default=64,
        help="scores in flight (one per call) for the capacity row",
    )
    parser.add_argument("--many", type=int, default=32, help="scores per ScoreMany call")
    parser.add_argument("--many-concurrency", type=int, default=4, help="ScoreMany calls in flight")
    parser.add_argument("--enterprises-enrolled", type=int, default=20)
    parser.add_argument("--randomizer", choices=("djn", "full", "both"), default="both")
    parser.add_argument("--no-batch", action="store_true")
    parser.add_argument(
        "--batch-only",
        action="store_true",
        help="only the batch rows (no enrollment, no online rows): large --enterprises",
    )
    parser.add_argument(
        "--population", help="--batch-only: copy this `veil data generate` output instead"
    )
    parser.add_argument("--workdir", help="keep the federation's files here")
    args = parser.parse_args(argv)
    if args.quick:
        args.enterprises, args.requests, args.seconds, args.enterprises_enrolled = 3000, 60, 8.0, 8
    args.randomizers = ["djn", "full"] if args.randomizer == "both" else [args.randomizer]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
