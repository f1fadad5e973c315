"""A veil server with one slow method, run as a subprocess by tests/test_server.py.

Usage: python tests/_slow_server.py <pki-dir> <node-name>

Prints ``PORT <n>`` once serving, ``STARTED`` when a Slow call begins and
``STOPPED`` from the ``on_stop`` hook; exits 0 after a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import grpc

from veil.config import TLSConfig
from veil.server import ServiceBinding, create_server, serve_until_signal

SERVICE = "veil.test.Slow"


def say(line: str) -> None:
    print(line, flush=True)


async def slow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    say("STARTED")
    await asyncio.sleep(1.0)
    return b"done:" + request


async def main(pki: Path, name: str) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Slow": grpc.unary_unary_rpc_method_handler(slow)}
    )
    tls = TLSConfig(ca=pki / "ca.pem", cert=pki / f"{name}.pem", key=pki / f"{name}.key")
    server, port, health = await create_server(
        "127.0.0.1:0",
        tls,
        [ServiceBinding(SERVICE, lambda s: s.add_generic_rpc_handlers((handler,)))],
        allowed_roles={"institution"},
    )
    say(f"PORT {port}")

    async def on_stop() -> None:
        say("STOPPED")

    await serve_until_signal(server, health, grace_s=5.0, on_stop=on_stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
