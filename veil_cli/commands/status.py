"""``veil status --config admin.toml``: providers as the platform sees them (administrators)."""

from __future__ import annotations

import argparse
import asyncio

import grpc

from veil.errors import from_rpc_error
from veil.v1 import platform_pb2, platform_pb2_grpc
from veil_cli.client import add_config_argument, load_client_config
from veil_cli.render import console, providers_table


async def list_providers(config_path: str, aggregate: bool) -> list[platform_pb2.ProviderStatus]:
    config = load_client_config(config_path)
    async with config.platform_channel() as channel:
        stub = platform_pb2_grpc.PlatformServiceStub(channel)
        try:
            if aggregate:
                done = await stub.Aggregate(platform_pb2.AggregateRequest(), timeout=600.0)
                return list(done.providers)
            answer = await stub.ListProviders(platform_pb2.ListProvidersRequest(), timeout=10.0)
            return list(answer.providers)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None


def run(args: argparse.Namespace) -> int:
    statuses = asyncio.run(list_providers(args.config, args.aggregate))
    console.print(providers_table(statuses))
    return 0 if all(s.reachable for s in statuses) else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="providers and aggregation status (admin)")
    parser.add_argument(
        "--aggregate", action="store_true", help="pull physically aggregated data now"
    )
    add_config_argument(parser)
    parser.set_defaults(run=run)
