"""A search index over the transparency log's entries (by enterprise, provider, actor …).

The log itself (:class:`veil.tlog.LogStore`) is the authority; this index is derived
data, so it lives in its own tables and is rebuilt from the log whenever it is
behind: after a crash between a log commit and the index write, when another
process appended to the same log, or when the index tables are new.  A row that is
missing from the index only delays search results; nothing here can change what
the log proves.

Each search is one indexed range scan ordered by leaf index (``(enterprise, idx)``,
``(actor, idx)``, ``(provider, idx)`` …), joined to the log's leaves for the bytes,
so paging by index is cheap at any log size.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    event,
    func,
    insert,
    select,
)

from veil.audit.entry import MalformedEntry, Scope, decode_entry
from veil.errors import InvalidArgument
from veil.tlog import LogStore
from veil.tlog.schema import WRITE_OPTION, Tables, make_engine

log = logging.getLogger("veil.platform.audit")

SYNC_CHUNK = 1000
INVALID_TYPE = "invalid"
"""Index type of a leaf that is not a valid entry (only ``ALL`` scope sees it)."""

_Key = BigInteger().with_variant(Integer(), "sqlite")


def _sqlite_normal_sync(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class IndexTables:
    def __init__(self, prefix: str) -> None:
        self.metadata = MetaData()
        self.entries = Table(
            f"{prefix}entries",
            self.metadata,
            Column("idx", _Key, primary_key=True, autoincrement=False),
            Column("type", String(64), nullable=False),
            Column("at", String(32), nullable=False),
            Column("actor", String(160), nullable=False),
            Column("enterprise", String(18), nullable=False),
            Column("purpose", String(128), nullable=False),
            Column("grant_id", String(128), nullable=False),
            Column("request_id", String(128), nullable=False),
        )
        e = self.entries.c
        for col in (e.enterprise, e.actor, e.purpose, e.request_id, e.at):
            Index(f"ix_{prefix}{col.name}_idx", col, e.idx)
        self.providers = Table(
            f"{prefix}providers",
            self.metadata,
            Column("provider", String(64), primary_key=True),
            Column("idx", _Key, primary_key=True, autoincrement=False),
            Column("answered", Boolean, nullable=False),
        )


@dataclass(frozen=True)
class Query:
    """Filters of a search (all that are set must match)."""

    enterprise: str = ""
    provider: str = ""
    actor: str = ""
    purpose: str = ""
    request_id: str = ""
    types: Sequence[str] = field(default_factory=tuple)
    since: str = ""  # fixed-width RFC 3339 (veil.audit.entry.format_time)
    until: str = ""
    start_index: int = 0
    page_size: int = 100


@dataclass(frozen=True)
class Hit:
    index: int
    leaf: bytes
    leaf_hash: bytes


def _fields(leaf: bytes, trusted: bool) -> dict[str, Any]:
    """The indexed fields of an entry.  ``trusted`` entries were encoded by this
    process a moment ago, so the full canonical-form check is skipped (it costs more
    than the rest of indexing); entries read back from the store are checked."""
    if not trusted:
        return decode_entry(leaf).to_json()
    obj: dict[str, Any] = json.loads(leaf)
    return obj


def _rows(
    index: int, leaf: bytes, trusted: bool = False
) -> tuple[dict[str, object], list[dict[str, object]]]:
    try:
        e = _fields(leaf, trusted)
    except MalformedEntry:
        log.error("log entry %d is not a valid entry; indexed as %r", index, INVALID_TYPE)
        row: dict[str, object] = {"idx": index, "type": INVALID_TYPE, "at": ""}
        row.update(dict.fromkeys(("actor", "enterprise", "purpose", "grant_id", "request_id"), ""))
        return row, []
    row = {"idx": index, "at": e["time"], "grant_id": e["grant"]}
    for key in ("type", "actor", "enterprise", "purpose", "request_id"):
        row[key] = e[key]
    providers = [{"provider": p, "idx": index, "answered": True} for p in e["providers"]]
    providers += [{"provider": p, "idx": index, "answered": False} for p in e["providers_failed"]]
    return row, providers


class AuditIndex:
    """The index of one log.  Thread-safe; writes are serialised by one lock."""

    def __init__(self, url: str, store: LogStore, *, log_prefix: str, prefix: str) -> None:
        self.engine: Engine = make_engine(url)
        if self.engine.dialect.name == "sqlite":
            # Derived data: WAL + NORMAL stays consistent after a crash and may only
            # lose the last commits, which the next sync re-indexes from the log.
            event.listen(self.engine, "connect", _sqlite_normal_sync)
        self.store = store
        self.t = IndexTables(prefix)
        self.leaves = Tables(log_prefix).leaves
        self.t.metadata.create_all(self.engine)
        self._lock = threading.Lock()
        with self.engine.connect() as conn:
            top = conn.execute(select(func.max(self.t.entries.c.idx))).scalar()
        self._size = 0 if top is None else int(top) + 1

    def close(self) -> None:
        self.engine.dispose()

    @property
    def size(self) -> int:
        """Entries ``[0, size)`` are indexed."""
        return self._size

    def _insert(self, first: int, leaves: Sequence[bytes], trusted: bool = False) -> None:
        entries, providers = [], []
        for i, leaf in enumerate(leaves):
            row, prov = _rows(first + i, leaf, trusted)
            entries.append(row)
            providers.extend(prov)
        with self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                conn.execute(insert(self.t.entries), entries)
                if providers:
                    conn.execute(insert(self.t.providers), providers)
        self._size = first + len(leaves)

    def _sync_locked(self, upto: int) -> None:
        while self._size < upto:
            stop = min(upto, self._size + SYNC_CHUNK)
            self._insert(self._size, self.store.entries(self._size, stop))

    def sync(self) -> int:
        """Index everything the log holds now; returns the indexed size."""
        with self._lock:
            self._sync_locked(self.store.size())
            return self._size

    def add(self, first: int, leaves: Sequence[bytes]) -> None:
        """Index a batch the sequencer just committed at ``first`` (catching up first
        if another writer appended before it; skipping what a sync already did)."""
        with self._lock:
            self._sync_locked(first)
            skip = self._size - first
            if skip < len(leaves):
                self._insert(first + skip, leaves[skip:], trusted=True)

    def search(self, scope: Scope, subject: str, q: Query, tree_size: int) -> tuple[list[Hit], int]:
        """One page of matching entries below ``tree_size``; returns (hits, next index
        or 0)."""
        if scope == Scope.UNSPECIFIED:
            raise InvalidArgument("search scope is unspecified")
        if scope != Scope.ALL and not subject:
            raise InvalidArgument("a restricted search scope needs a subject")
        stmt = self._statement(scope, subject, q, tree_size)
        if stmt is None:
            return [], 0
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.limit(q.page_size + 1)).all()
        hits = [Hit(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows[: q.page_size]]
        next_index = int(rows[q.page_size][0]) if len(rows) > q.page_size else 0
        return hits, next_index

    def _statement(
        self, scope: Scope, subject: str, q: Query, tree_size: int
    ) -> Select[Any] | None:
        e, leaves, p = self.t.entries, self.leaves, self.t.providers
        provider = q.provider
        if scope == Scope.PROVIDER:
            if provider and provider != subject:
                return None
            provider = subject
        enterprise, actor = q.enterprise, q.actor
        for wanted, given, name in (
            (Scope.ENTERPRISE, enterprise, "enterprise"),
            (Scope.INSTITUTION, actor, "actor"),
        ):
            if scope == wanted:
                if given and given != subject:
                    return None
                if name == "enterprise":
                    enterprise = subject
                else:
                    actor = subject
        # Drive the scan from the most selective index: (provider, idx) when a
        # provider is asked for, otherwise the entries table's own indexes.
        if provider:
            key = p.c.idx
            stmt = (
                select(p.c.idx, leaves.c.data, leaves.c.leaf_hash)
                .join(e, e.c.idx == p.c.idx)
                .where(p.c.provider == provider)
            )
        else:
            key = e.c.idx
            stmt = select(e.c.idx, leaves.c.data, leaves.c.leaf_hash)
        stmt = stmt.join(leaves, leaves.c.idx == key).where(key >= q.start_index, key < tree_size)
        for col, value in (
            (e.c.enterprise, enterprise),
            (e.c.actor, actor),
            (e.c.purpose, q.purpose),
            (e.c.request_id, q.request_id),
        ):
            if value:
                stmt = stmt.where(col == value)
        if q.types:
            stmt = stmt.where(e.c.type.in_(list(q.types)))
        if q.since:
            stmt = stmt.where(e.c.at >= q.since)
        if q.until:
            stmt = stmt.where(e.c.at < q.until)
        return stmt.order_by(key)
