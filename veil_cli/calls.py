"""One call to the gateway or the platform from a client configuration, errors mapped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from veil.errors import from_rpc_error
from veil_cli.client import load_client_config

DEFAULT_TIMEOUT_S = 15.0


async def call_gateway(
    config_path: str,
    stub_class: Callable[[grpc.aio.Channel], Any],
    method: str,
    request: Any,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    config = load_client_config(config_path)
    async with config.gateway_channel() as channel:
        try:
            return await getattr(stub_class(channel), method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None


async def call_platform(
    config_path: str,
    stub_class: Callable[[grpc.aio.Channel], Any],
    method: str,
    request: Any,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    config = load_client_config(config_path)
    async with config.platform_channel() as channel:
        try:
            return await getattr(stub_class(channel), method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
