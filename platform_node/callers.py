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
        require_peer(context, roles={"gateway"})
        caller = caller_from_metadata(context.invocation_metadata())
        if caller is None:
            raise Unauthenticated("no authenticated caller was forwarded by the gateway")
        if caller.kind not in kinds:
            raise PermissionDenied(f"this call is for {' or '.join(sorted(kinds))} callers")
        expires = dt.datetime.fromtimestamp(caller.expires, dt.UTC)
        await asyncio.to_thread(self.replay.claim, caller.namespace, caller.jti, expires)
        if caller.kind == "institution":
            await asyncio.to_thread(self.institutions.require_active, caller.subject, purpose)
        return caller
