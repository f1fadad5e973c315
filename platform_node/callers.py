"""The platform's view of who is calling through the gateway.

The gateway verified the caller's client assertion; the platform accepts the forwarded
identity only from a ``veil://gateway/…`` peer, consumes the assertion's ``jti`` in its
own store (a replayed assertion is refused even through another gateway replica) and
re-checks an institution's state on every call (a suspension is effective at once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection

from platform_node.registry import InstitutionRegistry, ReplayGuard
from platform_node.registry.schema import write_tx
from veil.caller import Caller, caller_from_metadata
from veil.errors import PermissionDenied, Unauthenticated, VeilError
from veil.server import require_peer

C = TypeVar("C")
W = TypeVar("W")


class CallerCheck:
    def __init__(self, institutions: InstitutionRegistry, replay: ReplayGuard) -> None:
        self.institutions = institutions
        self.replay = replay

    async def require(
        self, context: Any, kinds: Collection[str], *, purpose: str | None = None
    ) -> Caller:
        """:meth:`identify` then :meth:`admit`: the caller, if it may make this call."""
        caller = self.identify(context, kinds)
        await self.admit(caller, purpose=purpose)
        return caller

    def identify(self, context: Any, kinds: Collection[str]) -> Caller:
        """Who the gateway says is calling (peer must be a gateway; kind must fit).

        Nothing here is a decision about the caller yet; a handler that records refusals
        identifies first, so that :meth:`admit`'s refusals can be recorded under the
        caller's name.
        """
        require_peer(context, roles={"gateway"})
        caller = caller_from_metadata(context.invocation_metadata())
        if caller is None:
            raise Unauthenticated("no authenticated caller was forwarded by the gateway")
        if caller.kind not in kinds:
            raise PermissionDenied(f"this call is for {' or '.join(sorted(kinds))} callers")
        return caller

    async def admit(self, caller: Caller, *, purpose: str | None = None) -> None:
        """Consume the assertion's ``jti`` (replay) and, for an institution, require it
        to be active now and allowed ``purpose`` (when given)."""
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)

        def check() -> None:  # one worker-thread hop for both
            self.replay.claim(caller.namespace, caller.jti, expires)
            self.require_active(caller, purpose=purpose)

        await asyncio.to_thread(check)

    def admit_with(
        self,
        caller: Caller,
        *,
        purpose: str | None,
        check: Callable[[], C],
        write: Callable[[Connection, C], W],
    ) -> tuple[C, W]:
        """:meth:`admit` together with a handler's own checks and writes, in one write
        transaction (blocking: call it in a worker thread).

        Refusals in this order: a replayed assertion, an institution not active or not
        admitted for ``purpose``, then what ``check`` (reads only) and ``write`` (on the
        transaction, in savepoints of its own) refuse.  The reads run first; the
        transaction then consumes the assertion — and commits it also when ``check`` or
        ``write`` refused, so that a refusal is never a way to replay it.  ``write``
        runs only if nothing refused before; its result and ``check``'s are returned.
        """
        refusal: VeilError | None = None
        try:
            self.require_active(caller, purpose=purpose)
            checked = check()
        except VeilError as exc:
            refusal = exc
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
        with write_tx(self.replay.engine) as conn:
            self.replay.claim_on(conn, caller.namespace, caller.jti, expires)
            if refusal is None:
                try:
                    written = write(conn, checked)
                except VeilError as exc:
                    refusal = exc  # the assertion (and what write kept) commit
        if refusal is not None:
            raise refusal
        return checked, written

    def admit_each_with(
        self,
        caller: Caller,
        items: Sequence[tuple[str | None, Callable[[], C], Callable[[Connection, C], W]]],
    ) -> list[VeilError | None]:
        """:meth:`admit_with` for many requests made under one assertion (blocking: call
        it in a worker thread): one write transaction, the assertion consumed once.

        ``items`` are ``(purpose, check, write)`` per request.  A replayed assertion or an
        institution not active refuses the whole call (raised; a replay writes nothing);
        otherwise each item is refused on its own — its purpose, its ``check``, its
        ``write`` — and its refusal is returned in its place (None: admitted).  A
        refused ``write`` keeps what it wrote, as in :meth:`admit_with`: writes must
        refuse before writing anything that matters."""
        caller_refusal: VeilError | None = None
        try:
            self.require_active(caller)
        except VeilError as exc:
            caller_refusal = exc
        refusals: list[VeilError | None] = [caller_refusal] * len(items)
        checked: list[Any] = [None] * len(items)
        if caller_refusal is None:
            refusals, checked = self._check_each([(caller, p, c) for p, c, _ in items])
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
        with write_tx(self.replay.engine) as conn:
            self.replay.claim_on(conn, caller.namespace, caller.jti, expires)
            self._write_each(conn, [w for _, _, w in items], checked, refusals)
        if caller_refusal is not None:
            raise caller_refusal
        return refusals

    def admit_forwarded(
        self,
        items: Sequence[tuple[Caller, str | None, Callable[[], C], Callable[[Connection, C], W]]],
    ) -> list[VeilError | None]:
        """:meth:`admit_with` for requests the gateway coalesced, each under its own
        caller and assertion (blocking: call it in a worker thread): one write
        transaction; each item's refusal (or None) in its place.

        ``items`` are ``(caller, purpose, check, write)``.  Per item, as for a lone
        call: its caller must be active (and admitted for ``purpose``), ``check`` and
        ``write`` may refuse, and its assertion is consumed also when it was refused —
        a replayed assertion refuses its item alone (and takes precedence)."""
        refusals, checked = self._check_each([(c, p, check) for c, p, check, _ in items])
        with write_tx(self.replay.engine) as conn:
            for i, (caller, *_) in enumerate(items):
                expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
                try:
                    self.replay.claim_on(conn, caller.namespace, caller.jti, expires)
                except VeilError as exc:
                    refusals[i] = exc
            self._write_each(conn, [w for *_, w in items], checked, refusals)
        return refusals

    def _check_each(
        self, items: Sequence[tuple[Caller, str | None, Callable[[], Any]]]
    ) -> tuple[list[VeilError | None], list[Any]]:
        """Each item's caller (active, admitted for its purpose: read once per caller
        and purpose), then its ``check``: the refusals and the checks' results."""
        refusals: list[VeilError | None] = []
        checked: list[Any] = []
        active: dict[tuple[str, str | None], VeilError | None] = {}
        for caller, purpose, check in items:
            key = (caller.namespace, purpose)
            if key not in active:
                try:
                    self.require_active(caller, purpose=purpose)
                    active[key] = None
                except VeilError as exc:
                    active[key] = exc
            refusal = active[key]
            value = None
            if refusal is None:
                try:
                    value = check()
                except VeilError as exc:
                    refusal = exc
            refusals.append(refusal)
            checked.append(value)
        return refusals, checked

    @staticmethod
    def _write_each(
        conn: Connection,
        writes: Sequence[Callable[[Connection, Any], Any]],
        checked: Sequence[Any],
        refusals: list[VeilError | None],
    ) -> None:
        """Each not yet refused item's ``write`` on ``conn``; a refusal in its place."""
        for i, write in enumerate(writes):
            if refusals[i] is None:
                try:
                    write(conn, checked[i])
                except VeilError as exc:
                    refusals[i] = exc

    def require_active(self, caller: Caller, *, purpose: str | None = None) -> None:
        """For an institution: active now and allowed ``purpose`` (when given)."""
        if caller.kind == "institution":
            self.institutions.require_active(caller.subject, purpose)
