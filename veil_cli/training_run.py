"""Joint training from files: one real OS process per feature party, mTLS on loopback.

``veil train`` uses :class:`TrainingRun` to

1. make a throw-away development PKI in the work directory (a CA, the label party's
   certificate ``veil://platform/platform`` and one ``veil://provider/<node>`` per
   feature party), so every link is mutually authenticated TLS exactly as in a
   deployment;
2. start each feature party as its own process
   (``python -m veil_cli.training_run party …``), which reads **only its own CSV** and
   serves ``veil.v1.TrainingService`` to role ``platform`` only;
3. run the label party (:class:`platform_node.training.LabelParty`) in the calling
   process, which reads only the labels CSV;
4. stop every process, whatever happened.

State (certificates, checkpoints, logs) lives in the work directory, so a job that
failed — e.g. a party that disconnected — can be resumed from its last completed epoch
with the same command plus ``--resume --work-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.certs import init_dev_pki
from veil.config import TLSConfig
from veil.errors import InvalidArgument, Unavailable, VeilError
from veil.server import create_server, serve_until_signal, wait_healthy
from veil.tls import PeerIdentity
from veil.training.config import JobConfig
from veil.training.table import read_party_csv

log = logging.getLogger(__name__)

LABEL_NODE = "platform"
STARTUP_TIMEOUT_S = 900.0  # reading a wide CSV can take minutes; an exit is seen at once
STOP_TIMEOUT_S = 15.0
REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_ERROR = "veil-training-party: "


def node_name(party: str) -> str:
    """Certificate names are DNS labels: party ``social_insurance`` runs as
    ``social-insurance``."""
    return party.replace("_", "-").lower()


@dataclass
class PartySpec:
    """A feature party: its CSV, or (federation training) its node configuration, whose
    store it reads, and its feature definitions."""

    name: str
    csv: Path | None = None
    store_config: Path | None = None
    features: Path | None = None

    @property
    def node(self) -> str:
        return node_name(self.name)


@dataclass
class TrainingRun:
    workdir: Path
    parties: Sequence[PartySpec]
    id_column: str
    uscc: bool = False
    workers: int = 2
    certs_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.certs_dir or self.workdir / "certs"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def tls(self, node: str) -> TLSConfig:
        return TLSConfig(
            ca=self.certs / "ca.pem",
            cert=self.certs / f"{node}.pem",
            key=self.certs / f"{node}.key",
        )

    def state_dir(self, node: str) -> Path:
        return self.workdir / "state" / node

    def address(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def prepare(self) -> None:
        nodes = [p.node for p in self.parties]
        if len(set(nodes)) != len(nodes) or LABEL_NODE in nodes:
            raise InvalidArgument("party names must be distinct and not 'platform'")
        for d in (self.certs, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        init_dev_pki(
            self.certs,
            [("platform", LABEL_NODE)] + [("provider", n) for n in nodes],
            ca_name="Veil training run CA (development, throw-away)",
        )

    def start(self) -> None:
        """Start every feature party's process (each picks its port; we read it back)."""
        from veil_cli.federation import free_ports

        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        ports = free_ports(len(self.parties))
        for p, port in zip(self.parties, ports, strict=True):
            self.ports[p.node] = port
            tls = self.tls(p.node)
            cmd = [
                sys.executable,
                "-m",
                "veil_cli.training_run",
                "party",
                "--name",
                p.node,
                *(["--csv", str(p.csv)] if p.csv is not None else []),
                *(["--store-config", str(p.store_config)] if p.store_config is not None else []),
                *(["--features", str(p.features)] if p.features is not None else []),
                "--id-column",
                self.id_column,
                "--listen",
                self.address(p.node),
                "--ca",
                str(tls.ca),
                "--cert",
                str(tls.cert),
                "--key",
                str(tls.key),
                "--state-dir",
                str(self.state_dir(p.node)),
                "--workers",
                str(self.workers),
                *(["--uscc"] if self.uscc else []),
            ]
            out = (self.logs / f"{p.node}.log").open("ab")
            self.processes[p.node] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
            out.close()

    async def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        tls = self.tls(LABEL_NODE)

        async def exited(proc: subprocess.Popen[bytes]) -> None:
            while proc.poll() is None:
                await asyncio.sleep(0.1)
            raise Unavailable(f"exited with {proc.returncode}")

        async def one(p: PartySpec) -> None:
            proc = self.processes[p.node]
            healthy = asyncio.ensure_future(
                wait_healthy(self.address(p.node), tls, PeerIdentity("provider", p.node), timeout_s)
            )
            watcher = asyncio.ensure_future(exited(proc))
            try:
                done, _ = await asyncio.wait(
                    (healthy, watcher), return_when=asyncio.FIRST_COMPLETED
                )
                next(iter(done)).result()
            except Exception as exc:
                why = (
                    self._startup_error(p.node) or f"exited with {proc.returncode}"
                    if proc.poll() is not None
                    else str(exc)
                )
                raise Unavailable(
                    f"feature party {p.name!r} did not start: {why} "
                    f"(see {self.logs / (p.node + '.log')})",
                    details={"party": p.name},
                ) from None
            finally:
                for task in (healthy, watcher):
                    task.cancel()

        await asyncio.gather(*(one(p) for p in self.parties))

    def _startup_error(self, node: str) -> str:
        try:
            lines = (self.logs / f"{node}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        found = [ln[len(STARTUP_ERROR) :] for ln in lines if ln.startswith(STARTUP_ERROR)]
        return found[-1] if found else ""

    def kill(self, party: str) -> None:
        """Kill one party's process outright (tests: a party that disconnects)."""
        proc = self.processes[node_name(party)]
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> dict[str, int | None]:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node, proc in self.processes.items():
            try:
                codes[node] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[node] = None
        self.processes.clear()
        return codes


async def train_files(
    run: TrainingRun,
    labels: Path,
    label_column: str,
    config: JobConfig,
    *,
    resume: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    on_started: Callable[[TrainingRun], None] | None = None,
) -> Any:
    """Run a whole job; returns the label party's ``TrainingResult``."""
    from platform_node.training import LabelParty, PartyEndpoint

    table = read_party_csv(
        labels, id_column=run.id_column, label_column=label_column, uscc=run.uscc
    )
    run.prepare()
    run.start()
    try:
        await run.wait_healthy()
        if on_started is not None:
            on_started(run)
        label = LabelParty(
            table,
            [PartyEndpoint(p.node, run.address(p.node)) for p in run.parties],
            run.tls(LABEL_NODE),
            config,
            run.state_dir(LABEL_NODE),
            name=LABEL_NODE,
            progress=progress,
            resume=resume,
            workers=run.workers,
        )
        return await label.run()
    finally:
        run.stop()


# --------------------------------------------------------------------------- party process


def _serve_party(args: argparse.Namespace) -> int:
    from provider_node.training import FeatureParty, training_binding

    tls = TLSConfig(ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key))
    cache: list[Any] = []

    def read() -> Any:
        source = f"party {args.name}"
        if args.csv:
            return read_party_csv(
                Path(args.csv), id_column=args.id_column, uscc=args.uscc, source=source
            )
        if not args.store_config or not args.features:
            raise InvalidArgument("a party needs --csv, or --store-config with --features")
        return _store_table(Path(args.store_config), Path(args.features), source)

    def load() -> Any:
        """This process serves one job's data: read (and check) it once, at start."""
        if not cache:
            cache.append(read())
        return cache[0]

    try:
        load()  # fail at start on bad input, naming the file
    except VeilError as exc:
        print(f"{STARTUP_ERROR}{exc.message}", file=sys.stderr, flush=True)
        return 2
    party = FeatureParty(args.name, load, tls, Path(args.state_dir), workers=args.workers)

    async def main() -> None:
        server, _port, health = await create_server(
            args.listen, tls, [training_binding(party)], allowed_roles=("platform",)
        )
        await serve_until_signal(server, health, grace_s=2.0)

    asyncio.run(main())
    return 0


def _store_table(config_path: Path, features: Path, source: str) -> Any:
    """The party's table from its own provider store (its node configuration)."""
    import json

    from provider_node.settings import provider_settings
    from veil.catalog import load_catalog
    from veil.config import load_node_config
    from veil.store import ProviderStore, load_mapping
    from veil.training.store_source import store_table

    config = load_node_config(config_path)
    settings = provider_settings(config)
    catalog = load_catalog()
    mapping = load_mapping(settings.mapping.removeprefix("builtin:"), catalog)
    try:
        definitions = json.loads(features.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{source}: cannot read feature definitions ({exc})") from None
    store = ProviderStore(config.store_url, mapping, catalog)
    try:
        return store_table(store, definitions, catalog, source=source)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m veil_cli.training_run")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("party", help="serve one feature party of a training job (internal)")
    p.add_argument("--name", required=True)
    p.add_argument("--csv")
    p.add_argument("--store-config", help="the provider node's TOML (federation training)")
    p.add_argument("--features", help="feature definitions JSON (with --store-config)")
    p.add_argument("--id-column", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--uscc", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        return _serve_party(args)
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
