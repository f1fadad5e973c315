"""The log store: append-only RFC 9162 log, proofs from stored nodes, checkpoints.

Guarantees:

* **All-or-nothing batches.** :meth:`LogStore.append_batch` writes the leaves, the
  perfect-subtree nodes they complete and the new head size in one transaction. A
  crash before ``COMMIT`` leaves no trace; after it, the batch is durable.
* **One sequencer.** Writers serialise on the ``head`` row, so indices are dense
  and never reused, even with several processes pointing at the same database.
* **Cheap proofs.** Inclusion and consistency proofs, and roots of past sizes, read
  only the O(log n) stored nodes they need, in one query per table.
* **No forks.** :meth:`LogStore.checkpoint` verifies that the tree it is about to
  sign is consistent with the last checkpoint it signed (recomputing the proof
  from storage) and refuses otherwise: a rewritten prefix becomes an error instead
  of a signed, split view of history.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from veil._internal.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeID,
    append_leaf_hashes,
    consistency_proof,
    consistency_proof_node_ids,
    inclusion_proof,
    inclusion_proof_node_ids,
    leaf_hash,
    root_hash,
    root_node_ids,
    verify_consistency,
)
from veil.checkpoint import Checkpoint, Signer, open_note, sign_checkpoint
from veil.errors import (
    BeyondTreeSize,
    InvalidArgument,
    InvalidTreeRange,
    LeafNotFound,
    LogInconsistent,
    MalformedHash,
    NoteError,
    NotFound,
    ProofError,
)
from veil.tlog.schema import WRITE_OPTION, Tables, make_engine, node_key

_HEAD_ID = 1

log = logging.getLogger("veil.tlog")


def _checkpoint_of(note: bytes) -> Checkpoint:
    """The checkpoint body of a stored note (our own, so not re-verified here)."""
    text = note.decode("utf-8")
    return Checkpoint.parse(text[: text.rfind("\n\n") + 1])


def _signed_by(note: bytes, signer: Signer, origin: str) -> bool:
    """Whether ``note`` is a checkpoint for ``origin`` validly signed by ``signer``."""
    try:
        return Checkpoint.parse(open_note(note, [signer.verifier()]).text).origin == origin
    except NoteError:
        return False


class LogStore:
    """A persistent transparency log in the database at ``url`` (SQLAlchemy URL).

    ``table_prefix`` names the log's tables; tables are created if missing.  One
    instance is thread-safe; several instances (or processes) may share a log, with
    writes serialised by the database.
    """

    def __init__(self, url: str, *, table_prefix: str = "tlog_") -> None:
        self._engine: Engine = make_engine(url)
        self._t = Tables(table_prefix)
        # every append runs these: built once, SQLAlchemy reuses their compiled form
        head = self._t.head
        self._read_head = select(head.c.size).where(head.c.id == _HEAD_ID)
        self._lock_head = self._read_head.with_for_update()
        self._move_head = (
            update(head).where(head.c.id == _HEAD_ID).values(size=bindparam("new_size"))
        )
        self._insert_leaves = insert(self._t.leaves)
        self._insert_nodes = insert(self._t.nodes)
        self._lock = threading.Lock()
        self._t.metadata.create_all(self._engine)
        with self._write() as conn:
            if conn.execute(select(self._t.head.c.size)).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(self._t.head).values(id=_HEAD_ID, size=0))
                except IntegrityError:  # another process created it first
                    pass
        self._size = -1  # frontier cache not loaded
        self._frontier: list[bytes] = []

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _head_size(self, conn: Connection, *, lock: bool = False) -> int:
        size = conn.execute(self._lock_head if lock else self._read_head).scalar_one()
        return int(size)

    def _nodes(self, conn: Connection, ids: Sequence[NodeID]) -> dict[NodeID, bytes]:
        """Fetch perfect-subtree hashes: level 0 from ``leaves``, the rest from
        ``nodes``.  A missing row means the store is corrupt, never a user error."""
        out: dict[NodeID, bytes] = {}
        leaf_ids = [index for level, index in ids if level == 0]
        keys = {node_key(level, index): (level, index) for level, index in ids if level > 0}
        if leaf_ids:
            t = self._t.leaves
            for idx, h in conn.execute(select(t.c.idx, t.c.leaf_hash).where(t.c.idx.in_(leaf_ids))):
                out[(0, int(idx))] = bytes(h)
        if keys:
            t2 = self._t.nodes
            for key, h in conn.execute(select(t2.c.id, t2.c.hash).where(t2.c.id.in_(keys))):
                out[keys[int(key)]] = bytes(h)
        missing = [i for i in ids if i not in out]
        if missing:
            raise LogInconsistent(f"log storage is missing tree nodes {missing[:4]}")
        return out

    def _root(self, conn: Connection, size: int) -> bytes:
        nodes = self._nodes(conn, root_node_ids(size))
        return root_hash(size, lambda level, index: nodes[(level, index)])

    # -- writing --------------------------------------------------------------

    def append(self, entry: bytes) -> int:
        """Append one entry; returns its index.  Prefer :meth:`append_batch`."""
        return self.append_batch([entry])

    def append_batch(
        self,
        entries: Sequence[bytes],
        along: Sequence[Callable[[Connection], None]] = (),
    ) -> int:
        """Append ``entries`` atomically; returns the index of the first one.

        When this returns, the entries are committed (durably, on SQLite with
        ``synchronous=FULL``); if it raises, none of them is in the log.

        ``along``: writes of the caller's own that belong with these entries (a use
        recorded in a registry kept in the same database), run in the same transaction
        after the entries, each in a savepoint of its own: one that raises is rolled
        back alone (and logged) and the batch still commits: the log entry is the record
        of the event, these are indexes of it.
        """
        if not entries:
            raise InvalidArgument("append_batch needs at least one entry")
        data = []
        for e in entries:
            if not isinstance(e, bytes | bytearray | memoryview):
                raise InvalidArgument(f"log entries must be bytes, not {type(e).__name__}")
            data.append(bytes(e))
        hashes = [leaf_hash(d) for d in data]
        with self._lock:
            with self._write() as conn:
                size = self._head_size(conn, lock=True)
                if size != self._size:  # first write, or another writer appended
                    ids = root_node_ids(size)
                    nodes = self._nodes(conn, ids)
                    self._frontier, self._size = [nodes[i] for i in ids], size
                frontier = list(self._frontier)
                new_nodes = append_leaf_hashes(frontier, size, hashes)
                conn.execute(
                    self._insert_leaves,
                    [
                        {"idx": size + i, "leaf_hash": h, "data": d}
                        for i, (h, d) in enumerate(zip(hashes, data, strict=True))
                    ],
                )
                rows = [{"id": node_key(lv, ix), "hash": h} for lv, ix, h in new_nodes if lv > 0]
                if rows:
                    conn.execute(self._insert_nodes, rows)
                conn.execute(self._move_head, {"new_size": size + len(data)})
                for write in along:
                    try:
                        with conn.begin_nested():
                            write(conn)
                    except Exception:  # rolled back to its savepoint; the rest commits
                        log.exception("a write along with log entries failed; rolled back alone")
            # Committed: only now does the cached frontier move forward.
            self._frontier, self._size = frontier, size + len(data)
        return size

    # -- reading --------------------------------------------------------------

    def size(self) -> int:
        """The committed tree size."""
        with self._read() as conn:
            return self._head_size(conn)

    def _check_size(self, conn: Connection, size: int) -> int:
        current = self._head_size(conn)
        if size < 0:
            raise InvalidTreeRange(f"tree size {size} is negative")
        if size > current:
            raise BeyondTreeSize(f"tree size {size} is beyond the log's size {current}")
        return current

    def root(self, size: int | None = None) -> bytes:
        """The RFC 9162 root hash at ``size`` (default: now); size 0 is the empty tree."""
        with self._read() as conn:
            if size is None:
                size = self._head_size(conn)
            self._check_size(conn, size)
            return self._root(conn, size) if size else EMPTY_ROOT

    def entry(self, index: int) -> bytes:
        """The exact bytes of entry ``index``."""
        if index < 0:
            raise InvalidTreeRange(f"entry index {index} is negative")
        return self.entries(index, index + 1)[0]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)``; ``end`` may not exceed the current size."""
        if not 0 <= start <= end:
            raise InvalidTreeRange(f"invalid entry range [{start}, {end})")
        with self._read() as conn:
            self._check_size(conn, end)
            t = self._t.leaves
            rows = conn.execute(
                select(t.c.data).where(t.c.idx >= start, t.c.idx < end).order_by(t.c.idx)
            ).all()
        if len(rows) != end - start:
            raise LogInconsistent(f"log storage is missing entries in [{start}, {end})")
        return [bytes(r[0]) for r in rows]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of entries ``[start, end)``."""
        if not 0 <= start <= end:
            raise InvalidTreeRange(f"invalid entry range [{start}, {end})")
        with self._read() as conn:
            self._check_size(conn, end)
            t = self._t.leaves
            rows = conn.execute(
                select(t.c.leaf_hash).where(t.c.idx >= start, t.c.idx < end).order_by(t.c.idx)
            ).all()
        return [bytes(r[0]) for r in rows]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 audit path of leaf ``index`` in the tree of ``size``."""
        with self._read() as conn:
            self._check_size(conn, size)
            return self._inclusion_proof(conn, index, size)

    def _inclusion_proof(self, conn: Connection, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size:
            raise InvalidTreeRange(f"leaf index {index} is not in the tree of size {size}")
        nodes = self._nodes(conn, inclusion_proof_node_ids(index, size))
        return inclusion_proof(index, size, lambda level, i: nodes[(level, i)])

    def inclusion_proof_by_leaf_hash(self, hash_: bytes, size: int) -> tuple[int, list[bytes]]:
        """``(index, audit path)`` of the first leaf with hash ``hash_`` below ``size``."""
        if len(hash_) != HASH_SIZE:
            raise MalformedHash(f"leaf hash is {len(hash_)} bytes, want {HASH_SIZE}")
        with self._read() as conn:
            self._check_size(conn, size)
            t = self._t.leaves
            index = conn.execute(
                select(t.c.idx)
                .where(t.c.leaf_hash == hash_, t.c.idx < size)
                .order_by(t.c.idx)
                .limit(1)
            ).scalar()
            if index is None:
                raise LeafNotFound(f"no leaf {hash_.hex()} in the tree of size {size}")
            return int(index), self._inclusion_proof(conn, int(index), size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The RFC 9162 proof that the tree of ``size1`` is a prefix of ``size2``."""
        if size1 <= 0 or size1 > size2:
            raise InvalidTreeRange(f"no consistency proof from size {size1} to size {size2}")
        with self._read() as conn:
            self._check_size(conn, size2)
            nodes = self._nodes(conn, consistency_proof_node_ids(size1, size2))
            return consistency_proof(size1, size2, lambda level, i: nodes[(level, i)])

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self, signer: Signer, *, origin: str | None = None) -> bytes:
        """Sign a checkpoint of the current tree (origin defaults to the key name).

        Before signing, the current root is checked against the last signed
        checkpoint with a consistency proof computed from storage.  Since every
        checkpoint is checked against its predecessor, all signed checkpoints form
        one consistent chain.  Raises :class:`LogInconsistent` rather than sign a
        fork.  Re-signing an unchanged tree returns the stored note.
        """
        origin = signer.name if origin is None else origin
        t = self._t.checkpoints
        with self._lock, self._write() as conn:
            size = self._head_size(conn, lock=True)
            root = self._root(conn, size) if size else EMPTY_ROOT
            last = conn.execute(
                select(t.c.size, t.c.root_hash, t.c.note).order_by(t.c.size.desc()).limit(1)
            ).first()
            if last is not None:
                last_size, last_note = int(last[0]), bytes(last[2])
                self._check_consistent_with(conn, last_size, bytes(last[1]), last_note, size, root)
                if last_size == size and _signed_by(last_note, signer, origin):
                    return last_note
            note = sign_checkpoint(Checkpoint(origin, size, root), signer)
            row = {"root_hash": root, "note": note, "signed_at": datetime.now(UTC)}
            if last is not None and int(last[0]) == size:
                conn.execute(update(t).where(t.c.size == size).values(**row))
            else:
                conn.execute(insert(t).values(size=size, **row))
            return note

    def _check_consistent_with(
        self,
        conn: Connection,
        last_size: int,
        last_root: bytes,
        last_note: bytes,
        size: int,
        root: bytes,
    ) -> None:
        """Raise :class:`LogInconsistent` unless the tree (``size``, ``root``) extends
        the last signed checkpoint, as shown by a proof recomputed from storage."""
        try:
            signed = _checkpoint_of(last_note)
        except (NoteError, UnicodeDecodeError) as exc:
            raise LogInconsistent(f"stored checkpoint at size {last_size} is unreadable") from exc
        if signed.size != last_size or signed.root_hash != last_root:
            raise LogInconsistent(f"stored checkpoint at size {last_size} was altered")
        if last_size > size:
            raise LogInconsistent(f"log shrank from signed size {last_size} to {size}")
        proof: list[bytes] = []
        if 0 < last_size < size:
            nodes = self._nodes(conn, consistency_proof_node_ids(last_size, size))
            proof = consistency_proof(last_size, size, lambda level, i: nodes[(level, i)])
        try:
            verify_consistency(last_size, size, proof, signed.root_hash, root)
        except ProofError as exc:
            raise LogInconsistent(
                f"refusing to sign: tree of size {size} is inconsistent with the "
                f"checkpoint signed at size {last_size} ({exc.message})"
            ) from exc

    def latest_checkpoint(self) -> bytes | None:
        """The most recent signed checkpoint note, or ``None`` before the first."""
        t = self._t.checkpoints
        with self._read() as conn:
            note = conn.execute(select(t.c.note).order_by(t.c.size.desc()).limit(1)).scalar()
        return None if note is None else bytes(note)

    def checkpoint_at(self, size: int) -> bytes:
        """The signed checkpoint note for tree ``size``."""
        t = self._t.checkpoints
        with self._read() as conn:
            note = conn.execute(select(t.c.note).where(t.c.size == size)).scalar()
        if note is None:
            raise NotFound(f"no checkpoint was signed at tree size {size}")
        return bytes(note)
