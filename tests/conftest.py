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
