"""The persistent log store on SQLite and PostgreSQL: vectors through storage, proofs
from O(log n) rows, bad requests, atomic batches, fork refusal and SIGKILL safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from veil._internal import merkle as m
from veil.checkpoint import Checkpoint, Signer, verify_checkpoint
from veil.errors import (
    BeyondTreeSize,
    InvalidArgument,
    InvalidTreeRange,
    LeafNotFound,
    LogInconsistent,
    MalformedHash,
    NotFound,
)
from veil.tlog import LogStore
from veil.tlog.schema import node_key

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]

LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    schema = f"tlog_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except OperationalError as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[[], LogStore]]:
    stores: list[LogStore] = []

    def make() -> LogStore:
        stores.append(LogStore(db_url))
        return stores[-1]

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], LogStore]) -> LogStore:
    return open_store()


def raw(db_url: str, sql: str, **params: Any) -> list[Any]:
    """Run SQL against the store's database directly (to tamper or inspect)."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def check_storage(db_url: str, size: int) -> None:
    """Recompute every stored hash from the stored leaves: leaf hashes, all perfect
    nodes (and no extra rows), and the head size."""
    rows = raw(db_url, "SELECT idx, leaf_hash, data FROM tlog_leaves ORDER BY idx")
    assert [r[0] for r in rows] == list(range(size))
    hashes = [m.leaf_hash(bytes(r[2])) for r in rows]
    assert [bytes(r[1]) for r in rows] == hashes
    expected = {node_key(lv, ix): h for lv, ix, h in m.append_leaf_hashes([], 0, hashes) if lv > 0}
    stored = {int(k): bytes(h) for k, h in raw(db_url, "SELECT id, hash FROM tlog_nodes")}
    assert stored == expected
    assert raw(db_url, "SELECT size FROM tlog_head") == [(size,)]


# --- vectors through storage -------------------------------------------------------


def test_vectors_through_storage(store: LogStore, db_url: str) -> None:
    assert store.size() == 0
    assert store.root() == m.EMPTY_ROOT
    assert store.append_batch(LEAVES[:3]) == 0
    assert store.append(LEAVES[3]) == 3
    assert store.append_batch(LEAVES[4:]) == 4
    assert store.size() == 8
    assert store.root() == ROOT8
    nodes: dict[tuple[int, int], bytes] = {
        (lv, ix): h for lv, ix, h in m.append_leaf_hashes([], 0, [m.leaf_hash(x) for x in LEAVES])
    }
    get = lambda lv, ix: nodes[(lv, ix)]  # noqa: E731
    for size in range(1, 9):
        assert store.root(size) == m.root_hash(size, get)
        for index in range(size):
            assert store.inclusion_proof(index, size) == m.inclusion_proof(index, size, get)
        for size1 in range(1, size + 1):
            assert store.consistency_proof(size1, size) == m.consistency_proof(size1, size, get)
    assert store.entries(0, 8) == LEAVES
    assert store.entry(5) == LEAVES[5]
    assert store.leaf_hashes(6, 8) == [m.leaf_hash(LEAVES[6]), m.leaf_hash(LEAVES[7])]
    assert store.entries(3, 3) == []
    check_storage(db_url, 8)


def test_random_batches_round_trip(store: LogStore, db_url: str) -> None:
    rng = random.Random(7)
    entries: list[bytes] = []
    while len(entries) < 300:
        batch = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 40))]
        assert store.append_batch(batch) == len(entries)
        entries += batch
    hashes = [m.leaf_hash(e) for e in entries]
    for _ in range(40):
        size = rng.randrange(1, len(entries) + 1)
        index = rng.randrange(size)
        root = store.root(size)
        assert root == m.root_from_leaf_hashes(hashes[:size])
        m.verify_inclusion(hashes[index], index, size, store.inclusion_proof(index, size), root)
        size1 = rng.randrange(1, size + 1)
        proof = store.consistency_proof(size1, size)
        m.verify_consistency(size1, size, proof, store.root(size1), root)
    found_index, proof = store.inclusion_proof_by_leaf_hash(hashes[123], len(entries))
    assert entries.index(entries[123]) == found_index
    m.verify_inclusion(hashes[123], found_index, len(entries), proof, store.root())
    check_storage(db_url, len(entries))


def test_writes_along_commit_with_the_batch_and_fail_alone(store: LogStore, db_url: str) -> None:
    """``append_batch(entries, along)``: the caller's own rows commit in the entries'
    transaction; one that raises is rolled back to its savepoint, the rest commits."""
    raw(db_url, "CREATE TABLE side (x INTEGER PRIMARY KEY)")

    def put(x: int) -> Callable[[Any], None]:
        return lambda conn: conn.execute(text("INSERT INTO side VALUES (:x)"), {"x": x})

    def put_then_fail(conn: Any) -> None:
        put(2)(conn)
        raise RuntimeError("a write along that fails")

    assert store.append_batch([b"a", b"b"], [put(1), put_then_fail, put(3)]) == 0
    assert store.size() == 2
    assert [r[0] for r in raw(db_url, "SELECT x FROM side ORDER BY x")] == [1, 3]


def test_duplicate_entries_prove_first_occurrence(store: LogStore) -> None:
    store.append_batch([b"a", b"dup", b"b", b"dup"])
    assert store.inclusion_proof_by_leaf_hash(m.leaf_hash(b"dup"), 4)[0] == 1
    with pytest.raises(LeafNotFound):
        store.inclusion_proof_by_leaf_hash(m.leaf_hash(b"dup"), 1)


def test_proofs_read_few_rows_in_few_statements(store: LogStore) -> None:
    store.append_batch([b"%d" % i for i in range(5000)])
    statements: list[tuple[str, Any]] = []

    def spy(_c: Any, _cur: Any, stmt: str, params: Any, _ctx: Any, _many: bool) -> None:
        statements.append((stmt, params))

    event.listen(store._engine, "before_cursor_execute", spy)
    try:
        store.inclusion_proof(1234, 4999)
        incl = list(statements)
        statements.clear()
        store.consistency_proof(1001, 4999)
        cons = list(statements)
    finally:
        event.remove(store._engine, "before_cursor_execute", spy)
    for stmts in (incl, cons):
        selects = [s for s, _ in stmts if s.lstrip().upper().startswith("SELECT")]
        assert len(selects) <= 3  # head size, leaves IN (...), nodes IN (...)
        n_params = sum(len(p) if isinstance(p, tuple | list | dict) else 0 for _, p in stmts)
        assert n_params <= 3 * (4999).bit_length()


# --- bad requests -----------------------------------------------------------------


def test_bad_requests(store: LogStore) -> None:
    store.append_batch(LEAVES)
    with pytest.raises(BeyondTreeSize):
        store.inclusion_proof(3, 9)
    with pytest.raises(BeyondTreeSize):
        store.inclusion_proof(8, 9)
    with pytest.raises(InvalidTreeRange):
        store.inclusion_proof(5, 5)
    with pytest.raises(InvalidTreeRange):
        store.inclusion_proof(-1, 5)
    with pytest.raises(InvalidTreeRange):
        store.inclusion_proof(0, 0)
    with pytest.raises(InvalidTreeRange):
        store.consistency_proof(5, 4)
    with pytest.raises(InvalidTreeRange):
        store.consistency_proof(0, 4)
    with pytest.raises(BeyondTreeSize):
        store.consistency_proof(4, 9)
    with pytest.raises(MalformedHash):
        store.inclusion_proof_by_leaf_hash(b"\x00" * 31, 8)
    with pytest.raises(MalformedHash):
        store.inclusion_proof_by_leaf_hash(b"\x00" * 33, 8)
    with pytest.raises(LeafNotFound):
        store.inclusion_proof_by_leaf_hash(m.leaf_hash(b"never logged"), 8)
    with pytest.raises(LeafNotFound):  # logged, but not within the requested size
        store.inclusion_proof_by_leaf_hash(m.leaf_hash(LEAVES[7]), 7)
    with pytest.raises(BeyondTreeSize):
        store.inclusion_proof_by_leaf_hash(m.leaf_hash(LEAVES[7]), 9)
    with pytest.raises(BeyondTreeSize):
        store.root(9)
    with pytest.raises(InvalidTreeRange):
        store.root(-1)
    with pytest.raises(BeyondTreeSize):
        store.entry(8)
    with pytest.raises(InvalidTreeRange):
        store.entry(-1)
    with pytest.raises(InvalidTreeRange):
        store.entries(5, 4)
    with pytest.raises(BeyondTreeSize):
        store.entries(0, 9)
    with pytest.raises(InvalidArgument):
        store.append_batch([])
    with pytest.raises(InvalidArgument):
        store.append_batch(["text is not bytes"])  # type: ignore[list-item]
    with pytest.raises(NotFound):
        store.checkpoint_at(3)
    assert store.size() == 8


# --- atomic batches, several writers -------------------------------------------------


def test_failed_batch_leaves_no_trace(store: LogStore, db_url: str) -> None:
    store.append_batch(LEAVES[:5])
    # Plant a row the next batch needs to create: node (1, 2) completes at size 6.
    raw(db_url, "INSERT INTO tlog_nodes (id, hash) VALUES (:k, :h)", k=node_key(1, 2), h=b"x" * 32)
    with pytest.raises(IntegrityError):
        store.append_batch(LEAVES[5:])
    raw(db_url, "DELETE FROM tlog_nodes WHERE id = :k", k=node_key(1, 2))
    assert store.size() == 5
    check_storage(db_url, 5)
    assert store.append_batch(LEAVES[5:]) == 5
    assert store.root() == ROOT8
    check_storage(db_url, 8)


def test_two_instances_share_one_sequence(open_store: Callable[[], LogStore], db_url: str) -> None:
    a, b = open_store(), open_store()
    assert a.append_batch(LEAVES[:3]) == 0
    assert b.append_batch(LEAVES[3:5]) == 3
    assert a.append_batch(LEAVES[5:7]) == 5  # a reloads its frontier
    assert b.append(LEAVES[7]) == 7
    assert a.root() == b.root() == ROOT8
    check_storage(db_url, 8)


# --- checkpoints ---------------------------------------------------------------------

SIGNER = Signer.generate("veil.example/test-log")


def test_checkpoints_chain(store: LogStore) -> None:
    assert store.latest_checkpoint() is None
    empty = store.checkpoint(SIGNER)
    assert verify_checkpoint(empty, SIGNER.verifier()) == Checkpoint(
        "veil.example/test-log", 0, m.EMPTY_ROOT
    )
    store.append_batch(LEAVES[:5])
    first = store.checkpoint(SIGNER)
    cp5 = verify_checkpoint(first, SIGNER.verifier())
    assert (cp5.size, cp5.root_hash) == (5, store.root(5))
    assert store.checkpoint(SIGNER) == first  # unchanged tree: same note
    store.append_batch(LEAVES[5:])
    second = store.checkpoint(SIGNER)
    cp8 = verify_checkpoint(second, SIGNER.verifier())
    assert (cp8.size, cp8.root_hash) == (8, ROOT8)
    m.verify_consistency(5, 8, store.consistency_proof(5, 8), cp5.root_hash, cp8.root_hash)
    assert store.latest_checkpoint() == second
    assert store.checkpoint_at(5) == first
    assert store.checkpoint_at(0) == empty
    # Another key may sign the same tree; the stored note is then the new one.
    other = Signer.generate("veil.example/other")
    third = store.checkpoint(other, origin="veil.example/test-log")
    verify_checkpoint(third, other.verifier(), origin="veil.example/test-log")
    assert store.checkpoint_at(8) == third


def test_refuses_to_sign_a_rewritten_history(
    open_store: Callable[[], LogStore], db_url: str
) -> None:
    store = open_store()
    store.append_batch(LEAVES[:5])
    signed = verify_checkpoint(store.checkpoint(SIGNER), SIGNER.verifier())
    # Someone with database access rewrites history and replays different entries.
    for table in ("tlog_leaves", "tlog_nodes"):
        raw(db_url, f"DELETE FROM {table}")
    raw(db_url, "UPDATE tlog_head SET size = 0")
    forger = open_store()
    forger.append_batch([b"forged %d" % i for i in range(8)])
    with pytest.raises(LogInconsistent, match="inconsistent with the checkpoint signed at size 5"):
        forger.checkpoint(SIGNER)
    assert store.latest_checkpoint() is not None
    assert verify_checkpoint(store.latest_checkpoint() or b"", SIGNER.verifier()) == signed


def test_refuses_to_sign_after_node_tampering(store: LogStore, db_url: str) -> None:
    store.append_batch(LEAVES[:6])
    store.checkpoint(SIGNER)
    store.append_batch(LEAVES[6:])
    raw(db_url, "UPDATE tlog_nodes SET hash = :h WHERE id = :k", h=b"\x01" * 32, k=node_key(2, 0))
    with pytest.raises(LogInconsistent):
        store.checkpoint(SIGNER)


def test_refuses_to_sign_a_shrunken_log(store: LogStore, db_url: str) -> None:
    store.append_batch(LEAVES)
    store.checkpoint(SIGNER)
    raw(db_url, "DELETE FROM tlog_leaves WHERE idx >= 6")
    raw(db_url, "UPDATE tlog_head SET size = 6")
    with pytest.raises(LogInconsistent, match="shrank"):
        store.checkpoint(SIGNER)


def test_refuses_when_stored_checkpoint_altered(store: LogStore, db_url: str) -> None:
    store.append_batch(LEAVES[:4])
    store.checkpoint(SIGNER)
    store.append_batch(LEAVES[4:])
    raw(db_url, "UPDATE tlog_checkpoints SET root_hash = :h", h=ROOT8)
    with pytest.raises(LogInconsistent, match="altered"):
        store.checkpoint(SIGNER)


def test_same_size_different_root_refused(store: LogStore, db_url: str) -> None:
    store.append_batch(LEAVES)
    store.checkpoint(SIGNER)
    raw(db_url, "UPDATE tlog_nodes SET hash = :h WHERE id = :k", h=b"\x02" * 32, k=node_key(3, 0))
    with pytest.raises(LogInconsistent):
        store.checkpoint(Signer.generate("veil.example/test-log"))


# --- crash safety ----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import random, sys
    from veil.tlog import LogStore

    store = LogStore(sys.argv[1])
    rng = random.Random()
    while True:
        n = store.size()
        batch = [b"entry-%d" % i for i in range(n, n + rng.randrange(1, 60))]
        first = store.append_batch(batch)
        assert first == n, (first, n)
        print(first + len(batch) - 1, flush=True)
    """
)


def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    acknowledged = -1
    rng = random.Random(1)
    for _round in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        target = rng.randrange(20, 80)
        for _ in range(target):
            line = child.stdout.readline()
            assert line, "child exited early"
            acknowledged = max(acknowledged, int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # Acknowledgements printed before the kill that we have not read yet count too.
        for line in child.stdout.read().split():
            acknowledged = max(acknowledged, int(line))
        assert child.returncode == -signal.SIGKILL

        store = LogStore(url)
        try:
            size = store.size()
            assert size >= acknowledged + 1
            entries = store.entries(0, size)
            assert entries == [b"entry-%d" % i for i in range(size)]
            assert store.root() == m.root_from_leaf_hashes([m.leaf_hash(e) for e in entries])
        finally:
            store.close()
        check_storage(url, size)
    assert raw(url, "PRAGMA journal_mode") == [("wal",)]
