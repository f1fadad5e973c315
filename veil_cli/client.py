"""Client configuration (``client.toml``) and channels for the client subcommands.

``veil demo --keep-running`` writes a ``client.toml``; a bank's integrator writes one
by hand.  Every client subcommand takes ``--config FILE``::

    [gateway]
    address = "127.0.0.1:7443"
    name = "gateway"            # the gateway certificate's identity: veil://gateway/<name>

    [platform]                  # only for administrators
    address = "127.0.0.1:7400"
    name = "platform"

    [tls]
    ca = "certs/ca.pem"
    cert = "certs/demo-bank.pem"
    key = "certs/demo-bank.key"

    [identity]                  # who signs the client assertions (docs/authorization.md)
    id = "demo-bank"            # institution id, or the enterprise's USCC
    key = "keys/demo-bank.key"  # signing key file (mode 0600)
    eia_certificate = "keys/….eia.jwt"   # enterprises only: the EIA's certificate of the key
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import grpc

from veil.client_auth import AssertionSigner, assertion_interceptors
from veil.config import TLSConfig, TomlReader, read_toml
from veil.errors import ConfigError
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import SigningKey


@dataclass(frozen=True)
class Endpoint:
    address: str
    name: str


@dataclass(frozen=True)
class ClientConfig:
    path: Path
    tls: TLSConfig
    gateway: Endpoint | None
    platform: Endpoint | None
    identity: AssertionSigner | None = None

    def gateway_channel(self) -> grpc.aio.Channel:
        if self.gateway is None:
            raise ConfigError(str(self.path), "gateway.address", "is required for this command")
        interceptors = assertion_interceptors(self.identity) if self.identity else []
        return secure_channel(
            self.gateway.address,
            self.tls,
            PeerIdentity("gateway", self.gateway.name),
            interceptors=interceptors,
        )

    def require_identity(self) -> AssertionSigner:
        if self.identity is None:
            raise ConfigError(str(self.path), "identity", "is required for this command")
        return self.identity

    def platform_channel(self) -> grpc.aio.Channel:
        if self.platform is None:
            raise ConfigError(str(self.path), "platform.address", "is required for this command")
        return secure_channel(
            self.platform.address, self.tls, PeerIdentity("platform", self.platform.name)
        )


def _endpoint(r: TomlReader, section: str) -> Endpoint | None:
    if section not in r.doc:
        return None
    return Endpoint(address=r.str_(f"{section}.address"), name=r.str_(f"{section}.name", section))


def load_client_config(path: str | Path) -> ClientConfig:
    path = Path(path).resolve()
    r = TomlReader(path, read_toml(path))
    insecure = r.bool_("tls.insecure", False)
    tls = TLSConfig(
        ca=r.path_("tls.ca"), cert=r.path_("tls.cert"), key=r.path_("tls.key"), insecure=insecure
    )
    if not insecure:
        for key in ("ca", "cert", "key"):
            value = getattr(tls, key)
            if value is None:
                raise r.fail(f"tls.{key}", "is required unless tls.insecure = true")
            if not value.exists():
                raise r.fail(f"tls.{key}", f"file {value} does not exist")
    gateway = _endpoint(r, "gateway")
    return ClientConfig(
        path=path,
        tls=tls,
        gateway=gateway,
        platform=_endpoint(r, "platform"),
        identity=_identity(r, gateway),
    )


def _identity(r: TomlReader, gateway: Endpoint | None) -> AssertionSigner | None:
    if "identity" not in r.doc:
        return None
    key_path = r.path_("identity.key")
    if key_path is None:
        raise r.fail("identity.key", "is required")
    if not key_path.exists():
        raise r.fail("identity.key", f"file {key_path} does not exist")
    cert_path = r.path_("identity.eia_certificate")
    certificate = None
    if cert_path is not None:
        if not cert_path.exists():
            raise r.fail("identity.eia_certificate", f"file {cert_path} does not exist")
        certificate = cert_path.read_text().strip()
    return AssertionSigner(
        key=SigningKey.load(key_path),
        issuer=r.str_("identity.id"),
        gateway_name=gateway.name if gateway else "gateway",
        eia_certificate=certificate,
    )


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="client configuration (e.g. the client.toml that `veil demo --keep-running` wrote)",
    )
