"""The deployment artifacts under ``deploy/`` agree with the product and with each other.

Every node and client configuration is loaded by the product's own loaders, with real
certificates (the environment overrides the systemd units use point ``[tls]`` at them);
the federation they describe must be coherent (the gateway calls the platform, the
platform calls exactly the providers that have configurations, on the ports they listen
on, with the right units, categories and mappings).  Command lines in the systemd units,
the compose file, the Kubernetes manifests and ``deploy/README.md`` are parsed by the
real ``veil`` subcommand parsers.  The OpenSSL issuing script's certificates carry the
identity Veil checks and pass a real mutual-TLS health check; the compose stand-in unit
schemas are loaded into PostgreSQL and read back through their mappings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy.engine import make_url

from provider_node.settings import provider_settings
from veil.catalog import load_catalog
from veil.certs import cert_identity_uris, init_dev_pki
from veil.config import NodeConfig, TLSConfig, load_node_config
from veil.errors import Unavailable
from veil.server import create_server, wait_healthy
from veil.store import ProviderStore, load_mapping
from veil.tls import PeerIdentity
from veil_cli.client import ClientConfig, load_client_config
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def load_client(path: Path, pki: Path, tmp: Path) -> ClientConfig:
    """Load a client configuration with its ``[tls]`` files replaced by real ones."""
    doc = tomllib.loads(path.read_text())
    name = Path(doc["tls"]["cert"]).stem
    role = "admin" if "platform" in doc else "institution"
    paths = init_dev_pki(pki, [(role, name)])[name]
    doc["tls"] = {"ca": str(paths.ca), "cert": str(paths.cert), "key": str(paths.key)}
    copy = tmp / path.name
    copy.write_text(tomli_w.dumps(doc))
    return load_client_config(copy)


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


# --------------------------------------------------------------------------- deploy/config


def production_nodes(pki: Path) -> list[NodeConfig]:
    return [load_node(p, pki) for p in sorted(CONFIG.glob("*.toml")) if is_node_config(p)]


def test_production_configs_load_and_form_one_federation(pki: Path) -> None:
    nodes = production_nodes(pki)
    assert {n.role for n in nodes} == {"provider", "platform", "gateway"}
    check_federation(nodes, every_peer_has_config=True)
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


@pytest.mark.parametrize("name", ["client.toml", "admin.toml"])
def test_client_configs_point_at_the_gateway_and_platform(
    name: str, pki: Path, tmp_path: Path
) -> None:
    nodes = {n.role: n for n in production_nodes(pki)}
    client = load_client(CONFIG / name, pki, tmp_path)
    assert client.gateway is not None
    assert client.gateway.name == nodes["gateway"].name
    assert port_of(client.gateway.address) == port_of(nodes["gateway"].listen)
    if name == "admin.toml":
        assert client.platform is not None
        assert client.platform.name == nodes["platform"].name
        assert client.platform.address == nodes["gateway"].peers[0].address
    else:
        assert client.platform is None


def test_production_gateway_runs_under_the_real_cli_and_stops_on_sigterm(
    pki: Path, tmp_path: Path
) -> None:
    """`veil gateway serve --config deploy/config/gateway.toml`, with the overrides a
    unit or pod would set, becomes healthy and exits 0 on SIGTERM well within grace_s
    (the gateway needs no database, and the platform need not be up)."""
    config = load_node(CONFIG / "gateway.toml", pki)
    paths = init_dev_pki(pki, [("gateway", "gateway"), ("admin", "ops-admin")])
    port = free_port()
    env = {
        **os.environ,
        "VEIL_NODE_LISTEN": f"127.0.0.1:{port}",
        "VEIL_NODE_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "VEIL_TLS_CA": str(paths["gateway"].ca),
        "VEIL_TLS_CERT": str(paths["gateway"].cert),
        "VEIL_TLS_KEY": str(paths["gateway"].key),
    }
    argv = [sys.executable, "-m", "veil_cli", "gateway", "serve", "--config", str(config.path)]
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = TLSConfig(
            ca=paths["ops-admin"].ca, cert=paths["ops-admin"].cert, key=paths["ops-admin"].key
        )
        gateway = PeerIdentity("gateway", "gateway")
        assert asyncio.run(healthy(port, admin, gateway, timeout_s=60.0)), (
            tmp_path / "gateway.log"
        ).read_text()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=config.grace_s + 5) == 0
        assert time.monotonic() - started < config.grace_s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "received SIGTERM" in (tmp_path / "gateway.log").read_text()


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
        assert seconds(service["stop_grace_period"]) > config.grace_s
        assert service["stop_signal"] == "SIGTERM"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert sorted(seen) == configs


def test_compose_federation_is_coherent(compose: dict[str, Any], pki: Path) -> None:
    nodes = list(compose_nodes(compose, pki))
    check_federation([c for _, _, c in nodes], every_peer_has_config=True)
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
    name: str, compose: dict[str, Any], pki: Path, tmp_path: Path
) -> None:
    client = load_client(COMPOSE / name, pki, tmp_path)
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


def test_k8s_federation_is_coherent(k8s: list[dict[str, Any]], pki: Path, tmp_path: Path) -> None:
    nodes = list(k8s_nodes(k8s, pki, tmp_path))
    # Only one provider is given as an example; the others run in other units' clusters.
    check_federation([c for _, c in nodes], every_peer_has_config=False)
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
