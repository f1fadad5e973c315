"""Caller authentication at the gateway: one interceptor, client assertions via pyjwt.

Every call except the public ones (catalog, JWKS, health, reflection, the audit
service's certificate-authenticated reads) must carry ``authorization: Bearer <jws>``,
a client assertion (docs/authorization.md).  The interceptor verifies it — institution
keys come from the platform's registry (cached briefly by id), enterprise keys from the
EIA certificate in the token's header — and ties it to the TLS client certificate: the
certificate must be of the same kind and name the same subject.  The verified caller
is put in :data:`veil.caller.current_caller`; the platform consumes its ``jti`` (replay)
and re-checks the institution's state on every forwarded call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from veil.caller import Caller, current_caller
from veil.errors import PermissionDenied, Unauthenticated, UnknownKey, from_rpc_error
from veil.server import WrappedHandlers, current_peer
from veil.tokens import KeySet, VerifyingKey, peek_client_assertion, verify_client_assertion
from veil.v1 import platform_pb2, platform_pb2_grpc

log = logging.getLogger("veil.gateway.auth")

AUTH_HEADER = "authorization"
BEARER = "bearer "
INSTITUTION_KEYS_TTL_S = 2.0
PLATFORM_TIMEOUT_S = 5.0
PUBLIC_METHODS = frozenset(
    {
        "/veil.v1.GatewayService/GetCatalog",
        "/veil.v1.GatewayService/GetJwks",
        "/veil.v1.VerificationService/GetVerificationPolicy",
    }
)
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/veil.v1.AuditService/")


@dataclass
class _Cached:
    at: float
    active: bool
    state: str
    keys: KeySet


class InstitutionKeyCache:
    """An institution's published keys and state, from the platform, for a short time.

    Short on purpose: a suspension reaches the gateway within ``INSTITUTION_KEYS_TTL_S``
    (and the platform refuses a suspended institution's forwarded calls at once anyway).
    """

    def __init__(self, platform: platform_pb2_grpc.PlatformServiceAsyncStub) -> None:
        self.platform = platform
        self._cache: dict[str, _Cached] = {}

    async def get(self, institution_id: str, kid: str) -> _Cached:
        entry = self._cache.get(institution_id)
        fresh = entry is not None and time.monotonic() - entry.at < INSTITUTION_KEYS_TTL_S
        if entry is None or not fresh or kid not in entry.keys.kids:
            entry = await self._fetch(institution_id)
        return entry

    async def _fetch(self, institution_id: str) -> _Cached:
        try:
            answer = await self.platform.GetInstitutionKeys(
                platform_pb2.GetInstitutionKeysRequest(institution_id=institution_id),
                timeout=PLATFORM_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            mapped = from_rpc_error(err)
            if err.code() == grpc.StatusCode.NOT_FOUND:
                raise UnknownKey(f"unknown institution {institution_id!r}") from None
            raise mapped from None
        keys = KeySet.from_jwks(
            json.loads(answer.jwks_json or '{"keys": []}'), label=institution_id
        )
        entry = _Cached(time.monotonic(), answer.active, answer.state, keys)
        self._cache[institution_id] = entry
        return entry


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == AUTH_HEADER:
            text = value.decode() if isinstance(value, bytes) else value
            if not text.lower().startswith(BEARER):
                raise Unauthenticated("authorization metadata must be 'Bearer <client assertion>'")
            return str(text[len(BEARER) :].strip())
    return None


class ClientAssertionInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, *, audience: str, institutions: InstitutionKeyCache, eia_keys: KeySet
    ) -> None:
        self.audience = audience
        self.institutions = institutions
        self.eia_keys = eia_keys
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if method in PUBLIC_METHODS or method.startswith(PUBLIC_PREFIXES):
            return handler
        return self._wrapped.get(handler, method, self._guard)  # type: ignore[return-value]

    async def authenticate(self, token: str, now: float | None = None) -> Caller:
        iss, kid = peek_client_assertion(token)
        cached: _Cached | None = None
        lookup = None
        if not _looks_like_uscc(iss):
            cached = await self.institutions.get(iss, kid)
            keys = cached.keys

            def lookup(issuer: str, key_id: str) -> VerifyingKey:
                return keys.get(key_id)

        # Inline, not in a worker thread: one Ed25519/ECDSA check holds the GIL anyway
        # (a thread hop would only add two context switches to every call).
        assertion = verify_client_assertion(
            token,
            audience=self.audience,
            institution_key=lookup,
            eia_keys=self.eia_keys,
            now=now,
        )
        if cached is not None and not cached.active:
            raise PermissionDenied(f"institution {iss!r} is {cached.state}, not active")
        return Caller(
            kind=assertion.kind,
            subject=assertion.subject,
            jti=assertion.jti,
            expires=int(assertion.exp),
        )

    @contextlib.asynccontextmanager
    async def _guard(self, method: str, context: Any) -> AsyncIterator[None]:
        # A refusal raised here is logged (WARNING, with the peer) and mapped to its
        # status by the server's ErrorMappingInterceptor.
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(f"{method} needs a client assertion (authorization: Bearer)")
        caller = await self.authenticate(token)
        bind_to_certificate(caller)
        reset = current_caller.set(caller)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                current_caller.reset(reset)


def _looks_like_uscc(text: str) -> bool:
    from veil.uscc import is_valid_uscc

    return is_valid_uscc(text)


def bind_to_certificate(caller: Caller) -> None:
    """The TLS client certificate must be of the caller's kind and name the same subject."""
    peer = current_peer.get()
    if peer is None:  # TLS off (--insecure): nothing to bind to, the assertion stands alone
        return
    expected = caller.subject if caller.kind == "institution" else caller.subject.lower()
    if peer.role != caller.kind or peer.name != expected:
        raise PermissionDenied(
            f"client assertion for {caller.kind} {caller.subject} presented over the "
            f"certificate of {peer.role} {peer.name}"
        )
