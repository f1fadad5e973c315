"""``veil catalog``: the information-sharing catalog, from the package or a live gateway."""

from __future__ import annotations

import argparse
import asyncio
import json

import grpc
from google.protobuf import json_format
from rich.table import Table

from veil.catalog import load_catalog
from veil.errors import from_rpc_error
from veil.v1 import gateway_pb2, gateway_pb2_grpc
from veil_cli.client import load_client_config
from veil_cli.render import console


async def fetch(config_path: str) -> gateway_pb2.GetCatalogResponse:
    config = load_client_config(config_path)
    async with config.gateway_channel() as channel:
        try:
            return await gateway_pb2_grpc.GatewayServiceStub(channel).GetCatalog(
                gateway_pb2.GetCatalogRequest(), timeout=5.0
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None


def run(args: argparse.Namespace) -> int:
    if args.config:
        response = asyncio.run(fetch(args.config))
        if args.json:
            print(json.dumps(json_format.MessageToDict(response), ensure_ascii=False, indent=2))
            return 0
    catalog = load_catalog()
    if args.json:
        from gateway.catalog_view import catalog_response

        print(
            json.dumps(
                json_format.MessageToDict(catalog_response(catalog)), ensure_ascii=False, indent=2
            )
        )
        return 0
    table = Table(title="信用信息共享清单 (information-sharing catalog)")
    for col in ("#", "dataset", "name", "provider", "mode", "auth", "fields"):
        table.add_column(col)
    for ds in catalog.datasets:
        cat = catalog.category(ds.category_id)
        table.add_row(
            str(cat.number),
            ds.id,
            ds.name_zh,
            ds.provider,
            ds.mode.value,
            "yes" if ds.authorization else "no",
            str(len(ds.fields)),
        )
    console.print(table)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("catalog", help="show the information-sharing catalog")
    parser.add_argument("--config", help="ask a live gateway (client.toml) instead of the package")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)
