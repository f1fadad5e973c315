"""``veil fetch USCC --fields … --grant G --purpose P --loan-ref L``: authorized detail.

For institutions, under an enterprise's grant; needs ``[identity]`` in client.toml.  The
request carries a one-time X25519 key and every provider seals its answer to it, so the
values are opened here and nowhere on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence

from google.protobuf import json_format

from veil.catalog import load_catalog
from veil.sealed import OneTimeKey, open_answers
from veil.tokens import PURPOSES
from veil.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from veil_cli.calls import call_gateway
from veil_cli.client import add_config_argument
from veil_cli.render import console, report_table


async def fetch_authorized(
    config: str,
    uscc: str,
    fields: Sequence[str],
    *,
    grant_id: str,
    purpose: str,
    loan_ref: str,
) -> tuple[gateway_pb2.GatewayFetchAuthorizedResponse, list[common_pb2.DatasetRecords]]:
    """Ask with a one-time key; open each provider's sealed answer locally."""
    key = OneTimeKey()
    response: gateway_pb2.GatewayFetchAuthorizedResponse = await call_gateway(
        config,
        gateway_pb2_grpc.GatewayServiceStub,
        "FetchAuthorized",
        gateway_pb2.GatewayFetchAuthorizedRequest(
            uscc=uscc,
            fields=list(fields),
            grant_id=grant_id,
            purpose=purpose,
            loan_ref=loan_ref,
            recipient_public_key=key.public_bytes,
        ),
    )
    datasets = open_answers(key, response.sealed, request_id=response.request_id, uscc=uscc)
    return response, datasets


def run(args: argparse.Namespace) -> int:
    fields = [f for part in args.fields for f in part.split(",") if f]
    response, datasets = asyncio.run(
        fetch_authorized(
            args.config,
            args.uscc,
            fields,
            grant_id=args.grant,
            purpose=args.purpose,
            loan_ref=args.loan_ref,
        )
    )
    if args.json:
        out = common_pb2.SealedRecords(datasets=datasets)
        print(json.dumps(json_format.MessageToDict(out), ensure_ascii=False, indent=2))
        return 0
    console.print(
        report_table(
            response.uscc,
            f"grant {response.grant_id}",
            datasets,
            load_catalog(),
            kind="Authorized detail",
        )
    )
    console.print(f"request {response.request_id}, log index {response.log_index}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fetch", help="authorized detail under an enterprise grant")
    parser.add_argument("uscc")
    parser.add_argument("--fields", action="append", required=True, help="catalog field ids")
    parser.add_argument("--grant", required=True, help="the grant id the enterprise gave you")
    parser.add_argument("--purpose", required=True, choices=PURPOSES)
    parser.add_argument("--loan-ref", required=True)
    parser.add_argument("--json", action="store_true")
    add_config_argument(parser)
    parser.set_defaults(run=run)
