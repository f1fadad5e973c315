"""The deployment artifacts under ``deploy/`` agree with the product and with each other.

Every node and client configuration is loaded by the product's own loaders, with real
certificates (the environment overrides the systemd units use point ``[tls]`` at them);
the federation they describe must be coherent (the gateway calls the platform, the
platform calls exactly the providers that have configurations, on the ports they listen
on, with the right units, categories and mappings; every node has the EIA's public JWKS,
the platform its token keys, every provider a platform peer where the platform listens).
Every key file a configuration names is provisioned where it looks: installed and handed
over by the systemd unit, mounted by the compose file, mounted (and, for signing keys,
copied to mode 0600) by the Kubernetes manifests.  The production platform, a provider
and the gateway are started as real processes with the provisioned keys; an institution
is onboarded with the README's commands, an enterprise certified by the EIA grants it
access, and the institution's authorized request is answered by the provider.  Command
lines in the systemd units, the compose file, the Kubernetes manifests and
``deploy/README.md`` are parsed by the real ``veil`` subcommand parsers.  The OpenSSL
issuing script's certificates carry the identity Veil checks and pass a real mutual-TLS
health check; the compose stand-in unit schemas are loaded into PostgreSQL and read back
through their mappings.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import errno
import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy.engine import make_url

from platform_node.signing import load_platform_keys
from provider_node.settings import provider_settings
from veil.catalog import load_catalog
from veil.certs import cert_identity_uris, init_dev_pki
from veil.config import NodeConfig, TLSConfig, load_node_config
from veil.errors import InsecureKeyFile, PermissionDenied, Unauthenticated, Unavailable
from veil.server import create_server, wait_healthy
from veil.store import ProviderStore, load_mapping
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import KeySet, SigningKey, issue_enterprise_certificate
from veil.trust import load_eia_keys
from veil.uscc import is_valid_uscc
from veil.v1 import authorization_pb2, authorization_pb2_grpc, platform_pb2, platform_pb2_grpc
from veil_cli.calls import call_gateway
from veil_cli.client import ClientConfig, load_client_config
from veil_cli.commands.data import generate_to_dir
from veil_cli.commands.enterprise import make_grant_jws
from veil_cli.commands.fetch import fetch_authorized
from veil_cli.federation import free_ports
from veil_cli.main import COMMANDS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CONFIG = DEPLOY / "config"
COMPOSE = DEPLOY / "compose"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
OPENSSL_SCRIPT = DEPLOY / "pki" / "veil-openssl.sh"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CATALOG = load_catalog()
EIA_JWKS = "/etc/veil/trust/eia.jwks.json"  # where every node looks for the EIA's keys


# --------------------------------------------------------------------------- helpers


def cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``veil ARGV`` with the real parser of that subcommand.

    Only the subcommand's own module is imported (exactly what ``veil_cli.main`` adds for
    it), so a command line is judged by the code that will run it.
    """
    assert argv and argv[0] in COMMANDS, f"`veil {' '.join(argv)}`: no such subcommand"
    parser = argparse.ArgumentParser(prog="veil")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    importlib.import_module(f"veil_cli.commands.{argv[0]}").add_parser(sub)
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`veil {' '.join(argv)}` is not a valid command line") from exc


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def is_node_config(path: Path) -> bool:
    return "node" in tomllib.loads(path.read_text())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


def load_node(path: Path, pki: Path, **env: str) -> NodeConfig:
    """Load a node configuration as its daemon would, TLS pointed at real certificates.

    The ``VEIL_TLS_*`` overrides are the mechanism the systemd units use to hand over
    the key (``VEIL_TLS_KEY=%d/tls.key``); ``env`` adds further overrides.
    """
    node = tomllib.loads(path.read_text())["node"]
    paths = init_dev_pki(pki, [(node["role"], node["name"])])[node["name"]]
    tls_env = {"VEIL_TLS_CA": paths.ca, "VEIL_TLS_CERT": paths.cert, "VEIL_TLS_KEY": paths.key}
    config = load_node_config(path, environ=env | {k: str(v) for k, v in tls_env.items()})
    assert config.tls.key == paths.key and not config.tls.insecure
    return config


@dataclass(frozen=True)
class Trust:
    """What a deployment provisions besides certificates, made here as the README says:
    the EIA's public JWKS (its private key stays with the EIA: here, the test) and the
    platform's request-token key (``veil keygen``: a 0600 key file)."""

    eia: SigningKey
    eia_jwks: Path
    token_key: SigningKey
    token_key_path: Path


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Trust:
    root = tmp_path_factory.mktemp("trust")
    eia = SigningKey.generate("EdDSA")
    jwks = root / "eia.jwks.json"
    jwks.write_text(json.dumps(KeySet.of(eia).to_jwks(), indent=2))
    token_key = root / "platform-token.key"
    veil_run(["keygen", "--out", str(token_key)])
    assert stat.S_IMODE(token_key.stat().st_mode) == 0o600
    return Trust(eia, jwks, SigningKey.load(token_key), token_key)


def client_role(doc: Mapping[str, Any]) -> str:
    """The certificate role a client configuration is for."""
    if "platform" in doc:
        return "admin"
    return "enterprise" if "eia_certificate" in doc.get("identity", {}) else "institution"


def provision_identity(
    identity: Mapping[str, Any], eia: SigningKey, stem: Path, name: str = "示例企业"
) -> dict[str, str]:
    """``[identity]`` with a real signing key (one the test already made, or a fresh one,
    0600 as ``veil keygen`` makes it) and, for an enterprise, that key's certificate from
    the EIA ``eia``."""
    key_path = Path(identity["key"])
    if key_path.is_absolute() and key_path.is_file():
        key = SigningKey.load(key_path)
    else:
        key = SigningKey.generate("EdDSA")
        key_path = stem.with_name(stem.name + ".key")
        key.save(key_path)
    out = {"id": str(identity["id"]), "key": str(key_path)}
    if "eia_certificate" in identity:
        certificate = issue_enterprise_certificate(
            eia, uscc=out["id"], name=name, enterprise_jwk=key.public_jwk()
        )
        cert_path = stem.with_name(stem.name + ".eia.jwt")
        cert_path.write_text(certificate + "\n")
        out["eia_certificate"] = str(cert_path)
    return out


def client_copy(
    path: Path,
    pki: Path,
    tmp: Path,
    trust: Trust,
    *,
    addresses: Mapping[str, str] | None = None,
    identity: Mapping[str, Any] | None = None,
    eia: SigningKey | None = None,
) -> Path:
    """A copy of the client configuration ``path`` with its ``[tls]`` and ``[identity]``
    files replaced by real ones, and optionally the gateway/platform addresses (and the
    identity's id) replaced."""
    doc = tomllib.loads(path.read_text())
    name = Path(doc["tls"]["cert"]).stem
    if identity is not None:
        doc["identity"] = {**doc["identity"], **identity}
        if "eia_certificate" in doc["identity"]:
            name = doc["identity"]["id"].lower()  # an enterprise's certificate name
    paths = init_dev_pki(pki, [(client_role(doc), name)])[name]
    doc["tls"] = {"ca": str(paths.ca), "cert": str(paths.cert), "key": str(paths.key)}
    for section, address in (addresses or {}).items():
        doc[section]["address"] = address
    out = tmp / f"{uuid.uuid4().hex[:8]}-{path.name}"
    if "identity" in doc:
        doc["identity"] = provision_identity(doc["identity"], eia or trust.eia, out)
    out.write_text(tomli_w.dumps(doc))
    return out


def load_client(path: Path, pki: Path, tmp: Path, trust: Trust) -> ClientConfig:
    """Load a client configuration with its ``[tls]`` and ``[identity]`` files replaced by
    real ones, and check that it signs as the subject its certificate names."""
    client = load_client_config(client_copy(path, pki, tmp, trust))
    doc = tomllib.loads(path.read_text())
    cert_name = Path(doc["tls"]["cert"]).stem
    if client_role(doc) == "admin":  # administrators: the certificate alone
        assert client.identity is None
        return client
    # Every gateway call except GetCatalog/GetJwks carries a client assertion, bound to
    # the certificate: an institution's id is its certificate name, an enterprise's
    # certificate names its USCC in lower case.
    assert client.identity is not None, f"{path}: [identity] is required"
    assert client.gateway is not None
    assert client.identity.gateway_name == client.gateway.name
    issuer = client.identity.issuer
    if client_role(doc) == "enterprise":
        assert client.identity.eia_certificate is not None
        assert is_valid_uscc(issuer) and cert_name == issuer.lower()
    else:
        assert client.identity.eia_certificate is None
        assert not is_valid_uscc(issuer) and cert_name == issuer
    return client


def check_federation(nodes: list[NodeConfig], *, every_peer_has_config: bool) -> None:
    """One platform and one gateway; the gateway calls the platform; the platform calls
    the providers on the ports they listen on, with their units, categories, mappings."""
    roles = sorted(n.role for n in nodes)
    assert roles.count("platform") == 1 and roles.count("gateway") == 1, roles
    platform = next(n for n in nodes if n.role == "platform")
    gateway = next(n for n in nodes if n.role == "gateway")

    assert [(p.role, p.name) for p in gateway.peers] == [("platform", platform.name)]
    assert port_of(gateway.peers[0].address) == port_of(platform.listen)

    peers = {p.name: p for p in platform.peers}
    assert len(peers) == len(platform.peers), "duplicate provider peers"
    assert all(p.role == "provider" for p in platform.peers)
    providers = {n.name: n for n in nodes if n.role == "provider"}
    assert set(providers) <= set(peers), "a provider the platform does not call"
    if every_peer_has_config:
        assert set(peers) == set(providers), "a platform peer without a provider config"
    for name, config in providers.items():
        settings = provider_settings(config)
        peer = peers[name]
        assert peer.unit == settings.unit
        assert name == settings.unit.replace("_", "-")  # certificate names are DNS labels
        assert port_of(peer.address) == port_of(config.listen)
        held = {d.category_id for d in CATALOG.datasets_for_provider(settings.unit)}
        assert set(peer.categories) == held
        mapping = load_mapping(settings.mapping.removeprefix("builtin:"), CATALOG)
        assert mapping.unit == settings.unit
    for peer in peers.values():
        assert peer.unit in CATALOG.providers()
    check_authorization(nodes)


def check_authorization(nodes: list[NodeConfig]) -> None:
    """Every node has the EIA's public JWKS (one path, installed on each node); the
    platform, and only the platform, has token keys and a log key; every provider has
    ``[authorization]`` and exactly one platform peer, under the platform's name, on the
    port the platform listens on."""
    platform = next(n for n in nodes if n.role == "platform")
    for config in nodes:
        auth = config.section("authorization")
        assert auth.get("eia_jwks") == EIA_JWKS, f"{config.path}: authorization.eia_jwks"
        if config.role == "platform":
            keys = auth.get("token_keys")
            assert isinstance(keys, list) and keys, f"{config.path}: authorization.token_keys"
            assert len(set(keys)) == len(keys)
            assert all(isinstance(k, str) and Path(k).is_absolute() for k in keys)
            # Absolute: a relative path resolves next to the config file, read-only in
            # every deployment (and the log key is created on first start).
            log_key = config.section("log").get("key")
            assert isinstance(log_key, str) and Path(log_key).is_absolute()
            assert config.section("log").get("origin")
        else:
            assert "token_keys" not in auth, "only the platform signs request tokens"
        if config.role == "provider":
            platforms = [p for p in config.peers if p.role == "platform"]
            assert len(platforms) == 1 and len(config.peers) == 1, config.path
            assert platforms[0].name == platform.name
            assert port_of(platforms[0].address) == port_of(platform.listen)


def provisioned(config: NodeConfig, tmp: Path, trust: Trust) -> NodeConfig:
    """``config`` as its daemon sees it once the key files are in place: every key file
    of ``[authorization]`` replaced by a real one (the EIA's JWKS, one fresh token key
    per configured path)."""
    raw = copy.deepcopy(dict(config.raw))
    auth = raw["authorization"]
    auth["eia_jwks"] = str(trust.eia_jwks)
    if "token_keys" in auth:
        paths = []
        for i, _ in enumerate(auth["token_keys"]):
            path = tmp / f"{config.name}-token-{i}-{uuid.uuid4().hex[:6]}.key"
            SigningKey.generate("EdDSA").save(path)
            paths.append(str(path))
        auth["token_keys"] = paths
    return replace(config, raw=raw)


def check_keys_load(nodes: list[NodeConfig], tmp: Path, trust: Trust) -> None:
    """The product's own loaders accept the ``[authorization]`` of every node."""
    for config in nodes:
        view = provisioned(config, tmp, trust)
        assert load_eia_keys(view).kids == (trust.eia.kid,)
        if config.role == "platform":
            keys = load_platform_keys(view)
            assert len(keys.keyset()) == len(config.section("authorization")["token_keys"])


# --------------------------------------------------------------------------- deploy/config


def production_nodes(pki: Path) -> list[NodeConfig]:
    return [load_node(p, pki) for p in sorted(CONFIG.glob("*.toml")) if is_node_config(p)]


def test_production_configs_load_and_form_one_federation(
    pki: Path, trust: Trust, tmp_path: Path
) -> None:
    nodes = production_nodes(pki)
    assert {n.role for n in nodes} == {"provider", "platform", "gateway"}
    check_federation(nodes, every_peer_has_config=True)
    check_keys_load(nodes, tmp_path, trust)
    for config in nodes:
        assert config.listen.startswith("0.0.0.0:")
        assert config.metrics_listen is not None and config.metrics_listen.startswith("127.")


def test_production_configs_keep_secrets_out_and_use_postgresql(pki: Path) -> None:
    for config in production_nodes(pki):
        raw = tomllib.loads(config.path.read_text())
        # The files name the key where the systemd units load it from.
        assert raw["tls"] == {
            "ca": "/etc/veil/tls/ca.pem",
            "cert": f"/etc/veil/tls/{config.name}.pem",
            "key": f"/etc/veil/tls/{config.name}.key",
        }
        urls = [raw[s]["url"] for s in ("store", "ledger") if s in raw]
        assert bool(urls) == (config.role != "gateway")
        for url in urls:
            parsed = make_url(url)
            assert parsed.drivername == "postgresql+psycopg"
            assert parsed.password is None, "passwords belong in PGPASSFILE, not the config"


def test_custom_tax_mapping_resolves_next_to_its_config(pki: Path) -> None:
    config = load_node(CONFIG / "provider-tax.toml", pki)
    settings = provider_settings(config)
    assert Path(settings.mapping) == CONFIG / "mappings" / "tax.toml"
    mapping = load_mapping(settings.mapping, CATALOG)
    assert set(mapping.tables) == {d.id for d in CATALOG.datasets_for_provider("tax")}
    url = make_url(config.store_url)
    assert url.query["options"] == "-csearch_path=zsxt"


@pytest.mark.parametrize("name", ["client.toml", "enterprise.toml", "admin.toml"])
def test_client_configs_point_at_the_gateway_and_platform(
    name: str, pki: Path, trust: Trust, tmp_path: Path
) -> None:
    nodes = {n.role: n for n in production_nodes(pki)}
    client = load_client(CONFIG / name, pki, tmp_path, trust)
    assert client.gateway is not None
    assert client.gateway.name == nodes["gateway"].name
    assert port_of(client.gateway.address) == port_of(nodes["gateway"].listen)
    if name == "admin.toml":
        assert client.platform is not None
        assert client.platform.name == nodes["platform"].name
        assert client.platform.address == nodes["gateway"].peers[0].address
    else:
        assert client.platform is None


def deploy_copy(
    src: Path,
    dst: Path,
    *,
    peers: Mapping[str, str] | None = None,
    token_keys: list[str] | None = None,
) -> Path:
    """``src`` with only what the environment cannot override replaced: the addresses of
    the named peers (loopback ports here) and the platform's token key paths."""
    doc = tomllib.loads(src.read_text())
    for peer in doc.get("peers", []):
        peer["address"] = (peers or {}).get(peer["name"], peer["address"])
    if token_keys is not None:
        doc["authorization"]["token_keys"] = token_keys
    dst.write_text(tomli_w.dumps(doc))
    return dst


def wait_serving(
    proc: subprocess.Popen[bytes], port: int, client: TLSConfig, node: PeerIdentity, log: Path
) -> None:
    """Wait until the node answers a mutual-TLS health check; fail at once if it exits."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{node} exited with {proc.returncode}:\n{log.read_text()}")
        if asyncio.run(healthy(port, client, node, timeout_s=1.0)):
            return
    raise AssertionError(f"{node} not healthy within 60 s:\n{log.read_text()}")


def first_uscc(data: Path) -> str:
    with (data / "labels.csv").open(newline="") as fh:
        return str(next(csv.DictReader(fh))["uscc"])


def veil_run(argv: list[str]) -> None:
    """Run a `veil` command line in this process, with the real parser and code."""
    args = cli(argv)
    assert args.run(args) == 0, argv


def test_production_nodes_run_with_their_keys_and_serve_an_authorized_request(
    pki: Path, trust: Trust, tmp_path: Path
) -> None:
    """The production platform, social-insurance provider and gateway, as real processes
    under the real CLI, with the overrides a unit or pod sets and the key files the README
    provisions: each becomes healthy (a missing or malformed key is a start-up failure);
    the platform publishes its token key to a provider; an institution onboarded with
    the README's commands fetches, under a grant signed by an EIA-certified enterprise,
    what the provider verified and answered; an enterprise certified by another EIA is
    refused; every node exits 0 on SIGTERM well within grace_s.

    Only the peer addresses (to loopback) and the platform's ``token_keys`` are rewritten
    in copies of the files, because the environment cannot override arrays; everything
    else is the deploy file as it is."""
    data = tmp_path / "data"  # a SQLite stand-in for the social-insurance agency's database
    generate_to_dir(data, enterprises=4, seed=5, units=("social_insurance",), progress=False)
    uscc = first_uscc(data)
    names = {"platform": "platform", "gateway": "gateway", "provider": "social-insurance"}
    certs = init_dev_pki(
        pki,
        [(role, name) for role, name in names.items()]
        + [("admin", "ops-admin"), ("institution", "example-bank"), ("enterprise", uscc.lower())],
    )
    drawn = free_ports(2 * len(names))  # each node's gRPC and metrics ports, all distinct
    ports = dict(zip(names, drawn[: len(names)], strict=True))
    metrics_ports = dict(zip(names, drawn[len(names) :], strict=True))
    address = {role: f"127.0.0.1:{port}" for role, port in ports.items()}
    state = tmp_path / "state"  # systemd's StateDirectory: the log key is created here
    state.mkdir(mode=0o700)
    configs = {
        "provider": deploy_copy(
            CONFIG / "provider-social-insurance.toml",
            tmp_path / "provider-social-insurance.toml",
            peers={"platform": address["platform"]},
        ),
        "platform": deploy_copy(
            CONFIG / "platform.toml",
            tmp_path / "platform.toml",
            peers={"social-insurance": address["provider"]},
            token_keys=[str(trust.token_key_path)],
        ),
        "gateway": deploy_copy(
            CONFIG / "gateway.toml",
            tmp_path / "gateway.toml",
            peers={"platform": address["platform"]},
        ),
    }
    extra = {
        "provider": {
            "VEIL_STORE_URL": f"sqlite:///{data / 'social_insurance.db'}",
            "VEIL_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        },
        "platform": {
            "VEIL_STORE_URL": f"sqlite:///{tmp_path / 'platform.db'}",
            "VEIL_PLATFORM_AGGREGATE_INTERVAL_S": "0",
            "VEIL_LOG_KEY": str(state / "log.key"),
        },
        "gateway": {},
    }
    admin_tls = TLSConfig(
        ca=certs["ops-admin"].ca, cert=certs["ops-admin"].cert, key=certs["ops-admin"].key
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {role: tmp_path / f"{role}.log" for role in names}
    try:
        for role, name in names.items():
            env = {
                **os.environ,
                "VEIL_NODE_LISTEN": address[role],
                "VEIL_NODE_METRICS_LISTEN": f"127.0.0.1:{metrics_ports[role]}",
                "VEIL_TLS_CA": str(certs[name].ca),
                "VEIL_TLS_CERT": str(certs[name].cert),
                "VEIL_TLS_KEY": str(certs[name].key),
                "VEIL_AUTHORIZATION_EIA_JWKS": str(trust.eia_jwks),
                **extra[role],
            }
            argv = [sys.executable, "-m", "veil_cli", role, "serve", "--config", str(configs[role])]
            with logs[role].open("wb") as log:
                procs[role] = subprocess.Popen(
                    argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
        for role, name in names.items():
            wait_serving(procs[role], ports[role], admin_tls, PeerIdentity(role, name), logs[role])
        assert stat.S_IMODE((state / "log.key").stat().st_mode) == 0o600

        # The platform publishes exactly its configured token key to a provider, which
        # may read nothing else there.
        provider_tls = TLSConfig(
            ca=certs["social-insurance"].ca,
            cert=certs["social-insurance"].cert,
            key=certs["social-insurance"].key,
        )

        async def as_provider() -> tuple[str, grpc.StatusCode]:
            async with secure_channel(
                address["platform"], provider_tls, PeerIdentity("platform", "platform")
            ) as channel:
                stub = platform_pb2_grpc.PlatformServiceStub(channel)
                jwks = await stub.GetJwks(platform_pb2.GetJwksRequest(), timeout=10)
                await stub.ListRevocations(platform_pb2.ListRevocationsRequest(), timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListProviders(platform_pb2.ListProvidersRequest(), timeout=10)
                return jwks.jwks_json, refused.value.code()

        jwks_json, refused = asyncio.run(as_provider())
        assert KeySet.from_jwks(json.loads(jwks_json)).kids == (trust.token_key.kid,)
        assert refused == grpc.StatusCode.PERMISSION_DENIED

        # Client configurations from deploy/config, pointed at these nodes.
        endpoints = {"gateway": address["gateway"], "platform": address["platform"]}
        admin = str(client_copy(CONFIG / "admin.toml", pki, tmp_path, trust, addresses=endpoints))
        # The bank makes its assertion key itself (veil keygen), beside its public JWK.
        bank_key = tmp_path / "example-bank.key"
        veil_run(["keygen", "--out", str(bank_key)])
        jwk = tmp_path / "example-bank.jwk.json"
        bank = str(
            client_copy(
                CONFIG / "client.toml",
                pki,
                tmp_path,
                trust,
                addresses={"gateway": endpoints["gateway"]},
                identity={"key": str(bank_key)},
            )
        )

        def bank_grants() -> list[str]:
            answer = asyncio.run(
                call_gateway(
                    bank,
                    authorization_pb2_grpc.AuthorizationServiceStub,
                    "ListGrants",
                    authorization_pb2.ListGrantsRequest(),
                )
            )
            return [g.grant_id for g in answer.grants]

        # Onboarding, as in the README: register, assess, publish the bank's key, admit.
        # Before admission its calls are refused.
        with pytest.raises(Unauthenticated):
            bank_grants()  # unknown institution
        common = ["--config", admin]
        register = ["institution", "register", "example-bank", "--name", "Example Bank"]
        terms = ["--type", "bank", "--purpose", "loan_origination", "--daily-quota", "100"]
        veil_run([*register, *terms, *common])
        veil_run(["institution", "assess", "example-bank", "--reason", "passed", *common])
        veil_run(["institution", "add-key", "example-bank", "--jwk", str(jwk), *common])
        with pytest.raises(PermissionDenied):
            bank_grants()  # not yet active
        veil_run(["institution", "activate", "example-bank", "--reason", "admitted", *common])
        deadline = time.monotonic() + 10.0  # the gateway caches an institution's state 2 s
        while True:
            try:
                assert bank_grants() == []
                break
            except PermissionDenied:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

        # An enterprise certified by the EIA every node trusts grants the bank access,
        # and the provider answers the bank's request under that grant.
        enterprise = str(
            client_copy(
                CONFIG / "enterprise.toml",
                pki,
                tmp_path,
                trust,
                addresses={"gateway": endpoints["gateway"]},
                identity={"id": uscc},
            )
        )
        grant = make_grant_jws(
            enterprise,
            institution="example-bank",
            fields=["si_in_arrears"],
            uses=["fetch"],
            purpose="loan_origination",
            loan_ref="LOAN-DEPLOY-1",
            days=1,
        )
        info = asyncio.run(
            call_gateway(
                enterprise,
                authorization_pb2_grpc.AuthorizationServiceStub,
                "CreateGrant",
                authorization_pb2.CreateGrantRequest(grant_jws=grant),
            )
        )
        assert bank_grants() == [info.grant_id]
        response, datasets = asyncio.run(
            fetch_authorized(
                bank,
                uscc,
                ["si_in_arrears"],
                grant_id=info.grant_id,
                purpose="loan_origination",
                loan_ref="LOAN-DEPLOY-1",
            )
        )
        assert [a.provider for a in response.sealed] == ["social_insurance"]
        assert datasets

        # An enterprise whose key another "EIA" certified is refused at the gateway.
        rogue = str(
            client_copy(
                CONFIG / "enterprise.toml",
                pki,
                tmp_path,
                trust,
                addresses={"gateway": endpoints["gateway"]},
                identity={"id": uscc},
                eia=SigningKey.generate("EdDSA"),
            )
        )
        with pytest.raises(Unauthenticated):
            asyncio.run(
                call_gateway(
                    rogue,
                    authorization_pb2_grpc.AuthorizationServiceStub,
                    "ListGrants",
                    authorization_pb2.ListGrantsRequest(),
                )
            )

        grace_s = {
            r: float(tomllib.loads(configs[r].read_text())["node"]["grace_s"]) for r in names
        }
        for role in ("gateway", "platform", "provider"):
            started = time.monotonic()
            procs[role].send_signal(signal.SIGTERM)
            assert procs[role].wait(timeout=grace_s[role] + 5) == 0, logs[role].read_text()
            assert time.monotonic() - started < grace_s[role]
            assert "received SIGTERM" in logs[role].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- systemd


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file: section -> (key, value) in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def one(entries: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in entries if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text)
    assert match, text
    return float(match[1]) * (60 if match[2] == "min" else 1)


UNITS = {
    "veil-platform.service": ["platform.toml"],
    "veil-gateway.service": ["gateway.toml"],
    "veil-provider@.service": ["provider-tax.toml", "provider-social-insurance.toml"],
}


def test_every_unit_file_is_checked() -> None:
    assert sorted(p.name for p in SYSTEMD.glob("*.service")) == sorted(UNITS)


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_unit_runs_its_node_hardened(unit: str, pki: Path) -> None:
    service = parse_unit(SYSTEMD / unit)["Service"]
    for config_name in UNITS[unit]:
        config = load_node(CONFIG / config_name, pki)
        raw_tls = tomllib.loads(config.path.read_text())["tls"]

        def expand(text: str, instance: str = config.name) -> str:
            return text.replace("%i", instance)  # veil-provider@<name>.service

        argv = shlex.split(expand(one(service, "ExecStart")))
        assert argv[0].endswith("/veil")
        args = cli(argv[1:])
        assert (args.command, args.action, args.insecure) == (config.role, "serve", False)
        assert args.config == f"/etc/veil/{config_name}"

        # The key is handed over by systemd and found through the environment override.
        creds = dict(v.split(":", 1) for k, v in service if k == "LoadCredential")
        assert expand(creds["tls.key"]) == raw_tls["key"]
        assert ("Environment", "VEIL_TLS_KEY=%d/tls.key") in service
        if config.store_url:
            assert "pgpass" in creds and ("Environment", "PGPASSFILE=%d/pgpass") in service

        assert seconds(one(service, "TimeoutStopSec")) > config.grace_s

        # The EIA's JWKS is public: read where the README installs it, no credential.
        auth = config.section("authorization")
        assert auth["eia_jwks"] == EIA_JWKS and EIA_JWKS not in creds.values()
        if config.role == "platform":
            check_platform_unit_keys(service, config, creds)
    user = one(service, "User")
    assert user and user != "root"
    expected = {
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {k: one(service, k) for k in expected} == expected
    state = one(service, "StateDirectory")
    assert one(service, "ReadWritePaths") == f"/var/lib/{state}"


def token_key_copy(service: list[tuple[str, str]]) -> tuple[str, str]:
    """The platform unit's ExecStartPre: (credential glob, destination directory) of
    ``install -m 0600 %d/GLOB DEST/``, run by the service user before the node starts."""
    argv = shlex.split(one(service, "ExecStartPre"))
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    inner = shlex.split(argv[2])
    assert inner[:3] == ["install", "-m", "0600"] and len(inner) == 5
    assert inner[3].startswith("%d/")
    return inner[3].removeprefix("%d/"), inner[4].rstrip("/")


def check_platform_unit_keys(
    service: list[tuple[str, str]], config: NodeConfig, creds: dict[str, str]
) -> None:
    """Every token key the config names is a copy the unit makes, 0600, in its private
    runtime directory, of a credential loaded from /etc/veil/secrets; the log key lives
    in the state directory, the only other writable path."""
    runtime = one(service, "RuntimeDirectory")
    assert one(service, "RuntimeDirectoryMode") == "0700"
    glob, dest = token_key_copy(service)
    assert dest == f"%t/{runtime}"  # %t is /run for system services
    for key in config.section("authorization")["token_keys"]:
        path = Path(key)
        assert path.parent == Path("/run") / runtime, key
        assert fnmatch.fnmatch(path.name, glob), key
        assert creds[path.name].startswith("/etc/veil/secrets/"), key
    state = one(service, "StateDirectory")
    assert Path(config.section("log")["key"]).parent == Path(f"/var/lib/{state}")


def set_read_acl(path: Path, uid: int) -> bool:
    """Give ``uid`` read access to ``path`` through a POSIX ACL, as systemd does for a
    credential on tmpfs (``system.posix_acl_access``, version 2: user_obj r, user:uid r,
    group_obj none, mask r, other none).  False if the file system has no ACLs."""
    entries = [(0x01, 4, 0xFFFFFFFF), (0x02, 4, uid), (0x04, 0, 0xFFFFFFFF)]
    entries += [(0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise
    return True


def test_platform_unit_copies_its_token_key_past_the_key_mode_check(
    pki: Path, trust: Trust, tmp_path: Path
) -> None:
    """Run the platform unit's ExecStartPre on a credential laid out as systemd lays it
    out on tmpfs (root's 0400 plus a read ACL for the service user, which stat shows as
    0440 and Veil refuses): the copy it makes is what platform.toml names, and loads."""
    service = parse_unit(SYSTEMD / "veil-platform.service")["Service"]
    config = load_node(CONFIG / "platform.toml", pki)
    creds_dir, run_dir = tmp_path / "credentials", tmp_path / "run"
    creds_dir.mkdir()
    runtime = run_dir / one(service, "RuntimeDirectory")
    runtime.mkdir(parents=True, mode=0o700)
    credential = creds_dir / "token.key"
    shutil.copyfile(trust.token_key_path, credential)
    credential.chmod(0o400)
    if set_read_acl(credential, 10001):
        assert stat.S_IMODE(credential.stat().st_mode) == 0o440
        with pytest.raises(InsecureKeyFile):
            SigningKey.load(credential)
    command = one(service, "ExecStartPre").replace("%d", str(creds_dir))
    subprocess.run(shlex.split(command.replace("%t", str(run_dir))), check=True)
    raw = copy.deepcopy(dict(config.raw))
    raw["authorization"]["token_keys"] = [
        str(runtime / Path(k).name) for k in raw["authorization"]["token_keys"]
    ]
    keys = load_platform_keys(replace(config, raw=raw))
    assert keys.current.kid == trust.token_key.kid
    assert stat.S_IMODE((runtime / "token.key").stat().st_mode) == 0o600


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return doc


def volume_map(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to deploy/compose) of bind mounts."""
    out = {}
    for spec in service.get("volumes", []):
        host, container, *_ = spec.split(":")
        if host.startswith("."):
            out[container] = (COMPOSE / host).resolve()
    return out


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name of named (writable, persistent) volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, container, *options = spec.split(":")
        if not source.startswith((".", "/")):
            assert "ro" not in options
            out[container] = source
    return out


def probe_flags(argv: list[str]) -> dict[str, str]:
    assert argv[0] == "grpc_health_probe" and "-tls" in argv
    return dict(a.lstrip("-").split("=", 1) for a in argv[1:] if "=" in a)


def check_probe(argv: list[str], config: NodeConfig, container_tls: dict[str, str]) -> None:
    """grpc_health_probe speaks mTLS with the node's own certificate and pins its name."""
    flags = probe_flags(argv)
    assert flags["addr"] == f"127.0.0.1:{port_of(config.listen)}"
    assert flags["tls-server-name"] == PeerIdentity(config.role, config.name).dns_name
    assert flags["tls-ca-cert"] == container_tls["ca"]
    assert flags["tls-client-cert"] == container_tls["cert"]
    assert flags["tls-client-key"] == container_tls["key"]


def compose_nodes(compose: dict[str, Any], pki: Path) -> Iterator[tuple[str, Any, NodeConfig]]:
    """Each node service with its config, container paths mapped to the mounted files."""
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("veil:"):
            args = cli(service["command"])
            mounts = volume_map(service)
            host_config = mounts[args.config]
            env = {}
            mapping = tomllib.loads(host_config.read_text()).get("store", {}).get("mapping", "")
            if mapping.startswith("/"):  # a custom mapping, mounted into the container
                assert mounts[mapping].is_file()
                env["VEIL_STORE_MAPPING"] = str(mounts[mapping])
            yield name, service, load_node(host_config, pki, **env)


def test_compose_nodes_mount_their_own_config_and_certificate(
    compose: dict[str, Any], pki: Path
) -> None:
    configs = sorted((COMPOSE / "config").glob("*.toml"))
    seen = []
    for _, service, config in compose_nodes(compose, pki):
        seen.append(config.path)
        raw_tls = tomllib.loads(config.path.read_text())["tls"]
        mounts = volume_map(service)
        certs = COMPOSE / "certs"
        assert mounts[raw_tls["ca"]] == certs / "ca.pem"
        assert mounts[raw_tls["cert"]] == certs / f"{config.name}.pem"
        assert mounts[raw_tls["key"]] == certs / f"{config.name}.key"
        check_probe(service["healthcheck"]["test"][1:], config, raw_tls)
        # The EIA's public JWKS (veil eia init --dir eia), mounted read-only into every
        # node; the platform's token key (veil keygen) and a volume for its log key.
        auth = config.section("authorization")
        assert mounts[auth["eia_jwks"]] == COMPOSE / "eia" / "eia.jwks.json"
        assert f"./eia/eia.jwks.json:{auth['eia_jwks']}:ro" in service["volumes"]
        if config.role == "platform":
            assert [mounts[k] for k in auth["token_keys"]] == [
                COMPOSE / "keys" / "platform-token.key"
            ]
            volume = named_volumes(service)[str(Path(config.section("log")["key"]).parent)]
            assert volume in compose["volumes"]
        assert seconds(service["stop_grace_period"]) > config.grace_s
        assert service["stop_signal"] == "SIGTERM"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert sorted(seen) == configs


def test_compose_key_files_are_made_owned_and_never_committed(compose: dict[str, Any]) -> None:
    """Every private key a node container mounts is one the README's set-up makes
    (veil certs init, veil keygen) and hands to the image's user; the generated
    directories are ignored by git."""
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
        for line in block.splitlines()
    ]
    (chown,) = [c for c in commands if c.startswith("sudo chown 10001:10001 ")]
    owned = {COMPOSE / f for f in chown.split()[3:]}
    made = {
        COMPOSE / shlex.split(c.split(" #")[0])[3]
        for c in commands
        if c.startswith("veil keygen --out ")
    }
    assert COMPOSE / "eia" / "eia.jwks.json" not in owned  # public: no need
    assert "veil eia init --dir eia" in " ".join(commands)
    for service in compose["services"].values():
        for container, host in volume_map(service).items():
            if container.endswith(".key"):
                assert host in owned, host
                if host.parent.name == "keys":
                    assert host in made, host
    ignored = set((COMPOSE / ".gitignore").read_text().split())
    assert {"certs/", "eia/", "keys/"} <= ignored


def test_compose_federation_is_coherent(
    compose: dict[str, Any], pki: Path, trust: Trust, tmp_path: Path
) -> None:
    nodes = list(compose_nodes(compose, pki))
    check_federation([c for _, _, c in nodes], every_peer_has_config=True)
    check_keys_load([c for _, _, c in nodes], tmp_path, trust)
    service_of = {config.name: name for name, _, config in nodes}
    for _, service, config in nodes:
        for peer in config.peers:  # peers are reached by compose service name
            assert host_of(peer.address) == service_of[peer.name]
            peer_service = compose["services"][service_of[peer.name]]
            assert set(service["networks"]) & set(peer_service["networks"])
    gateway = next(s for _, s, c in nodes if c.role == "gateway")
    assert "7443:7443" in gateway["ports"]


@pytest.mark.parametrize("name", ["client.toml", "admin.toml"])
def test_compose_client_configs(
    name: str, compose: dict[str, Any], pki: Path, trust: Trust, tmp_path: Path
) -> None:
    client = load_client(COMPOSE / name, pki, tmp_path, trust)
    assert client.gateway is not None
    published = {
        s: [p.split(":")[-1] for p in svc.get("ports", [])]
        for s, svc in compose["services"].items()
    }
    assert str(port_of(client.gateway.address)) in published["gateway"]
    if client.platform is not None:
        assert str(port_of(client.platform.address)) in published["platform"]


# --------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str, namespace: str) -> dict[str, Any]:
    hits = [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"]["name"] == name
        and d["metadata"].get("namespace") == namespace
    ]
    assert len(hits) == 1, f"{kind} {namespace}/{name}"
    return hits[0]


def k8s_nodes(
    docs: list[dict[str, Any]], pki: Path, tmp: Path
) -> Iterator[tuple[dict[str, Any], NodeConfig]]:
    """Each Deployment with the node config it mounts, rebuilt from its ConfigMap."""
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        ns = deployment["metadata"]["namespace"]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        args = cli(container["args"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config_path = Path(args.config)
        vol = next(n for n, p in mounts.items() if config_path.is_relative_to(p))
        cm = find(docs, "ConfigMap", volumes[vol]["configMap"]["name"], ns)
        items = volumes[vol]["configMap"].get("items") or [
            {"key": k, "path": k} for k in cm["data"]
        ]
        root = tmp / ns / deployment["metadata"]["name"]
        for item in items:
            (root / item["path"]).parent.mkdir(parents=True, exist_ok=True)
            (root / item["path"]).write_text(cm["data"][item["key"]])
        yield deployment, load_node(root / config_path.relative_to(mounts[vol]), pki)


def test_k8s_deployments_run_their_node_safely(
    k8s: list[dict[str, Any]], pki: Path, tmp_path: Path
) -> None:
    nodes = list(k8s_nodes(k8s, pki, tmp_path))
    assert sorted(c.role for _, c in nodes) == ["gateway", "platform", "provider"]
    for deployment, config in nodes:
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["ports"][0] == {
            "name": "grpc",
            "containerPort": port_of(config.listen),
            "protocol": "TCP",
        }
        raw_tls = tomllib.loads(config.path.read_text())["tls"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            check_probe(container[kind]["exec"]["command"], config, raw_tls)
        # The TLS Secret is mounted where the config looks, group-readable only.
        tls_dir = str(Path(raw_tls["key"]).parent)
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == tls_dir)
        secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
        assert secret["defaultMode"] == 0o440
        assert {Path(raw_tls[k]).name for k in raw_tls} == {"ca.crt", "tls.crt", "tls.key"}
        check_k8s_keys(pod, container, config)

        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] > config.grace_s + float(pre_stop[1])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
        service = find(k8s, "Service", deployment["metadata"]["name"], pod_ns(deployment))
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"][0]["targetPort"] == "grpc"


def pod_ns(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["namespace"])


def mounted_volume(
    pod: dict[str, Any], container: dict[str, Any], directory: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (volumeMount, volume) a container has at ``directory``."""
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == directory]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def check_k8s_keys(pod: dict[str, Any], container: dict[str, Any], config: NodeConfig) -> None:
    """The EIA's JWKS comes from the ConfigMap veil-eia-jwks (created out of band in each
    namespace); the platform's signing keys from a Secret, copied 0600 by an init
    container, as the node's user, onto a memory volume the node mounts read-only."""
    eia = Path(config.section("authorization")["eia_jwks"])
    mount, volume = mounted_volume(pod, container, eia.parent)
    assert mount["readOnly"] is True
    assert volume["configMap"]["name"] == "veil-eia-jwks"
    assert volume["configMap"]["items"] == [{"key": eia.name, "path": eia.name}]
    if config.role != "platform":
        assert "initContainers" not in pod
        return
    keys = [Path(k) for k in config.section("authorization")["token_keys"]]
    keys.append(Path(config.section("log")["key"]))
    (directory,) = {k.parent for k in keys}
    mount, volume = mounted_volume(pod, container, directory)
    assert mount["readOnly"] is True and volume["emptyDir"]["medium"] == "Memory"
    (init,) = pod["initContainers"]
    assert init["image"] == container["image"]
    init_mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert not init_mounts[volume["name"]].get("readOnly", False)
    (source,) = [m for name, m in init_mounts.items() if name != volume["name"]]
    (secret,) = [v["secret"] for v in pod["volumes"] if v["name"] == source["name"]]
    assert secret["secretName"] == "veil-platform-keys" and secret["defaultMode"] == 0o440
    assert source["readOnly"] is True
    shell, flag, script = init["command"]
    assert (shell, flag) == ("sh", "-c")
    assert shlex.split(script) == [
        "install",
        "-m",
        "0600",
        f"{source['mountPath']}/*.key",
        f"{init_mounts[volume['name']]['mountPath']}/",
    ]
    ctx = init["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(init["resources"])


def test_k8s_federation_is_coherent(
    k8s: list[dict[str, Any]], pki: Path, trust: Trust, tmp_path: Path
) -> None:
    nodes = list(k8s_nodes(k8s, pki, tmp_path))
    # Only one provider is given as an example; the others run in other units' clusters.
    check_federation([c for _, c in nodes], every_peer_has_config=False)
    check_keys_load([c for _, c in nodes], tmp_path, trust)
    # The providers reach the platform through its LoadBalancer for providers, from the
    # units' egress addresses, which the platform's NetworkPolicy admits on that port.
    platform = next(c for _, c in nodes if c.role == "platform")
    lb = find(k8s, "Service", "veil-platform-providers", "veil")
    assert (
        lb["spec"]["selector"] == find(k8s, "Service", "veil-platform", "veil")["spec"]["selector"]
    )
    assert lb["spec"]["ports"][0]["port"] == port_of(platform.listen)
    assert lb["spec"]["ports"][0]["targetPort"] == "grpc"
    policy = find(k8s, "NetworkPolicy", "veil-platform", "veil")
    admitted = {
        source["ipBlock"]["cidr"]
        for rule in policy["spec"]["ingress"]
        if {"port": port_of(platform.listen), "protocol": "TCP"} in rule["ports"]
        for source in rule["from"]
        if "ipBlock" in source
    }
    assert set(lb["spec"]["loadBalancerSourceRanges"]) <= admitted
    gateway = next(c for _, c in nodes if c.role == "gateway")
    name, namespace, *_ = host_of(gateway.peers[0].address).split(".")
    service = find(k8s, "Service", name, namespace)
    assert service["spec"]["ports"][0]["port"] == port_of(gateway.peers[0].address)
    # The ConfigMap's mapping is the one in deploy/config (kept in one place).
    cm = find(k8s, "ConfigMap", "veil-provider-config", "veil-tax")
    assert cm["data"]["tax-mapping.toml"] == (CONFIG / "mappings" / "tax.toml").read_text()
    namespaces = {d["metadata"]["name"] for d in k8s if d["kind"] == "Namespace"}
    for doc in k8s:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] in namespaces


# --------------------------------------------------------------------------- README


def readme_commands() -> list[str]:
    """Every `veil ...` command line in the README's shell code blocks."""
    text = (DEPLOY / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("veil ") or line.startswith("sudo -u veil veil "):
                commands.append(line.removeprefix("sudo -u veil "))
    return commands


def test_readme_uses_only_real_commands_and_options() -> None:
    commands = readme_commands()
    assert len(commands) >= 5
    for line in commands:
        argv = shlex.split(line.split(" #")[0])
        cli(argv[1:])


def test_readme_references_existing_files() -> None:
    text = (DEPLOY / "README.md").read_text()
    for ref in sorted(set(re.findall(r"deploy/[\w./@-]*[\w@]", text))):
        assert (REPO / ref).exists(), ref


# --------------------------------------------------------------------------- OpenSSL PKI


def openssl_pki(tmp: Path, *args: str) -> None:
    subprocess.run(["bash", str(OPENSSL_SCRIPT), *args], cwd=tmp, check=True, capture_output=True)


@pytest.fixture(scope="module")
def openssl_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tmp = tmp_path_factory.mktemp("openssl")
    openssl_pki(tmp, "ca", "ca")
    openssl_pki(tmp, "issue", "ca", "platform", "platform")
    openssl_pki(tmp, "issue", "ca", "gateway", "gateway")
    openssl_pki(tmp, "issue", "ca", "institution", "example-bank", "bank")
    # A node that makes its own key and CSR, asking for more than it may have.
    (tmp / "tax").mkdir()
    key, csr = tmp / "tax" / "tax.key", tmp / "tax.csr"
    forged = "subjectAltName=URI:veil://admin/root,DNS:platform.platform.veil"
    for argv in (
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)],
        [
            "req",
            "-new",
            "-key",
            str(key),
            "-subj",
            "/CN=admin",
            "-addext",
            forged,
            "-out",
            str(csr),
        ],
    ):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    openssl_pki(tmp, "sign", "ca", "provider", "tax", str(csr), "tax")
    # A second, independent CA (as during a CA rotation).
    openssl_pki(tmp, "ca", "ca2")
    openssl_pki(tmp, "issue", "ca2", "gateway", "gateway", "new")
    return tmp


def eku(cert: x509.Certificate) -> set[Any]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_openssl_script_issues_the_identities_veil_checks(openssl_certs: Path) -> None:
    tmp = openssl_certs
    server_eku = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    for pem, role, name, usages in [
        (tmp / "ca" / "platform.pem", "platform", "platform", server_eku),
        (
            tmp / "bank" / "example-bank.pem",
            "institution",
            "example-bank",
            {ExtendedKeyUsageOID.CLIENT_AUTH},
        ),
        (tmp / "tax" / "tax.pem", "provider", "tax", server_eku),
    ]:
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        assert cert_identity_uris(cert) == [f"veil://{role}/{name}"]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [f"{name}.{role}.veil"]
        assert eku(cert) == usages
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in [
        tmp / "ca" / "ca.key",
        tmp / "ca" / "platform.key",
        tmp / "bank" / "example-bank.key",
    ]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    # (tax.pem above came from a CSR asking for veil://admin/root: the CA decides.)
    ca = x509.load_pem_x509_certificate((tmp / "ca" / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # A name that is not a DNS label is refused.
    bad = subprocess.run(
        ["bash", str(OPENSSL_SCRIPT), "issue", "ca", "provider", "social_insurance"],
        cwd=tmp,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "DNS label" in bad.stderr


def tls(ca: Path, node: Path) -> TLSConfig:
    return TLSConfig(ca=ca, cert=node.with_suffix(".pem"), key=node.with_suffix(".key"))


async def healthy(port: int, client: TLSConfig, expected: PeerIdentity, timeout_s: float) -> bool:
    try:
        await wait_healthy(f"127.0.0.1:{port}", client, expected, timeout_s=timeout_s)
    except Unavailable:
        return False
    return True


def test_openssl_certificates_pass_a_real_mutual_tls_health_check(openssl_certs: Path) -> None:
    tmp = openssl_certs
    ca, ca2 = tmp / "ca" / "ca.pem", tmp / "ca2" / "ca.pem"
    bundle = tmp / "bundle.pem"  # a CA rotation: trust the old and the new CA at once
    bundle.write_bytes(ca.read_bytes() + ca2.read_bytes())
    platform = PeerIdentity("platform", "platform")

    cases = [
        (ca, tls(ca, tmp / "ca" / "gateway"), True),  # same CA: accepted
        (ca, tls(ca, tmp / "tax" / "tax"), True),  # a provider may check health too
        (ca, tls(ca2, tmp / "new" / "gateway"), False),  # other CA: refused in the handshake
        (bundle, tls(bundle, tmp / "new" / "gateway"), True),  # bundle: new and old CA work
        (bundle, tls(bundle, tmp / "ca" / "gateway"), True),
    ]

    async def scenario() -> list[bool]:
        results = []
        for server_ca, client, expected in cases:
            server, port, _ = await create_server(
                "127.0.0.1:0", tls(server_ca, tmp / "ca" / "platform"), [], allowed_roles=None
            )
            try:
                # A refusal shows within a few handshakes; success is immediate.
                timeout_s = 5.0 if expected else 0.6
                results.append(await healthy(port, client, platform, timeout_s=timeout_s))
                if results[-1]:
                    # Pinning: the same server is refused under an identity it does not hold.
                    impostor = PeerIdentity("gateway", "platform")
                    assert not await healthy(port, client, impostor, timeout_s=0.6)
            finally:
                await server.stop(0)
        return results

    assert asyncio.run(scenario()) == [expected for *_, expected in cases]


# --------------------------------------------------------------------------- PostgreSQL


def unit_sql_files() -> dict[str, Path]:
    """Database name -> the stand-in schema file 00-veil.sh loads into it."""
    script = (COMPOSE / "initdb" / "00-veil.sh").read_text()
    pairs = re.findall(r"(\w+):([\w-]+\.sql)", script)
    assert pairs
    return {db: COMPOSE / "initdb" / "units" / sql for db, sql in pairs}


@pytest.mark.postgres
@pytest.mark.parametrize(
    "config_name",
    sorted(p.name for p in (COMPOSE / "config").glob("provider-*.toml")),
)
def test_compose_unit_schemas_read_through_their_mappings(config_name: str, pki: Path) -> None:
    """The stand-in tables, in their own schema selected by the URL's search_path, are
    read through the provider's mapping with the conversions applied."""
    psycopg = pytest.importorskip("psycopg")
    config = load_node(COMPOSE / "config" / config_name, pki)
    settings = provider_settings(config)
    url = make_url(config.store_url)
    sql_file = unit_sql_files()[str(url.database)]
    options = url.query["options"]
    assert isinstance(options, str) and options.startswith("-csearch_path=")
    schema = options.removeprefix("-csearch_path=")
    sql = sql_file.read_text()
    assert f"SET search_path = {schema};" in sql
    scratch = f"deploy_{uuid.uuid4().hex[:10]}"
    sql = sql.replace(f"SCHEMA IF NOT EXISTS {schema};", f"SCHEMA {scratch};")
    sql = sql.replace(f"SET search_path = {schema};", f"SET search_path = {scratch};")
    dsn = POSTGRES_URL.replace("+psycopg", "")
    try:
        admin = psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    store = None
    try:
        admin.execute(sql)
        source = settings.mapping.removeprefix("builtin:")
        if source.startswith("/etc/veil/mappings/"):  # mounted from deploy/config/mappings
            source = str(CONFIG / "mappings" / Path(source).name)
        mapping = load_mapping(source, CATALOG)
        store = ProviderStore(f"{POSTGRES_URL}?options=-csearch_path%3D{scratch}", mapping, CATALOG)
        usccs = sorted(set(re.findall(r"'(9\w{17})'", sql)))
        assert usccs
        for uscc in usccs:
            assert store.has_enterprise(uscc)
            assert store.enterprise_name(uscc)
        rows = 0
        for dataset_id in mapping.tables:  # every mapped column exists and converts
            for batch in store.iter_dataset(dataset_id):
                rows += len(batch)
        assert rows > 0
        if settings.unit == "tax":
            fields = ["tax_arrears_amount", "tax_last_normal_payment_date", "tax_grade"]
            got = store.fetch("91310115MA1K4B7C1Q", fields)
            assert got["tax_arrears"][0]["tax_arrears_amount"] == pytest.approx(12345.67)
            assert str(got["tax_payments"][0]["tax_last_normal_payment_date"]) == "2023-11-20"
            assert got["tax_credit_grade"] == [{"tax_grade": "C"}]
    finally:
        if store is not None:
            store.close()
        admin.execute(f"DROP SCHEMA IF EXISTS {scratch} CASCADE")
        admin.close()
