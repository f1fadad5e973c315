"""Mutual TLS for every Veil connection, and the peer identity it proves.

Both directions are authenticated by the one deployment CA (:mod:`veil.certs`):

* servers require a client certificate from the CA (``require_client_auth=True``),
  so an unknown client fails in the TLS handshake before any RPC runs;
* clients pin the server's identity by setting ``grpc.ssl_target_name_override`` to
  ``<name>.<role>.veil``; gRPC's hostname check then refuses a server whose
  certificate does not carry that DNS name, even when it is signed by the same CA.

After the handshake the server reads the client's identity from the call's
``auth_context()``.  gRPC puts the verified leaf certificate there as
``x509_pem_cert`` (alongside pre-parsed ``x509_subject_alternative_name``,
``peer_uri``, ``peer_dns`` …); we parse the PEM with ``cryptography`` and take the
single ``veil://role/name`` URI SAN, so the identity comes from the same code that
issued it, not from gRPC's string flattening of the SAN list.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from veil.certs import cert_identity_uris
from veil.certs import dns_name as _dns_name
from veil.config import TLSConfig
from veil.errors import ConfigError, InvalidArgument

log = logging.getLogger(__name__)

_SCHEME = "veil://"
_insecure_warned = False

ChannelOptions = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class PeerIdentity:
    """A node or client identity, ``veil://<role>/<name>``."""

    role: str
    name: str

    @classmethod
    def from_uri(cls, uri: str) -> PeerIdentity:
        if not uri.startswith(_SCHEME):
            raise InvalidArgument(f"not a veil identity URI: {uri!r}")
        role, sep, name = uri[len(_SCHEME) :].partition("/")
        if not sep or not role or not name or "/" in name:
            raise InvalidArgument(f"identity URI must be veil://<role>/<name>, got {uri!r}")
        return cls(role, name)

    @property
    def uri(self) -> str:
        return f"{_SCHEME}{self.role}/{self.name}"

    @property
    def dns_name(self) -> str:
        """The DNS SAN a server with this identity carries (what clients pin)."""
        return _dns_name(self.role, self.name)

    def __str__(self) -> str:
        return self.uri


def warn_insecure(what: str) -> None:
    """Log, once per process, that TLS is switched off.

    ``tls.insecure`` means no encryption, no authentication and no role checks: any
    process that can reach the port can call every method.  It exists for debugging.
    """
    global _insecure_warned
    if _insecure_warned:
        return
    _insecure_warned = True
    log.warning(
        "!!! TLS IS DISABLED (%s): traffic is unencrypted and peers are NOT authenticated; "
        "role checks are off. Use tls.insecure only for local debugging. !!!",
        what,
    )


def _read(tls: TLSConfig, key: str) -> bytes:
    path: Path | None = getattr(tls, key)
    if path is None:
        raise ConfigError("<tls>", f"tls.{key}", "is required unless tls.insecure = true")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"tls.{key}", f"cannot read ({exc.strerror})") from None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """Server-side mTLS: present our certificate, demand one signed by the CA."""
    return grpc.ssl_server_credentials(
        [(_read(tls, "key"), _read(tls, "cert"))],
        root_certificates=_read(tls, "ca"),
        require_client_auth=True,
    )


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """Client-side mTLS: trust only the CA, present our own certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls, "ca"),
        private_key=_read(tls, "key"),
        certificate_chain=_read(tls, "cert"),
    )


# Peers restart (deployments, the demo's staged start): reconnect within seconds rather
# than gRPC's default backoff of up to two minutes.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def secure_channel(
    address: str,
    tls: TLSConfig,
    expected: PeerIdentity,
    options: ChannelOptions = (),
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """Open a channel to ``address`` that only talks to a server proving ``expected``.

    ``grpc.ssl_target_name_override`` makes gRPC check the server certificate for the
    DNS SAN ``expected.dns_name`` (and use it as the authority), so pointing a
    gateway at the wrong host — or at a node of the wrong role — fails the handshake
    with UNAVAILABLE instead of leaking a query to it.
    """
    given = {key for key, _ in options}
    options = [*options, *(o for o in RECONNECT_OPTIONS if o[0] not in given)]
    if tls.insecure:
        warn_insecure(f"client channel to {expected} at {address}")
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
    opts = [*options, ("grpc.ssl_target_name_override", expected.dns_name)]
    return grpc.aio.secure_channel(
        address, channel_credentials(tls), options=opts, interceptors=interceptors
    )


@functools.lru_cache(maxsize=512)
def _identity_from_pem(pem: bytes) -> PeerIdentity | None:
    """Identity of a verified certificate; ``None`` unless it has exactly one veil URI."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    uris = cert_identity_uris(cert)
    if len(uris) != 1:
        return None
    try:
        return PeerIdentity.from_uri(uris[0])
    except InvalidArgument:
        return None


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> PeerIdentity | None:
    """The authenticated client's identity, or ``None`` (no TLS / no veil identity).

    Only meaningful on a server with :func:`server_credentials`: the certificate in
    the auth context has then been verified against the CA during the handshake.
    """
    auth = context.auth_context() or {}
    pems = list(auth.get("x509_pem_cert", ()))
    if len(pems) != 1:
        return None
    return _identity_from_pem(bytes(pems[0]))
