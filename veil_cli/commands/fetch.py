"""``veil fetch USCC --fields … --grant G --purpose P --loan-ref L``: authorized detail.

For institutions, under an enterprise's grant; needs ``[identity]`` in client.toml.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from google.protobuf import json_format

from veil.catalog import load_catalog
from veil.tokens import PURPOSES
from veil.v1 import gateway_pb2, gateway_pb2_grpc
from veil_cli.calls import call_gateway
from veil_cli.client import add_config_argument
from veil_cli.render import console, report_table


def run(args: argparse.Namespace) -> int:
    fields = [f for part in args.fields for f in part.split(",") if f]
    response = asyncio.run(
        call_gateway(
            args.config,
            gateway_pb2_grpc.GatewayServiceStub,
            "FetchAuthorized",
            gateway_pb2.GatewayFetchAuthorizedRequest(
                uscc=args.uscc,
                fields=fields,
                grant_id=args.grant,
                purpose=args.purpose,
                loan_ref=args.loan_ref,
            ),
        )
    )
    if args.json:
        print(json.dumps(json_format.MessageToDict(response), ensure_ascii=False, indent=2))
    else:
        console.print(
            report_table(
                response.uscc, f"grant {response.grant_id}", list(response.datasets), load_catalog()
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
