"""Development PKI and mutual TLS, against real gRPC servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from veil.certs import NodePaths, init_dev_pki, issue_node_cert
from veil.config import TLSConfig
from veil.errors import InvalidArgument
from veil.tls import PeerIdentity, peer_identity, secure_channel, server_credentials

T = TypeVar("T")
SERVICE = "veil.test.Whoami"
METHOD = f"/{SERVICE}/Get"

NODES = [
    ("gateway", "gw1"),
    ("provider", "prov1"),
    ("institution", "bank1"),
    ("auditor", "aud1"),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def tls_of(p: NodePaths) -> TLSConfig:
    return TLSConfig(ca=p.ca, cert=p.cert, key=p.key)


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodePaths]:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), NODES)


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodePaths]:
    """Same names and roles, independent CA."""
    return init_dev_pki(tmp_path_factory.mktemp("rogue"), NODES, ca_name="Rogue CA")


# --------------------------------------------------------------------------- PKI


def test_files_and_permissions(pki: dict[str, NodePaths]) -> None:
    ca_dir = pki["gw1"].ca.parent
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    for paths in pki.values():
        assert paths.ca == ca_dir / "ca.pem"
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.cert.stat().st_mode) == 0o644
        assert b"PRIVATE KEY" in paths.key.read_bytes()
    assert not list(ca_dir.glob("*.tmp")), "atomic writes leave no temporary files"


def test_server_leaf_contents(pki: dict[str, NodePaths]) -> None:
    ca = load(pki["gw1"].ca)
    cert = load(pki["gw1"].cert)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["veil://gateway/gw1"]
    assert san.get_values_for_type(x509.DNSName) == ["gw1.gateway.veil", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=824) < lifetime <= dt.timedelta(days=826)


def test_client_leaf_is_client_only(pki: dict[str, NodePaths]) -> None:
    cert = load(pki["bank1"].cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["veil://institution/bank1"]
    assert san.get_values_for_type(x509.DNSName) == ["bank1.institution.veil"]
    assert san.get_values_for_type(x509.IPAddress) == []
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_idempotent_and_issue_more(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path, [("platform", "plat1")])
    ca_before = first["plat1"].ca.read_bytes()
    leaf_before = first["plat1"].cert.read_bytes()
    again = init_dev_pki(tmp_path, [("platform", "plat1"), ("enterprise", "acme")])
    assert again["plat1"].ca.read_bytes() == ca_before, "existing CA is reused"
    assert again["plat1"].cert.read_bytes() == leaf_before, "valid leaf is kept"
    added = issue_node_cert(tmp_path, "admin", "ops")
    assert stat.S_IMODE(added.key.stat().st_mode) == 0o600
    ca = load(added.ca)
    for paths in (again["acme"], added):
        load(paths.cert).verify_directly_issued_by(ca)
    # A leaf for a different identity under the same file name is replaced.
    replaced = init_dev_pki(tmp_path, [("gateway", "ops")])
    uri = load(replaced["ops"].cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert uri.value.get_values_for_type(x509.UniformResourceIdentifier) == ["veil://gateway/ops"]


def test_near_expiry_leaf_is_reissued(tmp_path: Path) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=820)
    old = init_dev_pki(tmp_path, [("provider", "p1")], now=long_ago)["p1"].cert.read_bytes()
    new = init_dev_pki(tmp_path, [("provider", "p1")])["p1"].cert.read_bytes()
    assert old != new


def test_independent_ca(pki: dict[str, NodePaths], rogue: dict[str, NodePaths]) -> None:
    assert pki["gw1"].ca.read_bytes() != rogue["gw1"].ca.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - cryptography raises InvalidSignature/ValueError
        load(rogue["bank1"].cert).verify_directly_issued_by(load(pki["gw1"].ca))


@pytest.mark.parametrize(
    "role,name",
    [("root", "x"), ("gateway", "Upper"), ("gateway", "-x"), ("gateway", "a.b"), ("admin", "")],
)
def test_bad_identities_rejected(tmp_path: Path, role: str, name: str) -> None:
    with pytest.raises(InvalidArgument):
        init_dev_pki(tmp_path, [(role, name)])


def test_same_name_two_roles_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="acme"):
        init_dev_pki(tmp_path, [("enterprise", "acme"), ("provider", "acme")])


def test_issue_without_ca(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no CA"):
        issue_node_cert(tmp_path, "admin", "ops")


def test_peer_identity_uri() -> None:
    peer = PeerIdentity.from_uri("veil://gateway/gw1")
    assert peer == PeerIdentity("gateway", "gw1")
    assert peer.dns_name == "gw1.gateway.veil"
    assert peer.uri == str(peer) == "veil://gateway/gw1"
    for bad in (
        "https://gateway/gw1",
        "veil://gateway",
        "veil://gateway/",
        "veil:///x",
        "veil://a/b/c",
    ):
        with pytest.raises(InvalidArgument):
            PeerIdentity.from_uri(bad)


# --------------------------------------------------------------------------- mTLS


async def _whoami_server(tls: TLSConfig) -> tuple[grpc.aio.Server, int]:
    """A bare grpc.aio server (no veil interceptors) reporting the client's identity."""

    async def get(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        peer = peer_identity(context)
        return (peer.uri if peer else "-").encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Get": grpc.unary_unary_rpc_method_handler(get)}
            ),
        )
    )
    if tls.insecure:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await server.start()
    return server, port


async def _call(port: int, tls: TLSConfig, expected: PeerIdentity) -> bytes:
    async with secure_channel(f"127.0.0.1:{port}", tls, expected) as channel:
        reply: bytes = await channel.unary_unary(METHOD, None, None)(b"", timeout=5)
        return reply


def test_mutual_tls_identity(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        server, port = await _whoami_server(tls_of(pki["gw1"]))
        try:
            gw = PeerIdentity("gateway", "gw1")
            assert await _call(port, tls_of(pki["bank1"]), gw) == b"veil://institution/bank1"
            # A server's certificate works as a client certificate too (clientAuth EKU).
            assert await _call(port, tls_of(pki["prov1"]), gw) == b"veil://provider/prov1"
        finally:
            await server.stop(None)

    run(main())


def test_client_from_other_ca_refused_in_handshake(
    pki: dict[str, NodePaths], rogue: dict[str, NodePaths], capfd: pytest.CaptureFixture[str]
) -> None:
    """The rogue client trusts our CA (so only *our* check can fail) but has a rogue cert."""
    rogue_client = TLSConfig(ca=pki["gw1"].ca, cert=rogue["bank1"].cert, key=rogue["bank1"].key)

    async def main() -> None:
        server, port = await _whoami_server(tls_of(pki["gw1"]))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(port, rogue_client, PeerIdentity("gateway", "gw1"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    run(main())
    # gRPC core (not Python logging) reports the failed handshake on stderr, at its
    # INFO level ("I... ssl_transport_security.cc] Handshake failed ... CERTIFICATE_
    # VERIFY_FAILED"), which GRPC_VERBOSITY=ERROR/NONE silences.
    if os.environ.get("GRPC_VERBOSITY", "").upper() not in ("ERROR", "NONE"):
        assert "Handshake failed" in capfd.readouterr().err


def test_client_refuses_server_from_other_ca(
    pki: dict[str, NodePaths], rogue: dict[str, NodePaths]
) -> None:
    async def main() -> None:
        server, port = await _whoami_server(tls_of(rogue["gw1"]))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(port, tls_of(pki["bank1"]), PeerIdentity("gateway", "gw1"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    run(main())


@pytest.mark.parametrize(
    "expected",
    [
        PeerIdentity("gateway", "gw2"),
        PeerIdentity("provider", "gw1"),
        PeerIdentity("gateway", "prov1"),
    ],
)
def test_client_refuses_server_with_other_identity(
    pki: dict[str, NodePaths], expected: PeerIdentity
) -> None:
    """Same CA, but the server is gateway/gw1, not ``expected``: target name mismatch."""

    async def main() -> None:
        server, port = await _whoami_server(tls_of(pki["gw1"]))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(port, tls_of(pki["bank1"]), expected)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await server.stop(None)

    run(main())


def test_insecure_mode_warns_and_has_no_identity(caplog: pytest.LogCaptureFixture) -> None:
    import veil.tls

    veil.tls._insecure_warned = False
    insecure = TLSConfig(insecure=True)

    async def main() -> bytes:
        server, port = await _whoami_server(insecure)
        try:
            return await _call(port, insecure, PeerIdentity("gateway", "gw1"))
        finally:
            await server.stop(None)

    with caplog.at_level("WARNING", logger="veil.tls"):
        assert run(main()) == b"-"
    assert any("TLS IS DISABLED" in r.getMessage() for r in caplog.records)
