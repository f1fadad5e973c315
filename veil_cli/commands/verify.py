"""``veil verify USCC --claim JSON --grant G --purpose P --loan-ref L``: data verification.

For institutions (``[identity]`` in client.toml), under an enterprise's grant that allows
``verify`` of the fields the claim reads.  The claim is the JSON claim language of
docs/verification.md (``--claim @file.json`` reads a file).  The answer is printed with
the claim as actually verified (snapped to the published grid) and the platform-signed
result, whose signature is checked here against the gateway's JWKS.

``veil verify --policy`` prints the published grid, budgets and cache lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from veil.errors import InvalidArgument
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
    jwks = await call_gateway(
        config, gateway_pb2_grpc.GatewayServiceStub, "GetJwks", gateway_pb2.GatewayGetJwksRequest()
    )
    claims = verify_result(answer.signed_result, KeySet.from_jwks(json.loads(jwks.jwks_json)))
    if (
        claims.get("claims_sha256") != answer.claims_sha256
        or claims.get("log_index") != answer.log_index
    ):
        raise InvalidArgument("the signed result does not match the answer it came with")
    return answer, claims


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
    parser.add_argument("--policy", action="store_true", help="print the published policy")
    parser.add_argument("--json", action="store_true")
    add_config_argument(parser)
    parser.set_defaults(run=run)
