"""``veil score …``: scores for institutions, their verification, and batch evaluation.

Institutions (client.toml with ``[identity]``)::

    veil score enterprise USCC --model ID [--version N] --grant G --purpose P --loan-ref L
    veil score models
    veil score subscribe [--region 3201] [--industry C]
    veil score deliveries [--delivery ID] [--csv]

Anyone holding a signed score::

    veil score verify TOKEN_OR_FILE (--jwks-url URL | --config client.toml)

Administrators (admin.toml), full-coverage evaluation (全覆盖信用评价)::

    veil score batch start --model ID [--region R …] [--industry I …] [--chunk-size N] [--follow]
    veil score batch status JOB [--follow]
    veil score batch resume JOB [--follow]
    veil score batch results JOB [--offset N] [--limit N] [--csv]
    veil score batch push JOB
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from veil.errors import InvalidArgument
from veil.tokens import PURPOSES, KeySet, verify_result
from veil.v1 import gateway_pb2, gateway_pb2_grpc, scoring_pb2_grpc
from veil.v1 import scoring_pb2 as pb
from veil_cli.calls import call_gateway, call_platform
from veil_cli.client import add_config_argument
from veil_cli.render import console, kv_table


def _gateway(args: argparse.Namespace, method: str, request: Any) -> Any:
    return asyncio.run(
        call_gateway(args.config, scoring_pb2_grpc.ScoringServiceStub, method, request)
    )


def _batch(args: argparse.Namespace, method: str, request: Any) -> Any:
    return asyncio.run(call_platform(args.config, scoring_pb2_grpc.BatchAdminStub, method, request))


def run_enterprise(args: argparse.Namespace) -> int:
    answer: pb.ScoreResponse = _gateway(
        args,
        "Score",
        pb.ScoreRequest(
            uscc=args.uscc,
            model_id=args.model,
            version=args.version,
            grant_id=args.grant,
            purpose=args.purpose,
            loan_ref=args.loan_ref,
        ),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "request_id": answer.request_id,
                    "uscc": answer.uscc,
                    "model_id": answer.model_id,
                    "version": answer.version,
                    "pd": answer.pd,
                    "score": answer.score,
                    "grade": answer.grade,
                    "providers": list(answer.providers),
                    "providers_missing": list(answer.providers_missing),
                    "log_index": answer.log_index,
                    "attestation": answer.attestation,
                },
                indent=2,
            )
        )
        return 0
    console.print(
        kv_table(
            f"score of {answer.uscc} ({answer.model_id} v{answer.version})",
            {
                "PD": f"{answer.pd:.6f}",
                "score": f"{answer.score:g}",
                "grade": answer.grade,
                "providers": ", ".join(answer.providers),
                "imputed (drop-out)": ", ".join(answer.providers_missing) or "—",
                "log index": str(answer.log_index),
                "request": answer.request_id,
            },
        )
    )
    console.print("signed attestation (compact JWS):")
    print(answer.attestation)  # unwrapped, so it can be copied whole
    return 0


def run_models(args: argparse.Namespace) -> int:
    answer = _gateway(args, "ListModels", pb.ListModelsRequest())
    table = Table(title="approved models")
    for col in ("model", "version", "providers", "fields", "sha256"):
        table.add_column(col, overflow="fold")
    for m in answer.models:
        card = json.loads(m.card_json)
        fields = sorted(
            {f["field"] for fs in card["features_by_provider"].values() for f in fs}
            | {
                f["divide_by"]
                for fs in card["features_by_provider"].values()
                for f in fs
                if "divide_by" in f
            }
        )
        if args.json:  # one line per model: what an enterprise's score grant must cover
            row = {"model_id": m.model_id, "version": m.version, "sha256": m.sha256}
            print(json.dumps({**row, "fields": fields, "card": card}, ensure_ascii=False))
            continue
        table.add_row(
            m.model_id,
            str(m.version),
            ", ".join(card["providers"]),
            ",".join(fields),
            m.sha256[:16],
        )
    if not args.json:
        console.print(table)
    return 0


def _jwks(args: argparse.Namespace) -> dict[str, Any]:
    if args.jwks_url:
        from veil_cli.score_demo import fetch_jwks

        return fetch_jwks(args.jwks_url)
    if not args.config:
        raise InvalidArgument("give --jwks-url or --config")
    answer = asyncio.run(
        call_gateway(
            args.config,
            gateway_pb2_grpc.GatewayServiceStub,
            "GetJwks",
            gateway_pb2.GatewayGetJwksRequest(),
        )
    )
    data: dict[str, Any] = json.loads(answer.jwks_json)
    return data


def run_verify(args: argparse.Namespace) -> int:
    token = args.token
    if Path(token).exists():
        token = Path(token).read_text(encoding="utf-8").strip()
    claims = verify_result(token, KeySet.from_jwks(_jwks(args), label="platform"))
    print(json.dumps(claims, indent=2, ensure_ascii=False))
    return 0


def run_subscribe(args: argparse.Namespace) -> int:
    sub = _gateway(
        args,
        "Subscribe",
        pb.SubscribeRequest(region=args.region or "", industry=args.industry or ""),
    )
    console.print(
        f"subscription {sub.subscription_id}: region {sub.region or '*'}, "
        f"industry {sub.industry or '*'}"
    )
    return 0


def _rows_out(rows: list[pb.BatchResultRow], as_csv: bool, title: str) -> None:
    if as_csv:
        out = csv.writer(sys.stdout)
        out.writerow(["uscc", "pd", "score", "grade"])
        for r in rows:
            out.writerow([r.uscc, f"{r.pd:.6f}", f"{r.score:g}", r.grade])
        return
    table = Table(title=title)
    for col in ("uscc", "PD", "score", "grade"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.uscc, f"{r.pd:.6f}", f"{r.score:g}", r.grade)
    console.print(table)


def run_deliveries(args: argparse.Namespace) -> int:
    if args.delivery:
        page = _gateway(
            args,
            "GetDelivery",
            pb.GetDeliveryRequest(delivery_id=args.delivery, offset=args.offset, limit=args.limit),
        )
        _rows_out(
            list(page.rows), args.csv, f"delivery {page.delivery.delivery_id}: {page.total} rows"
        )
        return 0
    answer = _gateway(args, "ListDeliveries", pb.ListDeliveriesRequest())
    table = Table(title="deliveries")
    for col in ("delivery", "job", "rows", "at", "log index"):
        table.add_column(col)
    for d in answer.deliveries:
        table.add_row(d.delivery_id, d.job_id[:8], str(d.rows), d.created_at, str(d.log_index))
    console.print(table)
    return 0


def _follow(args: argparse.Namespace, job: pb.BatchJob) -> pb.BatchJob:
    from veil_cli.score_demo import follow_batch

    if not args.follow:
        return job
    return asyncio.run(follow_batch(args.config, job.job_id))


def _show_job(job: pb.BatchJob) -> None:
    console.print(
        kv_table(
            f"batch job {job.job_id}",
            {
                "model": f"{job.model_id} v{job.version}",
                "selection": f"regions {','.join(job.selection.regions) or '*'}; "
                f"industries {','.join(job.selection.industries) or '*'}",
                "state": job.state + (f": {job.error}" if job.error else ""),
                "progress": f"{job.scored:,}/{job.enterprises:,} enterprises, "
                f"{job.chunks_done}/{job.chunks} chunks",
                "seconds": f"{job.seconds:.1f}",
                "precision": job.precision,
                "log index": str(job.log_index),
            },
        )
    )


def run_batch(args: argparse.Namespace) -> int:
    action = args.batch_command
    if action == "start":
        job = _batch(
            args,
            "StartBatch",
            pb.StartBatchRequest(
                model_id=args.model,
                version=args.version,
                chunk_size=args.chunk_size,
                selection=pb.BatchSelection(
                    regions=args.region or [], industries=args.industry or []
                ),
            ),
        )
        _show_job(_follow(args, job))
    elif action in ("status", "resume"):
        method = "GetBatch" if action == "status" else "ResumeBatch"
        _show_job(_follow(args, _batch(args, method, pb.GetBatchRequest(job_id=args.job_id))))
    elif action == "results":
        page = _batch(
            args,
            "ListBatchResults",
            pb.ListBatchResultsRequest(job_id=args.job_id, offset=args.offset, limit=args.limit),
        )
        _rows_out(list(page.rows), args.csv, f"job {args.job_id}: {page.total} rows")
    else:
        pushed = _batch(args, "PushBatch", pb.PushBatchRequest(job_id=args.job_id))
        for d in pushed.deliveries:
            console.print(
                f"delivery {d.delivery_id} → {d.institution}: {d.rows} rows (log {d.log_index})"
            )
        if not pushed.deliveries:
            console.print("no new delivery (no matching subscription, or already pushed)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="joint-model scores, their verification, batches")
    sub = parser.add_subparsers(dest="score_command", metavar="ACTION", required=True)

    p = sub.add_parser("enterprise", help="score one enterprise under its grant (institutions)")
    p.add_argument("uscc")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0, help="default: the latest approved")
    p.add_argument("--grant", required=True, help="the enterprise's grant id (uses: score)")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument("--loan-ref", required=True)
    p.add_argument("--json", action="store_true")
    add_config_argument(p)
    p.set_defaults(run=run_enterprise)

    p = sub.add_parser("models", help="approved models and their cards (institutions)")
    p.add_argument("--json", action="store_true", help="one JSON line per model, with its card")
    add_config_argument(p)
    p.set_defaults(run=run_models)

    p = sub.add_parser("verify", help="verify a signed score against the platform's JWKS")
    p.add_argument("token", help="the compact JWS, or a file holding it")
    p.add_argument("--jwks-url", help="e.g. http://gateway:8080/.well-known/jwks.json")
    p.add_argument("--config", help="or: fetch the JWKS from the gateway over gRPC")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("subscribe", help="receive batch results for a region/industry")
    p.add_argument("--region", help="GB/T 2260 prefix, e.g. 32 or 3201")
    p.add_argument("--industry", help="GB/T 4754 section or division, e.g. C or C39")
    add_config_argument(p)
    p.set_defaults(run=run_subscribe)

    p = sub.add_parser("deliveries", help="batch results pushed to this institution")
    p.add_argument("--delivery", help="show the rows of one delivery")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--csv", action="store_true")
    add_config_argument(p)
    p.set_defaults(run=run_deliveries)

    batch = sub.add_parser("batch", help="full-coverage evaluation (administrators)")
    bsub = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)
    p = bsub.add_parser("start", help="score every enterprise of a selection")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=0)
    p.add_argument("--region", action="append", help="GB/T 2260 prefix (repeatable)")
    p.add_argument("--industry", action="append", help="GB/T 4754 prefix (repeatable)")
    p.add_argument("--chunk-size", type=int, default=0, help="default: 4096 (one ciphertext)")
    p.add_argument("--follow", action="store_true", help="show a progress bar until done")
    add_config_argument(p)
    p.set_defaults(run=run_batch)
    for action, text in (("status", "a job's progress"), ("resume", "continue a failed job")):
        p = bsub.add_parser(action, help=text)
        p.add_argument("job_id")
        p.add_argument("--follow", action="store_true")
        add_config_argument(p)
        p.set_defaults(run=run_batch)
    p = bsub.add_parser("results", help="a job's results")
    p.add_argument("job_id")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--csv", action="store_true")
    add_config_argument(p)
    p.set_defaults(run=run_batch)
    p = bsub.add_parser("push", help="deliver a finished job to matching subscriptions")
    p.add_argument("job_id")
    add_config_argument(p)
    p.set_defaults(run=run_batch)
