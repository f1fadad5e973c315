"""The platform's transparency log in-process: entry format, batcher, index, checkpoints."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete

from platform_node.audit import AuditLog, LogSettings
from platform_node.audit_index import IndexTables, Query
from tests.conftest import POSTGRES_URL, run
from veil._internal.merkle import leaf_hash, verify_inclusion
from veil.audit.entry import (
    AuditEvent,
    EventType,
    MalformedEntry,
    Scope,
    concerns,
    decode_entry,
    encode_entry,
    lookup_result_digest,
)
from veil.checkpoint import Signer, verify_checkpoint
from veil.errors import ConfigError, InvalidArgument
from veil.tlog import LogStore
from veil.uscc import make_uscc
from veil.v1 import common_pb2, gateway_pb2, platform_pb2
from veil.values import to_record

USCC = make_uscc("9", "1", "110105", "MA01ABCD")
OTHER = make_uscc("9", "1", "310115", "MA02WXY0")
T0 = dt.datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=dt.UTC)


def lookup(i: int, *, uscc: str = USCC, providers: tuple[str, ...] = ("court", "samr")) -> Any:
    return AuditEvent(
        type=EventType.LOOKUP,
        actor=f"institution/bank-{i % 3}",
        request_id=f"req-{i}",
        enterprise=uscc,
        providers=providers,
        result_sha256="ab" * 32,
    )


# -- entry format -------------------------------------------------------------------------


def test_entry_is_canonical_json_with_every_key() -> None:
    leaf = encode_entry(lookup(1), T0)
    text = leaf.decode("utf-8")
    obj = json.loads(text)
    assert text == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert " " not in text and "\n" not in text
    assert obj["time"] == "2025-03-01T08:00:00.123456Z"
    assert obj["v"] == 1 and obj["type"] == "enterprise.lookup"
    assert obj["providers"] == ["court", "samr"] and obj["providers_failed"] == []
    assert obj["grant"] == "" and obj["purpose"] == ""
    entry = decode_entry(leaf)
    assert entry.enterprise == USCC and entry.time == T0 and entry.actor == "institution/bank-1"


def test_decoding_refuses_anything_but_the_canonical_bytes() -> None:
    leaf = encode_entry(lookup(1), T0)
    obj = json.loads(leaf)
    for bad in (
        json.dumps(obj).encode(),  # whitespace
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b" ",
        json.dumps({**obj, "extra": 1}, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps({**obj, "v": 2}, sort_keys=True, separators=(",", ":")).encode(),
        b"\xff",
    ):
        with pytest.raises(MalformedEntry):
            decode_entry(bad)
    unsorted = {**obj, "providers": ["samr", "court"]}
    with pytest.raises(MalformedEntry):
        decode_entry(json.dumps(unsorted, sort_keys=True, separators=(",", ":")).encode())


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"enterprise": "91110105MA01ABCD0X"}, "enterprise"),
        ({"request_id": "has spaces in it"}, "request_id"),
        ({"detail": {"name": "北京某某科技有限公司"}}, "detail"),
        ({"detail": {"revenue": 12.5}}, "detail"),
        ({"result_sha256": "not-a-hash"}, "result_sha256"),
        ({"providers": ["Tax Bureau"]}, "providers"),
        ({"providers": ["tax"], "providers_failed": ["tax"]}, "both"),
        ({"actor": "demo-bank"}, "actor"),
    ],
)
def test_encoder_refuses_values_that_are_not_identifiers(change: dict[str, Any], what: str) -> None:
    event = AuditEvent(**{**lookup(1).__dict__, **change})
    with pytest.raises(MalformedEntry) as info:
        encode_entry(event, T0)
    assert what in info.value.message or what == "both"


def test_lookup_entry_holds_the_result_hash_never_the_values(tmp_path: Path) -> None:
    record = to_record("samr_basic", {"ent_name": "北京某某科技有限公司", "reg_capital": 1234})
    response = platform_pb2.LookupEnterpriseResponse(
        request_id="r1",
        uscc=USCC,
        name="北京某某科技有限公司",
        datasets=[common_pb2.DatasetRecords(dataset_id="samr_basic", source="platform")],
        providers_consulted=["court", "samr"],
    )
    response.datasets[0].records.append(record)

    async def go() -> tuple[bytes, int]:
        audit = await open_log(tmp_path)
        try:
            index = await audit.lookup(
                platform_pb2.LookupEnterpriseRequest(uscc=USCC, institution_id="demo-bank"),
                "r1",
                ["court", "samr"],
                [object(), ValueError("boom")],
                response,
            )
            return audit.store.entry(index), index
        finally:
            await audit.close()

    leaf, _ = run(go())
    text = leaf.decode("utf-8")
    assert "北京" not in text and "1234" not in text and "ent_name" not in text
    entry = decode_entry(leaf)
    gateway_view = gateway_pb2.GatewayLookupResponse(
        request_id="r1", uscc=USCC, name=response.name, datasets=response.datasets, log_index=7
    )
    assert entry.result_sha256 == lookup_result_digest(gateway_view)
    assert entry.providers == ("court",) and entry.providers_failed == ("samr",)
    assert entry.outcome == "INTERNAL" and entry.actor == "institution/demo-bank"


def test_scopes() -> None:
    entry = decode_entry(encode_entry(lookup(4, providers=("tax",)), T0))
    assert concerns(entry, Scope.ALL, "")
    assert concerns(entry, Scope.PROVIDER, "tax") and not concerns(entry, Scope.PROVIDER, "court")
    assert concerns(entry, Scope.ENTERPRISE, USCC) and not concerns(entry, Scope.ENTERPRISE, OTHER)
    assert concerns(entry, Scope.INSTITUTION, "institution/bank-1")
    assert not concerns(entry, Scope.INSTITUTION, "institution/bank-2")
    assert not concerns(entry, Scope.UNSPECIFIED, "")


# -- the log ------------------------------------------------------------------------------


async def open_log(tmp_path: Path, url: str | None = None, **kw: Any) -> AuditLog:
    settings = LogSettings(key_path=tmp_path / "log.key", origin="test.veil/log", **kw)
    return await AuditLog.open(
        url or f"sqlite:///{tmp_path / 'platform.db'}", settings, actor="platform/platform"
    )


def test_key_is_created_0600_and_reused(tmp_path: Path) -> None:
    async def go() -> str:
        audit = await open_log(tmp_path)
        await audit.close()
        return audit.verifier_key

    first = run(go())
    mode = stat.S_IMODE(os.stat(tmp_path / "log.key").st_mode)
    assert mode == 0o600
    assert run(go()) == first
    with pytest.raises(ConfigError, match="origin"):
        run(
            AuditLog.open(
                f"sqlite:///{tmp_path / 'platform.db'}",
                LogSettings(key_path=tmp_path / "log.key", origin="other.veil/log"),
                actor="platform/platform",
            )
        )


def test_concurrent_records_are_batched_dense_and_durable(tmp_path: Path) -> None:
    calls: list[int] = []

    async def go() -> tuple[list[int], AuditLog]:
        audit = await open_log(tmp_path, batch_wait_s=0.005)
        original = audit.store.append_batch

        def spy(entries: Any, along: Any = ()) -> int:
            calls.append(len(entries))
            return original(entries, along)

        audit.store.append_batch = spy  # type: ignore[method-assign]
        try:
            return list(
                await asyncio.gather(*(audit.record(lookup(i)) for i in range(2000)))
            ), audit
        finally:
            await audit.close()

    indices, _ = run(go())
    assert sorted(indices) == list(range(2000))
    assert sum(calls) == 2000 and len(calls) <= 20 and max(calls) <= 500
    # Reopened: every acknowledged entry is there, in order, with its request id.
    store = LogStore(f"sqlite:///{tmp_path / 'platform.db'}", table_prefix="audit_log_")
    try:
        assert store.size() == 2000
        ids = {decode_entry(store.entry(i)).request_id for i in (0, 999, 1999)}
        assert len(ids) == 3
        for i, index in enumerate(indices[:50]):
            assert decode_entry(store.entry(index)).request_id == f"req-{i}"
    finally:
        store.close()


def test_checkpoints_are_signed_consistent_and_on_demand(tmp_path: Path) -> None:
    async def go() -> None:
        audit = await open_log(tmp_path, checkpoint_interval_s=60)
        try:
            verifier = Signer.load(tmp_path / "log.key").verifier()
            empty = verify_checkpoint(await audit.checkpoint(), verifier)
            assert empty.size == 0
            for i in range(5):
                await audit.record(lookup(i))
            assert verify_checkpoint(await audit.checkpoint(), verifier).size == 0  # cached
            cp = verify_checkpoint(await audit.checkpoint(fresh=True), verifier)
            assert cp.size == 5 and cp.origin == "test.veil/log"
            assert cp.root_hash == audit.store.root(5)
            leaf = audit.store.entry(3)
            verify_inclusion(leaf_hash(leaf), 3, 5, audit.store.inclusion_proof(3, 5), cp.root_hash)
        finally:
            await audit.close()

    run(go())


def test_periodic_checkpoint_follows_the_tree(tmp_path: Path) -> None:
    async def go() -> int:
        audit = await open_log(tmp_path, checkpoint_interval_s=0.05)
        try:
            await audit.record(lookup(1))
            await asyncio.sleep(0.3)
            verifier = audit.signer.verifier()
            return verify_checkpoint(await audit.checkpoint(), verifier).size
        finally:
            await audit.close()

    assert run(go()) == 1


def test_index_search_scopes_filters_and_pages(tmp_path: Path) -> None:
    async def go() -> None:
        audit = await open_log(tmp_path)
        try:
            for i in range(30):
                providers = ("tax",) if i % 2 else ("court", "samr")
                await audit.record(lookup(i, uscc=USCC if i % 3 else OTHER, providers=providers))
            idx = audit.index
            size = idx.sync()
            hits, nxt = idx.search(Scope.PROVIDER, "tax", Query(page_size=100), size)
            assert [h.index for h in hits] == list(range(1, 30, 2)) and nxt == 0
            hits, nxt = idx.search(Scope.PROVIDER, "tax", Query(page_size=4), size)
            assert [h.index for h in hits] == [1, 3, 5, 7] and nxt == 9
            hits, _ = idx.search(Scope.ENTERPRISE, OTHER, Query(), size)
            assert [h.index for h in hits] == list(range(0, 30, 3))
            # a restricted caller cannot widen its scope with a filter
            hits, _ = idx.search(Scope.ENTERPRISE, OTHER, Query(enterprise=USCC), size)
            assert hits == []
            hits, _ = idx.search(Scope.PROVIDER, "tax", Query(provider="court"), size)
            assert hits == []
            hits, _ = idx.search(Scope.ALL, "", Query(actor="institution/bank-0"), 10)
            assert [h.index for h in hits] == [0, 3, 6, 9]
            for h in hits:
                assert h.leaf_hash == leaf_hash(h.leaf)
            far = "2999-01-01T00:00:00.000000Z"
            assert idx.search(Scope.ALL, "", Query(since=far), size)[0] == []
            assert len(idx.search(Scope.ALL, "", Query(until=far), size)[0]) == 30
            with pytest.raises(InvalidArgument):
                idx.search(Scope.UNSPECIFIED, "", Query(), size)
            with pytest.raises(InvalidArgument):
                idx.search(Scope.PROVIDER, "", Query(), size)
        finally:
            await audit.close()

    run(go())


def test_index_catches_up_with_other_writers_and_lost_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"

    async def first() -> None:
        audit = await open_log(tmp_path)
        try:
            for i in range(10):
                await audit.record(lookup(i))
        finally:
            await audit.close()

    run(first())
    # A crash between the log's commit and the index write loses index rows ...
    engine = create_engine(url)
    t = IndexTables("audit_index_")
    with engine.begin() as conn:
        conn.execute(delete(t.entries).where(t.entries.c.idx >= 6))
        conn.execute(delete(t.providers).where(t.providers.c.idx >= 6))
    engine.dispose()
    # ... and another writer appends to the same log.
    other = LogStore(url, table_prefix="audit_log_")
    other.append(encode_entry(lookup(99, providers=("tax",)), T0))
    other.close()

    async def second() -> None:
        audit = await open_log(tmp_path)
        try:
            assert audit.index.size == 11
            await audit.record(lookup(100, providers=("tax",)))
            hits, _ = audit.index.search(Scope.PROVIDER, "tax", Query(), audit.index.sync())
            assert [h.index for h in hits] == [10, 11]
            hits, _ = audit.index.search(Scope.ALL, "", Query(), 12)
            assert [h.index for h in hits] == list(range(12))
        finally:
            await audit.close()

    run(second())


def test_a_failed_append_fails_the_caller(tmp_path: Path) -> None:
    async def go() -> None:
        audit = await open_log(tmp_path)

        def broken(entries: Any) -> int:
            raise OSError("disk full")

        audit.store.append_batch = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(Exception, match="could not append"):
                await audit.record(lookup(1))
        finally:
            await audit.close()

    run(go())


@pytest.fixture
def pg_prefix() -> Iterator[str]:
    from veil.tlog.schema import Tables

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield prefix
    engine = create_engine(POSTGRES_URL)
    Tables(f"{prefix}log_").metadata.drop_all(engine)
    IndexTables(f"{prefix}index_").metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_log_and_index(tmp_path: Path, pg_prefix: str) -> None:
    async def go() -> None:
        audit = await AuditLog.open(
            POSTGRES_URL,
            LogSettings(key_path=tmp_path / "log.key", origin="pg.veil/log"),
            actor="platform/platform",
            log_prefix=f"{pg_prefix}log_",
            index_prefix=f"{pg_prefix}index_",
        )
        try:
            indices = await asyncio.gather(
                *(
                    audit.record(lookup(i, providers=("tax",) if i % 2 else ("court",)))
                    for i in range(300)
                )
            )
            assert sorted(indices) == list(range(300))
            cp = verify_checkpoint(await audit.checkpoint(fresh=True), audit.signer.verifier())
            assert cp.size == 300 and cp.root_hash == audit.store.root(300)
            assert audit.index.sync() == 300
            hits, _ = audit.index.search(Scope.PROVIDER, "tax", Query(page_size=1000), 300)
            assert [h.index for h in hits] == list(range(1, 300, 2))
        finally:
            await audit.close()

    run(go())


CRASH_CHILD = """
import asyncio, sys
from pathlib import Path
from platform_node.audit import AuditLog, LogSettings
from veil.audit.entry import AuditEvent

async def main() -> None:
    d, tag = Path(sys.argv[1]), sys.argv[2]
    settings = LogSettings(d / "log.key", "crash.veil/log", checkpoint_interval_s=0.02)
    audit = await AuditLog.open(f"sqlite:///{d / 'p.db'}", settings, actor="platform/p")
    async def one(i: int) -> None:
        event = AuditEvent(
            type="enterprise.lookup", actor="institution/bank", request_id=f"{tag}-{i}"
        )
        print(await audit.record(event), f"{tag}-{i}", flush=True)
    n = 0
    while True:
        await asyncio.gather(*(one(n + k) for k in range(40)))
        n += 40

asyncio.run(main())
"""


def test_sigkill_while_recording_loses_nothing_acknowledged(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    acknowledged: dict[int, str] = {}
    for round_ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_CHILD, str(tmp_path), f"round{round_}"],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(150):
            line = child.stdout.readline()
            assert line, "child exited early"
            index, rid = line.split()
            acknowledged[int(index)] = rid
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():
            if len(line.split()) == 2:
                index, rid = line.split()
                acknowledged[int(index)] = rid

        async def reopen() -> None:
            settings = LogSettings(tmp_path / "log.key", "crash.veil/log")
            audit = await AuditLog.open(
                f"sqlite:///{tmp_path / 'p.db'}", settings, actor="platform/p"
            )
            try:
                size = audit.store.size()
                assert size > max(acknowledged)
                for index, rid in acknowledged.items():
                    assert decode_entry(audit.store.entry(index)).request_id == rid
                assert audit.index.size == size  # the index caught up with the log
                hits, _ = audit.index.search(Scope.ALL, "", Query(page_size=1000), size)
                assert [h.index for h in hits] == list(range(min(size, 1000)))
                # signing continues the pre-crash chain (the store refuses otherwise)
                cp = verify_checkpoint(await audit.checkpoint(fresh=True), audit.signer.verifier())
                assert cp.size == size
            finally:
                await audit.close()

        run(reopen())


def test_scope_enum_matches_the_wire_contract() -> None:
    from veil.v1 import audit_pb2, log_pb2

    enum = audit_pb2.DESCRIPTOR.enum_types_by_name["AuditScope"]
    assert enum.values_by_number[0].name == "AUDIT_SCOPE_UNSPECIFIED"
    assert {v.number: v.name.removeprefix("AUDIT_SCOPE_") for v in enum.values} == {
        s.value: s.name for s in Scope
    }
    assert list(audit_pb2.DESCRIPTOR.services_by_name) == ["AuditService"]
    assert list(log_pb2.DESCRIPTOR.services_by_name) == ["LogService"]
    assert audit_pb2.DESCRIPTOR.package == log_pb2.DESCRIPTOR.package == "veil.v1"
