"""Shared fixtures: a real local federation (separate processes, mTLS) on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
E2E_ENTERPRISES = 400


def run(coro: Any) -> Any:
    """Run a coroutine to completion (no pytest-asyncio needed)."""
    return asyncio.run(coro)


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
