"""A whole local federation on loopback: certificates, data, configs, processes.

``veil demo`` and the end-to-end tests use this to run the real daemons as separate
OS processes: the platform, the gateway and one provider node per unit, each with
its own certificate, configuration file, store and log file under one work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from veil.catalog import load_catalog
from veil.certs import init_dev_pki
from veil.config import TLSConfig
from veil.errors import Unavailable
from veil.server import wait_healthy
from veil.tls import PeerIdentity
from veil_cli.audit_setup import prepare_audit
from veil_cli.authz_setup import prepare_authorization
from veil_cli.score_demo import prepare_scoring
from veil_cli.verify_setup import prepare_verification

DEMO_PROVIDERS = (
    "samr",
    "court",
    "tax",
    "social_insurance",
    "housing_fund",
    "utilities",
    "real_estate",
)
INSTITUTION = "demo-bank"
ADMIN = "platform-admin"
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
SETTLED_CORES = 0.1  # Federation.settle: the nodes together below a tenth of a core


def node_name(unit: str) -> str:
    """Certificate names are DNS labels: provider unit ``social_insurance`` runs as
    node ``social-insurance``."""
    return unit.replace("_", "-")


def unit_of(node: str) -> str:
    return node.replace("-", "_")


def free_ports(count: int, *, taken: Collection[int] = ()) -> list[int]:
    """``count`` distinct loopback ports, free now and not in ``taken``, for nodes that
    bind them a moment later (distinct: two nodes drawing the same free port would both
    be told it is free, and the second to start would fail to bind).

    Taken below the kernel's ephemeral range: a port the kernel hands out for binding
    to port 0 is one it also hands to outgoing connections, and one of those (to a
    peer node, to PostgreSQL) could take it before the node binds it."""
    low, high = _unassigned_range()
    chosen: list[int] = []
    for _ in range(200 * count):
        port = random.randint(low, high)
        if port in chosen or port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise Unavailable(f"no {count} free loopback ports between {low} and {high}")


def _unassigned_range() -> tuple[int, int]:
    """Ports the kernel does not pick for outgoing connections (Linux: below
    ``ip_local_port_range``; elsewhere the IANA registered range's upper part)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 20000, 32767
    return max(1024, first - 12000), first - 1


@dataclass(frozen=True)
class NodeSpec:
    role: str
    name: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Federation:
    workdir: Path
    providers: tuple[str, ...] = DEMO_PROVIDERS
    nodes: list[NodeSpec] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def configs(self) -> Path:
        return self.workdir / "config"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def client_tls(self, name: str) -> TLSConfig:
        return TLSConfig(
            ca=self.certs / "ca.pem",
            cert=self.certs / f"{name}.pem",
            key=self.certs / f"{name}.key",
        )

    # -- set-up -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Certificates and configuration files (data is generated separately)."""
        for d in (self.certs, self.data, self.configs, self.logs, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        *provider_ports, platform_port, gateway_port = free_ports(len(self.providers) + 2)
        self.nodes = [
            NodeSpec("provider", node_name(p), port)
            for p, port in zip(self.providers, provider_ports, strict=True)
        ]
        self.nodes.append(NodeSpec("platform", "platform", platform_port))
        self.nodes.append(NodeSpec("gateway", "gateway", gateway_port))
        init_dev_pki(
            self.certs,
            [(n.role, n.name) for n in self.nodes]
            + [("institution", INSTITUTION), ("admin", ADMIN)],
        )
        catalog = load_catalog()
        for node in self.nodes:
            doc: dict[str, object] = {
                "node": {"role": node.role, "name": node.name, "listen": node.address},
                "tls": {
                    "ca": "../certs/ca.pem",
                    "cert": f"../certs/{node.name}.pem",
                    "key": f"../certs/{node.name}.key",
                },
            }
            if node.role == "provider":
                unit = unit_of(node.name)
                doc["store"] = {"url": f"sqlite:///../data/{unit}.db", "mapping": f"builtin:{unit}"}
                doc["ledger"] = {"url": f"sqlite:///{self.data / (unit + '-ledger.db')}"}
                doc["provider"] = {"unit": unit}
            elif node.role == "platform":
                doc["store"] = {"url": "sqlite:///../data/platform.db"}
                doc["platform"] = {"aggregate_interval_s": 3600}
                doc["peers"] = [
                    {
                        "name": p.name,
                        "role": "provider",
                        "unit": unit_of(p.name),
                        "address": p.address,
                        "categories": sorted(
                            {d.category_id for d in catalog.datasets_for_provider(unit_of(p.name))}
                        ),
                    }
                    for p in self.nodes
                    if p.role == "provider"
                ]
            else:
                platform = self.node("platform")
                doc["peers"] = [
                    {"name": platform.name, "role": "platform", "address": platform.address}
                ]
            path = self.configs / f"{node.name}.toml"
            path.write_text(tomli_w.dumps(doc))
        self.write_client_config(INSTITUTION, self.workdir / "client.toml", platform=False)
        self.write_client_config(ADMIN, self.workdir / "admin.toml", platform=True)
        prepare_audit(self)  # log signing key, pinned verifier key, auditor.toml
        prepare_authorization(self, INSTITUTION)  # EIA, token key, institution key
        prepare_verification(self)  # answer keys, mask keys, Paillier key, budgets
        prepare_scoring(self)  # scoring key, [scoring] sections, the HTTP JWKS port

    def write_client_config(self, name: str, path: Path, *, platform: bool) -> None:
        gateway = self.node("gateway")
        doc: dict[str, object] = {
            "gateway": {"address": gateway.address, "name": gateway.name},
            "tls": {
                "ca": "certs/ca.pem",
                "cert": f"certs/{name}.pem",
                "key": f"certs/{name}.key",
            },
        }
        if platform:
            node = self.node("platform")
            doc["platform"] = {"address": node.address, "name": node.name}
        path.write_text(tomli_w.dumps(doc))

    # -- processes ---------------------------------------------------------------------

    async def launch(self, *, detach: bool = False) -> None:
        """Start the providers, wait until they are healthy, then the platform and gateway.

        Staged so the platform's first physical aggregation finds every provider up.
        """
        self.start(detach=detach, roles=("provider",))
        await self.wait_healthy(roles=("provider",))
        self.start(detach=detach, roles=("platform", "gateway"))
        await self.wait_healthy()

    def start(
        self, *, detach: bool = False, roles: tuple[str, ...] = ("provider", "platform", "gateway")
    ) -> None:
        """Start the nodes of ``roles`` (not yet started) as separate OS processes."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        order = sorted(self.nodes, key=lambda n: ("provider", "platform", "gateway").index(n.role))
        for node in order:
            if node.role not in roles or node.name in self.processes:
                continue
            log = (self.logs / f"{node.name}.log").open("ab")
            cmd = [
                sys.executable,
                "-m",
                "veil_cli",
                node.role,
                "serve",
                "--config",
                str(self.configs / f"{node.name}.toml"),
            ]
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
                env=env,
            )
            log.close()
            self.processes[node.name] = proc
            (self.run_dir / f"{node.name}.pid").write_text(str(proc.pid))

    async def wait_healthy(
        self, timeout_s: float = STARTUP_TIMEOUT_S, roles: tuple[str, ...] | None = None
    ) -> None:
        tls = self.client_tls(ADMIN)
        deadline = time.monotonic() + timeout_s

        async def one(node: NodeSpec) -> None:
            remaining = max(0.5, deadline - time.monotonic())
            proc = self.processes.get(node.name)
            try:
                await wait_healthy(
                    node.address, tls, PeerIdentity(node.role, node.name), timeout_s=remaining
                )
            except Exception as exc:
                exited = proc is not None and proc.poll() is not None
                why = f"exited with {proc.returncode}" if exited and proc else str(exc)
                raise Unavailable(
                    f"{node.role} {node.name} did not become healthy: {why} "
                    f"(see {self.logs / (node.name + '.log')})"
                ) from None

        await asyncio.gather(*(one(n) for n in self.nodes if roles is None or n.role in roles))

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds each running node has used so far (``/proc``)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, proc in self.processes.items():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except OSError:  # exited
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        return out

    async def settle(
        self, *, idle: float = SETTLED_CORES, interval_s: float = 0.5, limit_s: float = 20.0
    ) -> float:
        """Wait until the nodes together use less than ``idle`` of one core over two
        ``interval_s`` in a row (at most ``limit_s``); return the seconds waited.

        For measurements: a node's one-off background work (a provider builds its
        randomizer tables and fills its pool after the first check under a new key,
        about 0.65 s of CPU) must not share the cores with what is measured next."""
        started = time.monotonic()
        quiet = 0
        before = self.cpu_seconds()
        while quiet < 2 and time.monotonic() - started < limit_s:
            await asyncio.sleep(interval_s)
            after = self.cpu_seconds()
            busy = sum(after[n] - before.get(n, after[n]) for n in after) / interval_s
            quiet = quiet + 1 if busy < idle else 0
            before = after
        return time.monotonic() - started

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, int | None]:
        """SIGTERM every node (gateway first), wait, and return each exit code."""
        order = sorted(self.nodes, key=lambda n: ("gateway", "platform", "provider").index(n.role))
        for node in order:
            proc = self.processes.get(node.name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout_s
        for node in order:
            proc = self.processes.get(node.name)
            if proc is None:
                continue
            try:
                codes[node.name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[node.name] = None
            (self.run_dir / f"{node.name}.pid").unlink(missing_ok=True)
        return codes


def stop_detached(workdir: Path, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, bool]:
    """Stop a federation left running by ``veil demo --keep-running`` (pid files)."""
    run_dir = workdir / "run"
    pids: dict[str, int] = {}
    for pid_file in sorted(run_dir.glob("*.pid")) if run_dir.exists() else []:
        try:
            pids[pid_file.stem] = int(pid_file.read_text().strip())
        except ValueError:
            pid_file.unlink()
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    stopped: dict[str, bool] = {}
    deadline = time.monotonic() + timeout_s
    for name, pid in pids.items():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            stopped[name] = False
        else:
            stopped[name] = True
        (run_dir / f"{name}.pid").unlink(missing_ok=True)
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
