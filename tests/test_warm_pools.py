"""A provider's randomizer pools: its memory of the platform's public Paillier keys
(provider_node/warm_pools.py), on SQLite and PostgreSQL — the newest key is the one last
answered under, a key seen again becomes the newest without a second row, services keep
their own keys, and a stored value that is no longer a valid modulus is ignored rather
than trusted — and the scoring pool's configured size."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from provider_node.warm_pools import KnownKeys, known_keys
from tests.conftest import fresh_database
from veil.crypto import PaillierKeys, public_key_bytes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    with fresh_database(request.param, tmp_path, "warm_pools") as engine:
        yield engine


@pytest.fixture(scope="module")
def moduli() -> list[bytes]:
    return [public_key_bytes(PaillierKeys.generate(2048).public) for _ in range(2)]


def age(engine: Engine, n: bytes, seconds: float) -> None:
    """Pretend ``n`` was last seen ``seconds`` ago (a fake clock for the ordering)."""
    with engine.begin() as conn:
        conn.execute(
            update(known_keys)
            .where(known_keys.c.n == n)
            .values(last_seen=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds))
        )


def test_nothing_remembered_means_no_key(engine: Engine) -> None:
    assert KnownKeys(engine, "verification").newest() is None


def test_the_newest_key_is_the_one_last_answered_under(engine: Engine, moduli: list[bytes]) -> None:
    keys = KnownKeys(engine, "verification")
    old, new = moduli
    keys.remember(old)
    age(engine, old, 60)
    keys.remember(new)
    newest = keys.newest()
    assert newest is not None and public_key_bytes(newest) == new
    age(engine, new, 120)  # the platform went back to the old key
    keys.remember(old)
    newest = keys.newest()
    assert newest is not None and public_key_bytes(newest) == old
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(known_keys)).scalar_one() == 2


def test_each_service_keeps_its_own_keys(engine: Engine, moduli: list[bytes]) -> None:
    KnownKeys(engine, "verification").remember(moduli[0])
    KnownKeys(engine, "training").remember(moduli[1])
    newest = KnownKeys(engine, "verification").newest()
    assert newest is not None and public_key_bytes(newest) == moduli[0]


def test_a_stored_value_that_is_not_a_modulus_is_ignored(
    engine: Engine, moduli: list[bytes]
) -> None:
    keys = KnownKeys(engine, "verification")
    keys.remember(moduli[0])
    with engine.begin() as conn:
        conn.execute(update(known_keys).values(n=b"\x04" * 256))  # even: not a Paillier n
    assert keys.newest() is None


def test_scoring_pool_size_setting() -> None:
    from provider_node.scoring import POOL_SIZE, pool_size
    from veil.errors import ConfigError

    assert pool_size({}, "p.toml") == POOL_SIZE == 32
    assert pool_size({"pool_size": 0}, "p.toml") == 0
    assert pool_size({"pool_size": 4096}, "p.toml") == 4096
    for bad in (-1, 4097, True, "64", 1.5):
        with pytest.raises(ConfigError, match=r"scoring\.pool_size"):
            pool_size({"pool_size": bad}, "p.toml")
