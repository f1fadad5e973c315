"""The platform's transparency log: one sequencer, batched appends, signed checkpoints.

Every use of data is recorded with ``await audit.record(event)`` *before* its result
is handed out; the call returns the entry's log index, which the result carries so
that its recipient can demand an inclusion proof.  If the append fails, the caller
fails too: there is no unlogged use.

Batching (group commit).  ``record`` enqueues the canonical entry bytes and waits.
One sequencer task takes the first waiting entry, lingers ``batch_wait_s`` (0 by
default, at most 50 ms) for more, drains up to ``batch_max`` (500) and appends them
in one database transaction (:meth:`veil.tlog.LogStore.append_batch`: leaves, tree
nodes and head size, all or nothing); only after COMMIT is each waiter woken with
its index.  While one batch is being written the next one accumulates, so batch size
grows with load and the fsync cost is shared without any lingering (a linger only
adds its length to every request's latency when the log is not busy; keep it 0 unless
the disk's fsync is far slower than a request): an acknowledged entry is durable, an
unacknowledged one may be lost whole but never half-written.  The search index
(:mod:`platform_node.audit_index`) is written afterwards, off the acknowledgement
path (every ``INDEX_DELAY_S`` at most, many batches in one transaction), and catches
up from the log after a crash; searches sync it first.

Checkpoints.  A background task signs a C2SP checkpoint with the platform's Ed25519
log key whenever the tree grew (every ``checkpoint_interval_s``, 1 s by default),
and :meth:`AuditLog.checkpoint` signs on demand.  The store refuses to sign a tree
inconsistent with the previous checkpoint, so the platform cannot sign a fork even
if its database was rewritten.

Configuration (platform node TOML)::

    [log]
    key = "log.key"                 # Ed25519 signer key file (0600); created if absent
    origin = "veil.example/log"     # checkpoint origin = key name
    checkpoint_interval_s = 1.0
    batch_max = 500
    batch_wait_ms = 0
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from platform_node.audit_index import AuditIndex
from veil.audit.entry import AuditEvent, EventType, encode_entry, lookup_result_digest
from veil.checkpoint import Signer, is_valid_key_name
from veil.config import NodeConfig
from veil.errors import ConfigError, LogInconsistent, NoteError, Unavailable, VeilError
from veil.server import current_peer
from veil.tlog import LogStore
from veil.v1 import gateway_pb2, platform_pb2

log = logging.getLogger("veil.platform.audit")

LOG_TABLE_PREFIX = "audit_log_"
INDEX_TABLE_PREFIX = "audit_index_"
MAX_BATCH_WAIT_S = 0.05
CLOSE_TIMEOUT_S = 10.0
INDEX_DELAY_S = 0.05


@dataclass(frozen=True)
class LogSettings:
    key_path: Path
    origin: str
    checkpoint_interval_s: float = 1.0
    batch_max: int = 500
    batch_wait_s: float = 0.0


def log_settings(config: NodeConfig) -> LogSettings:
    """The ``[log]`` section of the platform's configuration."""
    section = config.section("log")
    path = str(config.path)

    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ConfigError(path, f"log.{key}", f"must be a number in [{lo:g}, {hi:g}]")
        return float(value)

    key = section.get("key", "log.key")
    if not isinstance(key, str) or not key:
        raise ConfigError(path, "log.key", "must be the path of the log signing key file")
    key_path = Path(key) if Path(key).is_absolute() else config.path.parent / key
    origin = section.get("origin", f"{config.name}.veil/log")
    if not isinstance(origin, str) or not is_valid_key_name(origin):
        raise ConfigError(path, "log.origin", "must be non-empty, without spaces or '+'")
    return LogSettings(
        key_path=key_path,
        origin=origin,
        checkpoint_interval_s=number("checkpoint_interval_s", 1.0, 0.05, 3600),
        batch_max=int(number("batch_max", 500, 1, 10_000)),
        batch_wait_s=number("batch_wait_ms", 0, 0, MAX_BATCH_WAIT_S * 1000) / 1000,
    )


def load_or_create_signer(path: Path, origin: str) -> Signer:
    """The log signing key; generated (file mode 0600) on first start."""
    if path.exists():
        try:
            signer = Signer.load(path)
        except NoteError as exc:
            raise ConfigError(str(path), "log.key", exc.message) from None
        if signer.name != origin:
            raise ConfigError(
                str(path), "log.origin", f"is {origin!r} but the key is named {signer.name!r}"
            )
        return signer
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate(origin)
    signer.save(path)
    log.warning(
        "generated a new log signing key %s; publish its verifier key: %s",
        path,
        signer.verifier().key_string,
    )
    return signer


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "OK"
    return error.code.name if isinstance(error, VeilError) else "INTERNAL"


@dataclass
class _Pending:
    leaf: bytes
    done: asyncio.Future[int]
    along: Callable[[Connection], None] | None = None


class AuditLog:
    """The platform's log: ``record`` events, sign checkpoints, serve reads."""

    def __init__(
        self,
        store: LogStore,
        index: AuditIndex,
        signer: Signer,
        *,
        actor: str,
        batch_max: int = 500,
        batch_wait_s: float = 0.0,
        checkpoint_interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.index = index
        self.signer = signer
        self.actor = actor
        self.batch_max = batch_max
        self.batch_wait_s = min(batch_wait_s, MAX_BATCH_WAIT_S)
        self.checkpoint_interval_s = checkpoint_interval_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._sign_lock = asyncio.Lock()
        self._note = b""
        self._signed_size = -1
        self._closed = False
        self._unacknowledged = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._to_index: list[tuple[int, list[bytes]]] = []
        self._index_due = asyncio.Event()
        self._indexing: asyncio.Future[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        settings: LogSettings,
        *,
        actor: str,
        log_prefix: str = LOG_TABLE_PREFIX,
        index_prefix: str = INDEX_TABLE_PREFIX,
    ) -> AuditLog:
        """Open (creating tables and key if needed), catch the index up, sign, start."""

        def build() -> AuditLog:
            signer = load_or_create_signer(settings.key_path, settings.origin)
            store = LogStore(url, table_prefix=log_prefix)
            index = AuditIndex(url, store, log_prefix=log_prefix, prefix=index_prefix)
            index.sync()
            return cls(
                store,
                index,
                signer,
                actor=actor,
                batch_max=settings.batch_max,
                batch_wait_s=settings.batch_wait_s,
                checkpoint_interval_s=settings.checkpoint_interval_s,
            )

        audit = await asyncio.to_thread(build)
        await audit.start()
        return audit

    async def start(self) -> None:
        await self.checkpoint(fresh=True)
        self._tasks = [
            asyncio.create_task(self._sequencer(), name="audit-sequencer"),
            asyncio.create_task(self._checkpointer(), name="audit-checkpointer"),
            asyncio.create_task(self._indexer(), name="audit-indexer"),
        ]

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier().key_string

    @property
    def origin(self) -> str:
        return self.signer.name

    # -- writing ------------------------------------------------------------------------

    async def record(
        self, event: AuditEvent, *, along: Callable[[Connection], None] | None = None
    ) -> int:
        """Append ``event`` (timestamped now) and return its index once durable.

        ``along`` writes the caller's own record of the event (a grant's use, a cached
        answer) in the same transaction as the entry (:meth:`LogStore.append_batch`):
        one commit instead of two on the request's path, and never one without the
        other.  The platform keeps its registries and its log in one database.
        """
        if self._closed:
            raise Unavailable("the transparency log is shutting down")
        leaf = encode_entry(event, dt.datetime.now(dt.UTC))
        pending = _Pending(leaf, asyncio.get_running_loop().create_future(), along)
        self._unacknowledged += 1
        self._idle.clear()
        self._queue.put_nowait(pending)
        return await asyncio.shield(pending.done)

    def _index(self, batches: list[tuple[int, list[bytes]]]) -> None:
        """Runs in a worker thread, after the batches were acknowledged.  The index is
        derived data: if this fails (or the process dies first), the next sync
        re-indexes from the log (searches sync first, so they never miss an entry)."""
        runs: list[tuple[int, list[bytes]]] = []
        for first, leaves in batches:  # consecutive batches: one transaction
            if runs and runs[-1][0] + len(runs[-1][1]) == first:
                runs[-1][1].extend(leaves)
            else:
                runs.append((first, list(leaves)))
        for first, leaves in runs:
            try:
                self.index.add(first, leaves)
            except Exception:
                log.exception("indexing log entries %d..%d failed", first, first + len(leaves) - 1)

    async def _indexer(self) -> None:
        """Index acknowledged entries every ``INDEX_DELAY_S`` at most: one transaction
        for many batches, and none competing with the requests they acknowledged."""
        while True:
            await self._index_due.wait()
            await asyncio.sleep(INDEX_DELAY_S)
            self._index_due.clear()
            batches, self._to_index = self._to_index, []
            if batches:  # shielded: close() waits for it rather than racing it
                self._indexing = asyncio.ensure_future(asyncio.to_thread(self._index, batches))
                await asyncio.shield(self._indexing)

    async def _sequencer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self.batch_wait_s:
                await asyncio.sleep(self.batch_wait_s)
            while len(batch) < self.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            leaves = [p.leaf for p in batch]
            along = [p.along for p in batch if p.along is not None]
            try:
                first = await asyncio.to_thread(self.store.append_batch, leaves, along)
            except Exception as exc:
                log.exception("appending %d log entries failed", len(batch))
                error = Unavailable(f"the transparency log could not append: {type(exc).__name__}")
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(error)
            else:
                for i, p in enumerate(batch):
                    if not p.done.done():
                        p.done.set_result(first + i)
                # Index off the acknowledgement path, later and in bulk (_indexer).
                self._to_index.append((first, leaves))
                self._index_due.set()
            self._unacknowledged -= len(batch)
            if not self._unacknowledged:
                self._idle.set()

    # -- checkpoints --------------------------------------------------------------------

    async def checkpoint(self, *, fresh: bool = False) -> bytes:
        """The latest signed checkpoint note; with ``fresh``, sign the current tree first
        if it grew since the last signature."""
        if not fresh and self._note:
            return self._note
        async with self._sign_lock:
            size = await asyncio.to_thread(self.store.size)
            if size != self._signed_size or not self._note:
                try:
                    self._note = await asyncio.to_thread(self.store.checkpoint, self.signer)
                    self._signed_size = size
                except LogInconsistent:
                    log.critical(
                        "REFUSING TO SIGN: the stored log is inconsistent with its last checkpoint"
                    )
                    latest = await asyncio.to_thread(self.store.latest_checkpoint)
                    if latest is None:
                        raise
                    self._note = latest
        return self._note

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint(fresh=True)
            except Exception:
                log.exception("signing a checkpoint failed")

    async def close(self) -> None:
        """Append what is queued, sign a last checkpoint, stop the tasks, close stores."""
        self._closed = True
        if self._tasks:
            try:
                await asyncio.wait_for(self._idle.wait(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.error("%d log entries were not appended before shutdown", self._unacknowledged)
        with contextlib.suppress(Exception):
            await self.checkpoint(fresh=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._indexing is not None:
            with contextlib.suppress(Exception):
                await self._indexing
        if self._to_index:  # what the cancelled indexer had not done yet
            batches, self._to_index = self._to_index, []
            await asyncio.to_thread(self._index, batches)
        self.index.close()
        self.store.close()

    # -- events the platform records ----------------------------------------------------

    def actor_of(self, institution_id: str = "") -> str:
        """``institution/<id>`` for a forwarded request, else the calling peer
        (an administrator), else the platform itself (scheduled work)."""
        if institution_id:
            return f"institution/{institution_id}"
        peer = current_peer.get()
        return f"{peer.role}/{peer.name}" if peer is not None else self.actor

    async def lookup(
        self,
        request: platform_pb2.LookupEnterpriseRequest,
        request_id: str,
        providers: Sequence[str] = (),
        answers: Sequence[object] = (),
        response: platform_pb2.LookupEnterpriseResponse | None = None,
    ) -> int:
        """Record one LookupEnterprise: who asked about which enterprise, which
        providers were asked (and which answered), and the hash of the result.

        ``answers`` are ``asyncio.gather(..., return_exceptions=True)`` results in
        the order of ``providers``.  Without providers and response, the lookup
        ended NOT_FOUND before any provider was asked.
        """
        failed = [
            p for p, a in zip(providers, answers, strict=True) if isinstance(a, BaseException)
        ]
        error = next((a for a in answers if isinstance(a, BaseException)), None)
        digest = ""
        if response is not None:
            digest = lookup_result_digest(
                gateway_pb2.GatewayLookupResponse(
                    request_id=response.request_id,
                    uscc=response.uscc,
                    name=response.name,
                    datasets=response.datasets,
                )
            )
        outcome = _outcome(error) if (response is not None or providers) else "NOT_FOUND"
        return await self.record(
            AuditEvent(
                type=EventType.LOOKUP,
                actor=self.actor_of(request.institution_id),
                request_id=request_id,
                enterprise=request.uscc,
                providers=[p for p in providers if p not in failed],
                providers_failed=failed,
                result_sha256=digest,
                outcome=outcome,
            )
        )

    async def aggregation(
        self,
        provider: str,
        request_id: str,
        datasets: dict[str, int],
        error: BaseException | None = None,
    ) -> int:
        """Record one physical aggregation run from ``provider``: the datasets and
        row counts stored (those completed before an error, if any)."""
        return await self.record(
            AuditEvent(
                type=EventType.AGGREGATION,
                actor=self.actor_of(),
                request_id=request_id,
                providers=[] if error else [provider],
                providers_failed=[provider] if error else [],
                datasets=datasets,
                outcome=_outcome(error),
            )
        )
