"""Joint-model scoring in a local federation: set-up, and the ``veil demo`` scoring session.

:func:`prepare_scoring` runs inside :meth:`Federation.prepare` and adds:

* to the platform: ``[scoring]`` with its own Paillier key (2048 bits, generated here so
  the node starts at once; separate from the verification key) and the CKKS batch key
  file (created on the first batch job);
* to every provider: ``[scoring]`` (``randomizer``, default ``full``) and ``[masks]``;
* to the gateway: ``[gateway] jwks_http_listen`` on a free loopback port, for
  ``GET /.well-known/jwks.json``.

:func:`scoring_session` is what ``veil demo`` shows after the authorization and audit
parts: the platform imports and approves the demo model (fitted on the generated data),
the enterprise grants the bank a score, the bank scores it and verifies the signed
score with the JWKS fetched over HTTP, and a small full-coverage batch runs with a
progress bar and is pushed to the bank's subscription.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from veil.crypto import PaillierKeys
from veil.errors import from_rpc_error
from veil.tokens import KeySet, verify_result
from veil.v1 import scoring_pb2 as spb
from veil.v1 import scoring_pb2_grpc
from veil_cli.authz_setup import KEYS, _update
from veil_cli.calls import DEFAULT_TIMEOUT_S, call_gateway, call_platform
from veil_cli.client import load_client_config
from veil_cli.render import console, kv_table

SCORING_KEY = "scoring-paillier.key"
CKKS_KEY = "batch-ckks.key"
PAILLIER_BITS = 2048
SCORE_PURPOSE = "loan_origination"
SCORE_LOAN = "LOAN-2026-SCORE-001"
BATCH_POLL_S = 0.3
BATCH_TIMEOUT_S = 600.0
BATCH_OUTAGE_S = 60.0
"""How long a follow waits for a platform that stopped answering (a restart resumes jobs)."""


def prepare_scoring(
    fed: Any,
    *,
    randomizer: str | None = None,
    platform: Mapping[str, Any] | None = None,
) -> None:
    keys = fed.workdir / KEYS
    keys.mkdir(exist_ok=True)
    key_path = keys / SCORING_KEY
    if not key_path.exists():
        PaillierKeys.generate(PAILLIER_BITS).save(key_path)
    from veil_cli.federation import free_ports

    for node in fed.nodes:
        config = fed.configs / f"{node.name}.toml"
        if node.role == "provider":
            _update(config, "masks", {})  # keep a key path set elsewhere; else the default
            _update(config, "scoring", {"randomizer": randomizer} if randomizer else {})
        elif node.role == "platform":
            values: dict[str, Any] = {
                "paillier_key": f"../{KEYS}/{SCORING_KEY}",
                "paillier_bits": PAILLIER_BITS,
                "ckks_key": f"../{KEYS}/{CKKS_KEY}",
            }
            values.update(platform or {})
            _update(config, "scoring", values)
        elif node.role == "gateway":
            # not a port the federation's nodes will bind (they are not listening yet,
            # so the kernel may hand one of theirs out again)
            (port,) = free_ports(1, taken={n.port for n in fed.nodes})
            _update(config, "gateway", {"jwks_http_listen": f"127.0.0.1:{port}"})


def jwks_url(fed: Any) -> str:
    doc = tomllib.loads((fed.configs / "gateway.toml").read_text(encoding="utf-8"))
    return f"http://{doc['gateway']['jwks_http_listen']}/.well-known/jwks.json"


def fetch_jwks(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


# --- admin and institution calls ----------------------------------------------------------


async def import_model(
    admin_config: str, document: Mapping[str, Any], *, approve: bool = True
) -> spb.ModelInfo:
    info: spb.ModelInfo = await call_platform(
        admin_config,
        scoring_pb2_grpc.ModelAdminStub,
        "ImportModel",
        spb.ImportModelRequest(document_json=json.dumps(document), approve=approve),
        timeout_s=60.0,
    )
    return info


async def score(
    client_config: str,
    uscc: str,
    model_id: str,
    grant_id: str,
    *,
    version: int = 0,
    purpose: str = SCORE_PURPOSE,
    loan_ref: str = SCORE_LOAN,
) -> spb.ScoreResponse:
    answer: spb.ScoreResponse = await call_gateway(
        client_config,
        scoring_pb2_grpc.ScoringServiceStub,
        "Score",
        spb.ScoreRequest(
            uscc=uscc,
            model_id=model_id,
            version=version,
            grant_id=grant_id,
            purpose=purpose,
            loan_ref=loan_ref,
        ),
    )
    return answer


async def follow_batch(
    admin_config: str,
    job_id: str,
    *,
    show: bool = True,
    outage_s: float = BATCH_OUTAGE_S,
) -> spb.BatchJob:
    """Poll a job until it is no longer running, with a progress bar.

    One channel serves every poll. A platform that does not answer (restarting after a
    crash: jobs resume) is polled again for up to ``outage_s`` seconds since its last
    answer before the follow gives up with UNAVAILABLE; any other error ends it at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BATCH_TIMEOUT_S
    columns = (
        TextColumn("[bold]batch[/] {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} enterprises"),
        TimeElapsedColumn(),
    )
    config = load_client_config(admin_config)
    async with config.platform_channel() as channel:
        stub = scoring_pb2_grpc.BatchAdminStub(channel)
        last_answer = loop.time()
        with Progress(*columns, console=console, disable=not show, transient=False) as progress:
            task = progress.add_task(job_id[:8], total=0)
            while True:
                try:
                    job: spb.BatchJob = await stub.GetBatch(
                        spb.GetBatchRequest(job_id=job_id), timeout=DEFAULT_TIMEOUT_S
                    )
                except grpc.aio.AioRpcError as err:
                    transient = err.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    )
                    if not transient or loop.time() - last_answer > outage_s:
                        raise from_rpc_error(err) from None
                    await asyncio.sleep(BATCH_POLL_S)
                    continue
                last_answer = loop.time()
                progress.update(task, total=job.enterprises, completed=job.scored)
                if job.state != "running" or loop.time() > deadline:
                    return job
                await asyncio.sleep(BATCH_POLL_S)


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


async def scoring_session(fed: Any, uscc: str, name: str, institution: str) -> None:
    """The scoring part of ``veil demo``."""
    from platform_node.models.demo import fit_demo_model
    from veil.v1 import authorization_pb2 as apb
    from veil.v1 import authorization_pb2_grpc
    from veil_cli.authz_setup import enroll_enterprise
    from veil_cli.commands.enterprise import make_grant_jws

    admin = str(fed.workdir / "admin.toml")
    client = str(fed.workdir / "client.toml")

    step("Scoring 1. The platform imports and approves a credit model (registry, model card)")
    document = await asyncio.to_thread(fit_demo_model, fed.data)
    info = await import_model(admin, document)
    card = json.loads(info.card_json)
    console.print(
        kv_table(
            f"model {info.model_id} v{info.version} ({info.state})",
            {
                "features by provider": ", ".join(
                    f"{p}: {len(fs)}" for p, fs in card["features_by_provider"].items()
                ),
                "training window": f"{card['training_window']['start']} … "
                f"{card['training_window']['end']}",
                "in-sample AUC / KS": f"{card['metrics']['auc_in_sample']:.3f} / "
                f"{card['metrics']['ks_in_sample']:.3f}",
                "approved": f"{card['approved']['by']} at {card['approved']['at']}",
                "provider drop-out": f"{card['on_provider_unavailable']} "
                f"(never without {', '.join(card['required_providers'])})",
                "sha256": info.sha256,
            },
        )
    )
    console.print(
        "each provider received only its features' definitions and their weights "
        "encrypted under the platform's 2048-bit Paillier key"
    )

    step(f"Scoring 2. Enterprise {uscc} grants the bank a score over the model's fields")
    path = fed.workdir / f"enterprise-{uscc}.toml"
    enterprise = str(path if path.exists() else enroll_enterprise(fed, uscc, name))
    fields = sorted({f["field"] for f in document["features"]} | _ratio_fields(document))
    grant = await call_gateway(
        enterprise,
        authorization_pb2_grpc.AuthorizationServiceStub,
        "CreateGrant",
        apb.CreateGrantRequest(
            grant_jws=make_grant_jws(
                enterprise,
                institution=institution,
                fields=fields,
                uses=["score"],
                purpose=SCORE_PURPOSE,
                loan_ref=SCORE_LOAN,
                days=30,
            )
        ),
    )
    console.print(f"grant {grant.grant_id}: use score, {len(fields)} fields, {SCORE_PURPOSE}")

    step("Scoring 3. The bank scores the enterprise (encrypted partial scores, secure sum)")
    t0 = asyncio.get_running_loop().time()
    answer = await score(client, uscc, info.model_id, grant.grant_id)
    ms = (asyncio.get_running_loop().time() - t0) * 1000
    console.print(
        kv_table(
            f"score of {uscc} ({ms:.0f} ms)",
            {
                "PD": f"{answer.pd:.6f}",
                "score": f"{answer.score:.0f}",
                "grade": answer.grade,
                "providers summed": ", ".join(answer.providers),
                "log index": str(answer.log_index),
            },
        )
    )

    step("Scoring 4. The bank verifies the signed score with the JWKS over HTTP")
    url = jwks_url(fed)
    jwks = await asyncio.to_thread(fetch_jwks, url)
    claims = verify_result(answer.attestation, KeySet.from_jwks(jwks, label="platform"))
    console.print(
        f"{url}: {len(jwks['keys'])} key(s); signature valid; claims: model "
        f"{claims['model_id']}@{claims['model_version']}, PD {claims['result']['pd']}, "
        f"grade {claims['result']['grade']}, grant {claims['grant_id'][:8]}…, "
        f"log index {claims['log_index']}"
    )

    step("Scoring 5. Full-coverage evaluation (全覆盖信用评价): a CKKS batch, pushed to the bank")
    await call_gateway(
        client,
        scoring_pb2_grpc.ScoringServiceStub,
        "Subscribe",
        spb.SubscribeRequest(region=uscc[2:4], industry=""),
    )
    job = await call_platform(
        admin,
        scoring_pb2_grpc.BatchAdminStub,
        "StartBatch",
        spb.StartBatchRequest(
            model_id=info.model_id, selection=spb.BatchSelection(regions=[uscc[2:4]])
        ),
    )
    done = await follow_batch(admin, job.job_id)
    page = await call_platform(
        admin,
        scoring_pb2_grpc.BatchAdminStub,
        "ListBatchResults",
        spb.ListBatchResultsRequest(job_id=job.job_id, limit=10_000),
    )
    grades = Counter(r.grade for r in page.rows)
    console.print(
        f"job {done.job_id[:8]} {done.state}: {done.scored:,} enterprises of region "
        f"{uscc[2:4]} in {done.seconds:.1f} s ({done.precision}); grades: "
        + ", ".join(f"{g} {n}" for g, n in sorted(grades.items()))
    )
    pushed = await call_platform(
        admin,
        scoring_pb2_grpc.BatchAdminStub,
        "PushBatch",
        spb.PushBatchRequest(job_id=job.job_id),
    )
    inbox = await call_gateway(
        client, scoring_pb2_grpc.ScoringServiceStub, "ListDeliveries", spb.ListDeliveriesRequest()
    )
    console.print(
        f"pushed {len(pushed.deliveries)} delivery(ies); the bank's inbox holds "
        f"{sum(d.rows for d in inbox.deliveries):,} scored enterprises"
    )


def _ratio_fields(document: Mapping[str, Any]) -> set[str]:
    return {f["divide_by"] for f in document["features"] if f.get("divide_by")}


def model_fields(document: Mapping[str, Any]) -> list[str]:
    """Every field a grant must cover to score with ``document``."""
    return sorted({f["field"] for f in document["features"]} | _ratio_fields(document))


def write_model(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
