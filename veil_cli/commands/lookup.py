"""``veil lookup USCC --config client.toml``: an enterprise's public credit report."""

from __future__ import annotations

import argparse
import asyncio
import json

import grpc
from google.protobuf import json_format

from veil.catalog import load_catalog
from veil.errors import from_rpc_error
from veil.v1 import gateway_pb2, gateway_pb2_grpc
from veil_cli.client import add_config_argument, load_client_config
from veil_cli.render import console, report_table

CLIENT_TIMEOUT_S = 15.0


async def lookup(config_path: str, uscc: str) -> gateway_pb2.GatewayLookupResponse:
    config = load_client_config(config_path)
    async with config.gateway_channel() as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            return await stub.LookupEnterprise(
                gateway_pb2.GatewayLookupRequest(uscc=uscc), timeout=CLIENT_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None


def run(args: argparse.Namespace) -> int:
    response = asyncio.run(lookup(args.config, args.uscc))
    if args.json:
        print(json.dumps(json_format.MessageToDict(response), ensure_ascii=False, indent=2))
    else:
        console.print(
            report_table(response.uscc, response.name, list(response.datasets), load_catalog())
        )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lookup", help="an enterprise's public credit report")
    parser.add_argument("uscc", help="unified social credit code (统一社会信用代码)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_argument(parser)
    parser.set_defaults(run=run)
