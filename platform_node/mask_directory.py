"""The platform's directory of providers' signed mask keys (for masked protocols).

Every request of a masked protocol (verification across providers, joint scoring)
carries the roster: each participant's signed mask key, which each provider verifies
itself against the CA.  The platform only relays them, so it fetches them once per
provider (``MaskKeyService.GetSignedMaskKey`` over the provider channel it already has)
and keeps them for ``ttl_s``; :meth:`MaskDirectory.forget` drops one when a provider
refuses it as stale (a rotated key).  The platform checks each key against the CA too,
so a misconfigured provider is named early rather than by every other participant.

API::

    directory = MaskDirectory(registry, ca_pem, timeout_s)
    roster = await directory.roster(["tax", "utilities"])   # [masks_pb2.SignedMaskKey]
    directory.forget("tax")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import grpc

from platform_node.providers import ProviderRegistry, provider_error
from veil.crypto import SignedMaskKey, verify_mask_key
from veil.errors import FailedPrecondition, InvalidMaskKey
from veil.tls import PeerIdentity
from veil.v1 import masks_pb2, masks_pb2_grpc

DEFAULT_TTL_S = 600.0


class MaskDirectory:
    def __init__(
        self,
        registry: ProviderRegistry,
        ca_pem: bytes | None,
        timeout_s: float,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.registry = registry
        self.ca_pem = ca_pem
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._keys: dict[str, tuple[float, masks_pb2.SignedMaskKey]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def roster(self, units: Sequence[str]) -> list[masks_pb2.SignedMaskKey]:
        """The signed mask keys of ``units`` (provider unit ids), in that order."""
        return list(await asyncio.gather(*(self.get(u) for u in units)))

    async def get(self, unit: str) -> masks_pb2.SignedMaskKey:
        hit = self._keys.get(unit)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        lock = self._locks.setdefault(unit, asyncio.Lock())
        async with lock:
            hit = self._keys.get(unit)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            signed = await self._fetch(unit)
            self._keys[unit] = (time.monotonic(), signed)
            return signed

    def forget(self, unit: str) -> None:
        self._keys.pop(unit, None)

    async def _fetch(self, unit: str) -> masks_pb2.SignedMaskKey:
        link = self.registry.link(unit)
        stub = masks_pb2_grpc.MaskKeyServiceStub(link.channel)
        try:
            signed: masks_pb2.SignedMaskKey = await stub.GetSignedMaskKey(
                masks_pb2.GetSignedMaskKeyRequest(), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as err:
            raise provider_error(link.name, err, self.timeout_s) from None
        if signed.node != link.name or signed.unit != unit:
            raise FailedPrecondition(
                f"provider {link.name!r} published a mask key for {signed.node!r}/{signed.unit!r}"
            )
        if self.ca_pem is not None:
            try:
                verify_mask_key(
                    SignedMaskKey(
                        bytes(signed.public_key),
                        bytes(signed.signature),
                        bytes(signed.certificate_pem),
                    ),
                    self.ca_pem,
                    PeerIdentity("provider", link.name),
                )
            except InvalidMaskKey as exc:
                raise FailedPrecondition(
                    f"provider {link.name!r} published a mask key that does not verify: "
                    f"{exc.message}"
                ) from None
        return signed
