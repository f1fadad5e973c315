"""``veil verify USCC --claim JSON --grant G --purpose P --loan-ref L``: data verification.

For institutions (``[identity]`` in client.toml), under an enterprise's grant that allows
``verify`` of the fields the claim reads.  The claim is the JSON claim language of
docs/verification.md (``--claim @file.json`` reads a file).  The answer is printed with
the claim as actually verified (snapped to the published grid) and the platform-signed
result, whose signature is checked here against the gateway's JWKS.

``veil verify --batch checks.jsonl`` sends many checks in ``VerifyMany`` calls (256 per
call), e.g. a loan book's borrowers: one JSON object per line with ``uscc``, ``grant``,
``purpose``, ``loan_ref`` and ``claim`` (and optionally ``request_id``).  Each answer's
signed result is checked; each refused line is printed with its error.  The exit status
is 1 if any line was refused.

``veil verify --policy`` prints the published grid, budgets and cache lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.table import Table

from veil.call_batcher import MAX_PER_CALL
from veil.errors import InvalidArgument, VeilError, from_status_bytes
from veil.tokens import PURPOSES, KeySet, verify_result
from veil.v1 import gateway_pb2, gateway_pb2_grpc, verification_pb2_grpc
from veil.v1 import verification_pb2 as vpb
from veil_cli.calls import call_gateway
from veil_cli.client import add_config_argument
from veil_cli.render import console, kv_table

RESULT_TEXT: dict[int, str] = {
    vpb.VERIFICATION_RESULT_TRUE: "[green]TRUE[/]",
    vpb.VERIFICATION_RESULT_FALSE: "[red]FALSE[/]",
    vpb.VERIFICATION_RESULT_NO_RECORD: "[yellow]NO RECORD[/]",
}


def protocol_name(value: int) -> str:
    name = vpb.VerificationProtocol.Name(vpb.VerificationProtocol.ValueType(value))
    return name.removeprefix("VERIFICATION_PROTOCOL_").lower()


def result_text(value: int) -> str:
    return RESULT_TEXT.get(value, "?")


def read_claim(text: str) -> str:
    if text.startswith("@"):
        return Path(text[1:]).read_text(encoding="utf-8")
    return text


async def verify(
    config: str, request: vpb.VerifyRequest
) -> tuple[vpb.VerifyResponse, dict[str, Any]]:
    """Ask, then check the signed result against the gateway's published JWKS."""
    answer: vpb.VerifyResponse = await call_gateway(
        config, verification_pb2_grpc.VerificationServiceStub, "Verify", request
    )
    return answer, checked_result(answer, await published_keys(config))


async def published_keys(config: str) -> KeySet:
    jwks = await call_gateway(
        config, gateway_pb2_grpc.GatewayServiceStub, "GetJwks", gateway_pb2.GatewayGetJwksRequest()
    )
    return KeySet.from_jwks(json.loads(jwks.jwks_json))


def checked_result(answer: vpb.VerifyResponse, keys: KeySet) -> dict[str, Any]:
    """The signed result's claims, once its signature and its match to ``answer`` hold."""
    claims = verify_result(answer.signed_result, keys)
    if (
        claims.get("claims_sha256") != answer.claims_sha256
        or claims.get("log_index") != answer.log_index
        or claims.get("request_id") != answer.request_id
    ):
        raise InvalidArgument("the signed result does not match the answer it came with")
    return claims


def read_batch(path: str) -> list[vpb.VerifyRequest]:
    """``--batch`` lines as requests; a malformed line is named by its number."""
    requests = []
    keys = {"uscc", "grant", "purpose", "loan_ref", "claim"}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not keys <= set(item):
            raise InvalidArgument(f"{path}:{number}: needs {', '.join(sorted(keys))}")
        claim = item["claim"]
        requests.append(
            vpb.VerifyRequest(
                uscc=str(item["uscc"]),
                grant_id=str(item["grant"]),
                purpose=str(item["purpose"]),
                loan_ref=str(item["loan_ref"]),
                claim_json=claim if isinstance(claim, str) else json.dumps(claim),
                request_id=str(item.get("request_id", "")),
            )
        )
    if not requests:
        raise InvalidArgument(f"{path} holds no checks")
    return requests


async def verify_batch(
    config: str, requests: list[vpb.VerifyRequest]
) -> list[tuple[vpb.VerifyRequest, vpb.VerifyResponse | VeilError]]:
    """Every request through ``VerifyMany`` (``MAX_PER_CALL`` per call), each answer's
    signed result checked; each item's answer or refusal, in order."""
    keys = await published_keys(config)
    out: list[tuple[vpb.VerifyRequest, vpb.VerifyResponse | VeilError]] = []
    for start in range(0, len(requests), MAX_PER_CALL):
        chunk = requests[start : start + MAX_PER_CALL]
        answer: vpb.VerifyManyResponse = await call_gateway(
            config,
            verification_pb2_grpc.VerificationServiceStub,
            "VerifyMany",
            vpb.VerifyManyRequest(requests=chunk),
        )
        for request, result in zip(chunk, answer.results, strict=True):
            if result.WhichOneof("outcome") == "answer":
                checked_result(result.answer, keys)
                out.append((request, result.answer))
            else:
                out.append((request, from_status_bytes(result.error)))
    return out


def print_batch(
    outcomes: list[tuple[vpb.VerifyRequest, vpb.VerifyResponse | VeilError]], as_json: bool
) -> None:
    if as_json:
        for request, outcome in outcomes:
            if isinstance(outcome, VeilError):
                line = {"uscc": request.uscc, "error": outcome.code.name, "message": str(outcome)}
            else:
                line = json_format.MessageToDict(outcome)
            print(json.dumps(line, ensure_ascii=False))
        return
    table = Table(title=f"{len(outcomes)} checks (signed results checked)")
    for column in ("enterprise", "answer", "protocol", "log index / error"):
        table.add_column(column)
    for request, outcome in outcomes:
        if isinstance(outcome, VeilError):
            table.add_row(request.uscc, "[red]refused[/]", "", f"{outcome.code.name}: {outcome}")
        else:
            table.add_row(
                outcome.uscc,
                result_text(outcome.result),
                protocol_name(outcome.protocol),
                str(outcome.log_index),
            )
    console.print(table)


def run(args: argparse.Namespace) -> int:
    if args.policy:
        policy = asyncio.run(
            call_gateway(
                args.config,
                verification_pb2_grpc.VerificationServiceStub,
                "GetVerificationPolicy",
                vpb.GetVerificationPolicyRequest(),
            )
        )
        print(json.dumps(json_format.MessageToDict(policy), ensure_ascii=False, indent=2))
        return 0
    if args.batch:
        outcomes = asyncio.run(verify_batch(args.config, read_batch(args.batch)))
        print_batch(outcomes, args.json)
        return 1 if any(isinstance(o, VeilError) for _, o in outcomes) else 0
    if not (args.uscc and args.claim and args.grant and args.purpose and args.loan_ref):
        raise InvalidArgument("verify needs USCC, --claim, --grant, --purpose and --loan-ref")
    request = vpb.VerifyRequest(
        uscc=args.uscc,
        claim_json=read_claim(args.claim),
        grant_id=args.grant,
        purpose=args.purpose,
        loan_ref=args.loan_ref,
    )
    answer, claims = asyncio.run(verify(args.config, request))
    if args.json:
        out = json_format.MessageToDict(answer)
        out["signed_result_claims"] = claims
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    console.print(
        kv_table(
            f"Verification of {answer.uscc}",
            {
                "answer": result_text(answer.result),
                "claim as verified": answer.claim_json,
                "protocol": protocol_name(answer.protocol),
                "providers": ", ".join(answer.providers),
                "from cache": "yes (no budget spent)" if answer.cached else "no",
                "request": answer.request_id,
                "log index": str(answer.log_index),
                "signed result": "signature checked with the gateway's JWKS",
                "claims_sha256": answer.claims_sha256,
            },
        )
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="verify a declared fact (数据核验)")
    parser.add_argument("uscc", nargs="?")
    parser.add_argument("--claim", help="the claim, JSON (or @file.json)")
    parser.add_argument("--grant", help="the grant id the enterprise gave you")
    parser.add_argument("--purpose", choices=PURPOSES)
    parser.add_argument("--loan-ref")
    parser.add_argument(
        "--batch", metavar="FILE", help="many checks, one JSON object per line (VerifyMany)"
    )
    parser.add_argument("--policy", action="store_true", help="print the published policy")
    parser.add_argument("--json", action="store_true")
    add_config_argument(parser)
    parser.set_defaults(run=run)
