"""The platform's view of who is calling through the gateway.

The gateway verified the caller's client assertion; the platform accepts the forwarded
identity only from a ``veil://gateway/…`` peer, consumes the assertion's ``jti`` in its
own store (a replayed assertion is refused even through another gateway replica) and
re-checks an institution's state on every call (a suspension is effective at once).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection

from platform_node.registry import InstitutionRegistry, ReplayGuard
from veil.caller import Caller, caller_from_metadata
from veil.errors import PermissionDenied, Unauthenticated
from veil.server import require_peer


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
        await asyncio.to_thread(self.admit_blocking, caller, purpose=purpose)

    def claim_on(self, conn: Connection, caller: Caller) -> None:
        """Consume the assertion's ``jti`` in the caller's write transaction
        (:meth:`ReplayGuard.claim_on`); pair it with :meth:`require_active`."""
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
        self.replay.claim_on(conn, caller.namespace, caller.jti, expires)

    def require_active(self, caller: Caller, *, purpose: str | None = None) -> None:
        """For an institution: active now and allowed ``purpose`` (when given)."""
        if caller.kind == "institution":
            self.institutions.require_active(caller.subject, purpose)

    def admit_blocking(self, caller: Caller, *, purpose: str | None = None) -> None:
        """:meth:`admit` for a handler that is already in a worker thread (it saves the
        request one thread hop when the handler has more database work to do there)."""
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
        self.replay.claim(caller.namespace, caller.jti, expires)
        if caller.kind == "institution":
            self.institutions.require_active(caller.subject, purpose)
