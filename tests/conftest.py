"""Shared fixtures: a real local federation (separate processes, mTLS) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
E2E_ENTERPRISES = 400


def run(coro: Any) -> Any:
    """Run a coroutine to completion (no pytest-asyncio needed)."""
    return asyncio.run(coro)


@contextmanager
def fresh_database(kind: str, tmp_path: Path, name: str) -> Iterator[Any]:
    """An engine on a fresh database: ``kind`` "sqlite" — a SQLite file (WAL) in
    ``tmp_path``; "postgres" — a new PostgreSQL schema, dropped afterwards (PostgreSQL
    must be reachable: a connection error fails the test, never skips it)."""
    import uuid

    from veil.store import make_engine

    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        yield engine
        engine.dispose()
        return
    base = make_engine(POSTGRES_URL)
    schema = f"{name}_test_{uuid.uuid4().hex[:12]}"
    with base.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield base.execution_options(schema_translate_map={None: schema})
    finally:
        with base.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        base.dispose()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from veil_cli.authz_setup import onboard_institution
    from veil_cli.commands.data import generate_to_dir
    from veil_cli.federation import INSTITUTION, Federation

    workdir: Path = tmp_path_factory.mktemp("federation")
    fed = Federation(workdir)
    fed.prepare()
    generate_to_dir(
        fed.data, enterprises=E2E_ENTERPRISES, seed=11, units=fed.providers, progress=False
    )
    try:
        run(fed.launch())
        from veil_cli.commands.demo import wait_for_aggregation

        run(wait_for_aggregation(workdir / "admin.toml"))
        run(onboard_institution(fed, INSTITUTION))
        yield fed
    finally:
        codes = fed.stop()
        fed.exit_codes = codes  # type: ignore[attr-defined]


async def call_platform_as(fed: Any, cert: str, stub: Any, method: str, request: Any) -> Any:
    """Call the platform directly with ``cert``'s certificate (a gateway's, a bank's):
    the answer, or the :class:`grpc.aio.AioRpcError`."""
    import grpc

    from veil.tls import PeerIdentity, secure_channel

    node = fed.node("platform")
    async with secure_channel(
        node.address, fed.client_tls(cert), PeerIdentity("platform", node.name)
    ) as channel:
        try:
            return await getattr(stub(channel), method)(request, timeout=30.0)
        except grpc.aio.AioRpcError as err:
            return err


def stop_provider(fed: Any, unit: str) -> None:
    import signal

    proc = fed.processes[unit.replace("_", "-")]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def start_provider(fed: Any, unit: str) -> None:
    """Start ``unit``'s node again (after :func:`stop_provider`), as the federation does."""
    fed.processes.pop(unit.replace("_", "-"), None)
    fed.start(roles=("provider",))
    run(fed.wait_healthy())


def serve_provider_metrics(fed: Any, unit: str) -> str:
    """Give ``unit``'s node a ``/metrics`` endpoint from its next start; its address."""
    import tomllib

    import tomli_w

    from veil_cli.federation import free_ports

    config = fed.configs / f"{unit.replace('_', '-')}.toml"
    doc = tomllib.loads(config.read_text())
    if "metrics_listen" not in doc["node"]:
        (port,) = free_ports(1, taken={n.port for n in fed.nodes})
        doc["node"]["metrics_listen"] = f"127.0.0.1:{port}"
        config.write_text(tomli_w.dumps(doc))
    return str(doc["node"]["metrics_listen"])


def scrape(address: str) -> dict[str, float]:
    """A node's ``/metrics`` samples by name and labels, e.g.
    ``veil_randomizer_pool_ready{service="verification"}``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
