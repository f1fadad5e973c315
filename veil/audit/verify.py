"""Verifying the transparency log from the outside: the auditor's (and provider's) view.

The log is trusted for nothing.  A verifier keeps one piece of local state, the last
checkpoint it verified (:class:`TrustedState`), and from then on accepts:

* a checkpoint only if it carries a valid Ed25519 signature by the *pinned* key
  (C2SP signed note) for the expected origin;
* a larger checkpoint only with an RFC 9162 consistency proof from the trusted one
  (so nothing the verifier has seen was rewritten or dropped);
* an equal-size checkpoint only with the same root (two validly signed roots for
  one size are a fork, and the pair of notes is the evidence);
* a smaller checkpoint only as a *stale view* proved consistent with the trusted one
  -- and if the log can no longer prove its own larger tree, it rolled back;
* an entry only with an inclusion proof against a verified checkpoint, over a leaf
  hash it recomputed from the entry bytes itself.

Anything else raises an :class:`AuditAlarm` whose message is the evidence.
Checkpoints obtained elsewhere (another auditor, a provider, a newspaper) can be
cross-checked with :meth:`Auditor.compare`: this is how a forked view -- the log
showing different histories to different parties -- is caught.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from veil._internal.merkle import leaf_hash, verify_consistency, verify_inclusion
from veil.audit.client import AuditClient
from veil.audit.entry import Entry, MalformedEntry, decode_entry
from veil.checkpoint import Checkpoint, Verifier, verify_checkpoint
from veil.errors import BeyondTreeSize, FailedPrecondition, NoteError, NotFound, ProofError
from veil.v1 import audit_pb2


class AuditAlarm(FailedPrecondition):
    """The log (or whoever serves it) misbehaved; the message is the evidence."""


class BadCheckpoint(AuditAlarm):
    """A checkpoint's signature, key or origin did not verify."""


class ForkDetected(AuditAlarm):
    """Two checkpoints that cannot both be views of one append-only log."""


class LogRollback(AuditAlarm):
    """The log can no longer prove a tree it signed earlier."""


class BadInclusion(AuditAlarm):
    """An entry's inclusion proof does not lead to the verified root."""


@dataclass(frozen=True)
class TrustedState:
    """The last verified checkpoint: origin, size, root and the note itself."""

    origin: str
    size: int
    root_hash: bytes
    note: bytes
    verified_at: str = ""

    @classmethod
    def of(cls, checkpoint: Checkpoint, note: bytes) -> TrustedState:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(checkpoint.origin, checkpoint.size, checkpoint.root_hash, note, now)

    def to_json(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": base64.b64encode(self.root_hash).decode("ascii"),
            "note": self.note.decode("utf-8"),
            "verified_at": self.verified_at,
        }

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename): a crash never leaves a
        half-written state that would make the next run trust nothing or too much."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".audit-state-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_json(), fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, verifier: Verifier, origin: str | None) -> TrustedState | None:
        """The stored state, re-verified (the note's signature) so that a tampered
        state file is refused instead of trusted; ``None`` if there is none yet."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            note = str(doc["note"]).encode("utf-8")
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditAlarm(f"audit state {path} is unreadable ({exc})") from None
        try:
            checkpoint = verify_checkpoint(note, verifier, origin=origin)
        except NoteError as exc:
            raise AuditAlarm(f"audit state {path} does not verify: {exc.message}") from None
        return cls.of(checkpoint, note)


@dataclass(frozen=True)
class FollowResult:
    state: TrustedState
    previous: TrustedState | None
    status: str  # "first", "advanced", "unchanged" or "stale"
    server_key: str  # the verifier key the server advertised


@dataclass(frozen=True)
class VerifiedEntry:
    index: int
    leaf: bytes
    entry: Entry

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.leaf)


def _note_evidence(*notes: bytes) -> str:
    return "\n".join("---\n" + n.decode("utf-8", "replace").rstrip("\n") for n in notes)


class Auditor:
    """Follows one log through an :class:`AuditClient` with a pinned verifier key."""

    def __init__(
        self,
        client: AuditClient,
        verifier: Verifier,
        *,
        origin: str | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.client = client
        self.verifier = verifier
        self.origin = origin or verifier.name
        self.state_path = state_path
        self.state: TrustedState | None = (
            TrustedState.load(state_path, verifier, self.origin) if state_path else None
        )

    def open_checkpoint(self, note: bytes) -> Checkpoint:
        try:
            return verify_checkpoint(note, self.verifier, origin=self.origin)
        except NoteError as exc:
            raise BadCheckpoint(
                f"checkpoint rejected ({type(exc).__name__}): {exc.message}\n{_note_evidence(note)}"
            ) from None

    async def _prove_consistent(self, old: TrustedState | Checkpoint, new: Checkpoint) -> None:
        """Raise unless ``old`` (the smaller tree) is a prefix of ``new``."""
        if old.size == 0:
            return
        if old.size == new.size:
            if old.root_hash != new.root_hash:
                raise ForkDetected(f"two different signed roots for tree size {new.size}")
            return
        try:
            proof = await self.client.consistency_proof(old.size, new.size)
        except BeyondTreeSize as exc:
            raise LogRollback(
                f"the log cannot prove its tree of size {new.size}: {exc.message}"
            ) from None
        try:
            verify_consistency(old.size, new.size, proof, old.root_hash, new.root_hash)
        except ProofError as exc:
            raise ForkDetected(
                f"tree of size {new.size} is not consistent with the verified tree of "
                f"size {old.size} ({exc.message})"
            ) from None

    async def follow(self, *, fresh: bool = True) -> FollowResult:
        """Fetch the latest checkpoint, verify it against the trusted state, store it."""
        answer = await self.client.checkpoint(fresh=fresh)
        note = bytes(answer.note)
        checkpoint = self.open_checkpoint(note)
        previous = self.state
        status = "first"
        if previous is not None:
            try:
                if checkpoint.size >= previous.size:
                    await self._prove_consistent(previous, checkpoint)
                    status = "advanced" if checkpoint.size > previous.size else "unchanged"
                else:
                    if checkpoint.size == 0:
                        raise LogRollback(f"empty tree presented after size {previous.size}")
                    await self._prove_consistent(checkpoint, _as_checkpoint(previous))
                    status = "stale"
            except AuditAlarm as exc:
                raise type(exc)(f"{exc.message}\n{_note_evidence(previous.note, note)}") from None
        if status == "stale":
            assert previous is not None
            return FollowResult(previous, previous, status, answer.verifier_key)
        state = TrustedState.of(checkpoint, note)
        if status != "unchanged" or previous is None:
            self.state = state
            if self.state_path is not None:
                state.save(self.state_path)
        return FollowResult(self.state or state, previous, status, answer.verifier_key)

    async def compare(self, note: bytes) -> str:
        """Cross-check a checkpoint obtained from elsewhere against our verified view.

        Needs a trusted state (call :meth:`follow` first).  Returns a one-line
        verdict; raises :class:`ForkDetected` / :class:`LogRollback` on a split view.
        """
        if self.state is None:
            raise AuditAlarm("no verified checkpoint yet: run follow first")
        other = self.open_checkpoint(note)
        mine = self.state
        try:
            if other.size <= mine.size:
                await self._prove_consistent(other, _as_checkpoint(mine))
            else:
                await self._prove_consistent(mine, other)
        except AuditAlarm as exc:
            raise type(exc)(f"{exc.message}\n{_note_evidence(mine.note, note)}") from None
        return f"consistent: size {other.size} vs verified size {mine.size}"

    def _require_state(self) -> TrustedState:
        if self.state is None:
            raise AuditAlarm("no verified checkpoint yet: run follow first")
        return self.state

    def verify_entry(self, index: int, leaf: bytes, proof: Iterable[bytes]) -> VerifiedEntry:
        """Check an entry's inclusion in the trusted tree and decode it."""
        state = self._require_state()
        try:
            verify_inclusion(leaf_hash(leaf), index, state.size, list(proof), state.root_hash)
        except ProofError as exc:
            raise BadInclusion(
                f"entry {index} is not in the verified tree of size {state.size}: {exc.message}"
            ) from None
        try:
            return VerifiedEntry(index, leaf, decode_entry(leaf))
        except MalformedEntry as exc:
            raise BadInclusion(f"entry {index} is logged but malformed: {exc.message}") from None

    async def prove_index(self, index: int) -> VerifiedEntry:
        """Fetch entry ``index``, recompute its leaf hash, verify its inclusion."""
        state = self._require_state()
        if not 0 <= index < state.size:
            raise BeyondTreeSize(f"entry {index} is not below the verified size {state.size}")
        leaf = None
        async for e in self.client.entries(index, index + 1):
            if e.index == index:
                leaf = bytes(e.leaf)
        if leaf is None:
            raise NotFound(f"entry {index} was not returned (is it outside your scope?)")
        proof = await self.client.inclusion_proof(state.size, index=index)
        return self.verify_entry(index, leaf, proof.hashes)

    async def prove_leaf_hash(self, h: bytes) -> tuple[int, list[bytes]]:
        """Verify that the leaf hash ``h`` is in the verified tree; returns (index, proof)."""
        state = self._require_state()
        proof = await self.client.inclusion_proof(state.size, leaf_hash=h)
        hashes = list(proof.hashes)
        try:
            verify_inclusion(h, proof.index, state.size, hashes, state.root_hash)
        except ProofError as exc:
            raise BadInclusion(
                f"leaf {h.hex()} does not verify at index {proof.index}: {exc.message}"
            ) from None
        return int(proof.index), hashes

    async def search(self, query: audit_pb2.SearchEntriesRequest) -> list[VerifiedEntry]:
        """Matching entries within the verified tree, each with a verified inclusion proof."""
        state = self._require_state()
        request = audit_pb2.SearchEntriesRequest()
        request.CopyFrom(query)
        request.tree_size = state.size
        request.with_proofs = True
        if state.size == 0:
            return []
        out: list[VerifiedEntry] = []
        async for page, e in self.client.search(request):
            if page.tree_size != state.size:
                raise AuditAlarm(f"search answered for size {page.tree_size}, not {state.size}")
            out.append(self.verify_entry(int(e.index), bytes(e.leaf), e.inclusion_proof))
        return out


def _as_checkpoint(state: TrustedState) -> Checkpoint:
    return Checkpoint(state.origin, state.size, state.root_hash)
