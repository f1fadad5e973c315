"""LogService: the platform's transparency log, read by the gateway (and administrators).

Requests are validated here with messages that name the bad value; the store's own
errors (``BeyondTreeSize`` → NOT_FOUND, ``InvalidTreeRange``/``MalformedHash`` →
INVALID_ARGUMENT) pass through the server's error mapping unchanged.  Store calls
are blocking SQLAlchemy work, so each runs in a worker thread.
"""

from __future__ import annotations

import asyncio

import grpc

from platform_node.audit import AuditLog
from platform_node.audit_index import Query
from veil._internal.merkle import HASH_SIZE
from veil.audit.entry import Scope, format_time, parse_time
from veil.checkpoint import Checkpoint
from veil.errors import BeyondTreeSize, InvalidArgument, MalformedHash
from veil.server import ServiceBinding, require_peer
from veil.v1 import audit_pb2, log_pb2, log_pb2_grpc

READER_ROLES = ("gateway", "admin")
MAX_RANGE = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _note_size(note: bytes) -> int:
    text = note.decode("utf-8")
    return Checkpoint.parse(text[: text.rfind("\n\n") + 1]).size


def search_query(q: audit_pb2.SearchEntriesRequest) -> Query:
    """Validate a search request into an index query."""
    if q.page_size > MAX_PAGE:
        raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
    if q.start_index < 0:
        raise InvalidArgument(f"start_index {q.start_index} is negative")
    since = format_time(parse_time(q.since)) if q.since else ""
    until = format_time(parse_time(q.until)) if q.until else ""
    if since and until and since >= until:
        raise InvalidArgument(f"since {q.since!r} is not before until {q.until!r}")
    return Query(
        enterprise=q.enterprise,
        provider=q.provider,
        actor=q.actor,
        purpose=q.purpose,
        request_id=q.request_id,
        types=tuple(q.types),
        since=since,
        until=until,
        start_index=q.start_index,
        page_size=q.page_size or DEFAULT_PAGE,
    )


class LogServicer(log_pb2_grpc.LogServiceServicer):
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self.store = audit.store

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetCheckpointResponse:
        require_peer(context, READER_ROLES)
        note = await self.audit.checkpoint(fresh=request.fresh)
        return audit_pb2.GetCheckpointResponse(
            note=note,
            verifier_key=self.audit.verifier_key,
            origin=self.audit.origin,
            tree_size=_note_size(note),
        )

    async def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetEntriesResponse:
        require_peer(context, READER_ROLES)
        start, end = request.start, request.end
        if start < 0 or end <= start:
            raise InvalidArgument(f"entry range [{start}, {end}) is empty or negative")
        if end - start > MAX_RANGE:
            raise InvalidArgument(f"at most {MAX_RANGE} entries per call, asked {end - start}")

        def read() -> tuple[list[bytes], list[bytes]]:
            return self.store.entries(start, end), self.store.leaf_hashes(start, end)

        leaves, hashes = await asyncio.to_thread(read)
        return audit_pb2.GetEntriesResponse(
            entries=[
                audit_pb2.LogEntry(index=start + i, leaf=leaf, leaf_hash=h)
                for i, (leaf, h) in enumerate(zip(leaves, hashes, strict=True))
            ]
        )

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetInclusionProofResponse:
        require_peer(context, READER_ROLES)
        size = request.tree_size
        if size <= 0:
            raise InvalidArgument(
                f"tree_size must be positive (a verified checkpoint's), got {size}"
            )
        which = request.WhichOneof("leaf")
        if which == "leaf_hash":
            h = bytes(request.leaf_hash)
            if len(h) != HASH_SIZE:
                raise MalformedHash(f"leaf_hash is {len(h)} bytes, want {HASH_SIZE}")
            index, proof = await asyncio.to_thread(self.store.inclusion_proof_by_leaf_hash, h, size)
        elif which == "index":
            index = request.index
            if not 0 <= index < size:
                raise InvalidArgument(f"leaf index {index} is not in a tree of size {size}")

            def prove() -> tuple[bytes, list[bytes]]:
                proof = self.store.inclusion_proof(index, size)
                return self.store.leaf_hashes(index, index + 1)[0], proof

            h, proof = await asyncio.to_thread(prove)
        else:
            raise InvalidArgument("set index or leaf_hash")
        return audit_pb2.GetInclusionProofResponse(
            index=index, tree_size=size, leaf_hash=h, hashes=proof
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetConsistencyProofResponse:
        require_peer(context, READER_ROLES)
        size1, size2 = request.size1, request.size2
        if size1 <= 0 or size1 > size2:
            raise InvalidArgument(
                f"a consistency proof needs 0 < size1 <= size2, got size1={size1} size2={size2}"
            )
        proof = await asyncio.to_thread(self.store.consistency_proof, size1, size2)
        return audit_pb2.GetConsistencyProofResponse(size1=size1, size2=size2, hashes=proof)

    async def SearchEntries(
        self, request: log_pb2.LogSearchRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.SearchEntriesResponse:
        require_peer(context, READER_ROLES)
        try:
            scope = Scope(request.scope)
        except ValueError:
            raise InvalidArgument(f"unknown audit scope {request.scope}") from None
        query = search_query(request.query)
        wanted = request.query.tree_size
        if wanted < 0:
            raise InvalidArgument(f"tree_size {wanted} is negative")
        with_proofs = request.query.with_proofs

        def search() -> audit_pb2.SearchEntriesResponse:
            size = self.audit.index.sync()
            tree_size = wanted or size
            if tree_size > size:
                raise BeyondTreeSize(f"tree size {tree_size} is beyond the log's size {size}")
            hits, next_index = self.audit.index.search(scope, request.subject, query, tree_size)
            out = audit_pb2.SearchEntriesResponse(
                next_index=next_index,
                tree_size=tree_size,
                scope=request.scope,
                subject=request.subject,
            )
            for hit in hits:
                entry = out.entries.add(index=hit.index, leaf=hit.leaf, leaf_hash=hit.leaf_hash)
                if with_proofs:
                    entry.inclusion_proof.extend(self.store.inclusion_proof(hit.index, tree_size))
            return out

        return await asyncio.to_thread(search)


def log_service_binding(audit: AuditLog) -> ServiceBinding:
    """The ServiceBinding a daemon adds to serve ``LogService`` over ``audit``."""
    servicer = LogServicer(audit)
    return ServiceBinding(
        name=log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name,
        register=lambda server: log_pb2_grpc.add_LogServiceServicer_to_server(servicer, server),
    )
