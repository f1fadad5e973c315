"""The platform's public keys over plain HTTP: ``GET /.well-known/jwks.json``.

Banks verify signed scores with any JOSE library, most of which fetch a JWKS from a URL
rather than over gRPC.  The gateway serves the platform's JWKS (the same document as
``GatewayService.GetJwks``) from a tiny asyncio HTTP/1.1 server — no web framework:

* ``GET`` or ``HEAD /.well-known/jwks.json`` → ``200``, ``application/jwk-set+json``,
  ``Cache-Control: public, max-age=60``; anything else → ``404``/``405``;
* the document is fetched from the platform over mTLS and cached ``CACHE_TTL_S``; if the
  platform is unreachable the last good copy is served (keys are public and rotate
  slowly), and ``503`` only when there never was one;
* one request per connection, request head ≤ 8 KiB, 5 s to send it.

Configuration (gateway node TOML)::

    [gateway]
    jwks_http_listen = "0.0.0.0:8443"   # absent: not served
    jwks_http_tls = true                # serve HTTPS with the gateway's certificate

The keys are public; what matters is their integrity.  Over plain HTTP that rests on
the network path (terminate TLS in front of it, or set ``jwks_http_tls``); the gRPC
``GetJwks`` is always over the pinned mTLS channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from veil.config import NodeConfig
from veil.errors import ConfigError, VeilError

log = logging.getLogger("veil.gateway.jwks_http")

PATH = "/.well-known/jwks.json"
CACHE_TTL_S = 10.0
MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0
CONTENT_TYPE = "application/jwk-set+json"

Fetch = Callable[[], Awaitable[str]]


class JwksCache:
    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.body: bytes | None = None
        self.at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> bytes | None:
        async with self._lock:
            if self.body is None or time.monotonic() - self.at >= CACHE_TTL_S:
                try:
                    self.body = (await self.fetch()).encode()
                    self.at = time.monotonic()
                except VeilError as exc:
                    log.warning("cannot refresh the JWKS from the platform: %s", exc.message)
        return self.body


def _response(status: str, body: bytes, *, head: bool, extra: str = "") -> bytes:
    headers = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"{extra}\r\n"
    )
    return headers.encode() + (b"" if head else body)


class JwksHttpServer:
    def __init__(self, cache: JwksCache) -> None:
        self.cache = cache
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, listen: str, tls: ssl.SSLContext | None = None) -> int:
        host, _, port = listen.rpartition(":")
        self.server = await asyncio.start_server(
            self._handle, host.strip("[]") or "0.0.0.0", int(port), ssl=tls
        )
        log.info("serving %s on %s (port %d)", PATH, listen, self.port)
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            writer.write(await self._answer(head))
            await writer.drain()
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
            with contextlib.suppress(Exception):
                writer.write(_response("400 Bad Request", b"bad request\n", head=False))
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> bytes:
        if len(head) > MAX_HEAD:
            return _response("431 Request Header Fields Too Large", b"", head=False)
        try:
            line = head.split(b"\r\n", 1)[0].decode("ascii")
            method, target, version = line.split(" ")
        except (UnicodeDecodeError, ValueError):
            return _response("400 Bad Request", b"bad request\n", head=False)
        if not version.startswith("HTTP/1."):
            return _response("505 HTTP Version Not Supported", b"", head=False)
        path = target.split("?", 1)[0]
        if path != PATH:
            return _response("404 Not Found", b"not found\n", head=method == "HEAD")
        if method not in ("GET", "HEAD"):
            return _response(
                "405 Method Not Allowed", b"", head=False, extra="Allow: GET, HEAD\r\n"
            )
        body = await self.cache.get()
        if body is None:
            return _response(
                "503 Service Unavailable", b"platform keys unavailable\n", head=method == "HEAD"
            )
        return _response(
            "200 OK",
            body,
            head=method == "HEAD",
            extra=f"Content-Type: {CONTENT_TYPE}\r\nCache-Control: public, max-age=60\r\n",
        )


async def start_jwks_http(config: NodeConfig, fetch: Fetch) -> JwksHttpServer | None:
    """Start the server if ``[gateway] jwks_http_listen`` is set; else ``None``."""
    section = config.section("gateway")
    listen = section.get("jwks_http_listen")
    if listen is None:
        return None
    if not isinstance(listen, str) or ":" not in listen:
        raise ConfigError(str(config.path), "gateway.jwks_http_listen", "must be host:port")
    use_tls = section.get("jwks_http_tls", False)
    if not isinstance(use_tls, bool):
        raise ConfigError(str(config.path), "gateway.jwks_http_tls", "must be true or false")
    context = None
    if use_tls:
        if config.tls.cert is None or config.tls.key is None:
            raise ConfigError(str(config.path), "gateway.jwks_http_tls", "needs tls.cert and key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    server = JwksHttpServer(JwksCache(fetch))
    try:
        await server.start(listen, context)
    except OSError as exc:
        raise ConfigError(
            str(config.path), "gateway.jwks_http_listen", f"cannot listen on {listen}: {exc}"
        ) from None
    return server
