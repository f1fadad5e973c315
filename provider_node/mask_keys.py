"""A provider's mask key for pairwise cancelling masks, and its check of the others' keys.

Used by every protocol in which providers mask contributions that the platform sums
(verification across providers, issue 4; joint scoring, issue 5).  Configuration::

    [masks]
    key = "../keys/tax-mask.key"   # X25519 private key, 0600; created on first start

(default: ``<node name>-mask.key`` next to the configuration file).  At start the
provider signs the key's public half with its TLS private key
(:func:`veil.crypto.sign_mask_key`) and serves it with ``MaskKeyService``; the platform
relays the participants' signed keys in every masked request, and
:meth:`ProviderMaskKeys.peers` verifies each one against the CA and the identity
``veil://provider/<node>`` before any mask is derived — the platform relays keys but
cannot substitute one of its own.  Rotation: replace the file and restart the node; the
platform's directory picks the new key up when a provider refuses a stale one.

API (small on purpose)::

    keys = ProviderMaskKeys.from_config(config, unit)
    keys.signed_message()                      # masks_pb2.SignedMaskKey to publish
    keys.verify(signed)                        # one peer's X25519 key, checked
    peers = keys.peers(request.participants)   # {unit: X25519 public}, others only
    keys.mask(peers, request_id=…, context=…, modulus=n)   # this provider's Σ ±m_ij

Participants are named by provider *unit* (``social_insurance``) in masks; a signed key's
``unit`` must be its certificate's node name with ``-`` read as ``_`` (the convention of
every Veil deployment), so a relay cannot relabel one provider's key as another's.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from veil.config import NodeConfig
from veil.crypto import MaskKey, SignedMaskKey, my_mask, sign_mask_key, verify_mask_key
from veil.errors import ConfigError, FailedPrecondition, InvalidArgument
from veil.server import ServiceBinding
from veil.tls import PeerIdentity
from veil.v1 import masks_pb2, masks_pb2_grpc

log = logging.getLogger("veil.provider.masks")

VERIFIED_TTL_S = 300.0
"""How long a peer's signed key, once verified, is trusted without re-verifying (its
certificate's validity is re-checked after this)."""
MAX_PARTICIPANTS = 32
MAX_ROSTERS = 64  # accepted rosters remembered (ProviderMaskKeys.peers)


class StaleMaskKey(FailedPrecondition):
    """The roster carries an old key for this provider: the platform should refresh."""


class ProviderMaskKeys:
    def __init__(
        self, node: str, unit: str, key: MaskKey, signed: SignedMaskKey, ca_pem: bytes
    ) -> None:
        self.node = node
        self.unit = unit
        self.key = key
        self.signed = signed
        self.ca_pem = ca_pem
        self._verified: dict[bytes, tuple[float, bytes]] = {}
        self._rosters: dict[bytes, tuple[float, dict[str, bytes]]] = {}

    @classmethod
    def from_config(cls, config: NodeConfig, unit: str) -> ProviderMaskKeys:
        tls = config.tls
        if tls.insecure or tls.key is None or tls.cert is None or tls.ca is None:
            raise ConfigError(
                str(config.path),
                "tls",
                "mask keys are signed with the node's TLS key: TLS is needed",
            )
        raw = config.section("masks").get("key", f"{config.name}-mask.key")
        if not isinstance(raw, str) or not raw:
            raise ConfigError(str(config.path), "masks.key", "must be a key file path")
        path = Path(raw) if Path(raw).is_absolute() else config.path.parent / raw
        if path.exists():
            key = MaskKey.load(path)
        else:
            key = MaskKey.generate()
            key.save(path)
            log.warning("generated a new mask key %s (%s)", path, key.key_id)
        cert_pem = tls.cert.read_bytes()
        signed = sign_mask_key(key, tls.key, cert_pem)
        return cls(config.name, unit, key, signed, tls.ca.read_bytes())

    def signed_message(self) -> masks_pb2.SignedMaskKey:
        return masks_pb2.SignedMaskKey(
            node=self.node,
            unit=self.unit,
            public_key=self.signed.public_key,
            signature=self.signed.signature,
            certificate_pem=self.signed.cert_pem,
        )

    def peers(self, participants: Sequence[masks_pb2.SignedMaskKey]) -> dict[str, bytes]:
        """Verified X25519 keys of the other participants, by unit.

        Refuses a roster without this provider, with a name twice, with another key for
        this provider (:class:`StaleMaskKey`), or with any key that does not verify
        against the CA and its node identity (:class:`~veil.errors.InvalidMaskKey`).

        A roster accepted once is accepted again from its exact bytes (every check of a
        burst carries the same one) while this provider's own key is unchanged and
        until its oldest peer verification is ``VERIFIED_TTL_S`` old, as each key alone.
        """
        if len(participants) > MAX_PARTICIPANTS:
            raise InvalidArgument(f"at most {MAX_PARTICIPANTS} participants")
        roster = hashlib.sha256(self.key.public_bytes())
        for p in participants:
            blob = p.SerializeToString(deterministic=True)
            roster.update(len(blob).to_bytes(4, "big") + blob)
        key = roster.digest()
        now = time.monotonic()
        hit = self._rosters.get(key)
        if hit is not None and now - hit[0] < VERIFIED_TTL_S:
            return dict(hit[1])
        oldest, out = self._check_roster(participants)
        if len(self._rosters) >= MAX_ROSTERS:
            self._rosters.clear()
        self._rosters[key] = (oldest, out)
        return dict(out)

    def _check_roster(
        self, participants: Sequence[masks_pb2.SignedMaskKey]
    ) -> tuple[float, dict[str, bytes]]:
        """The roster's checks; the peers' keys and when the oldest was verified."""
        names = [p.unit for p in participants]
        if len(set(names)) != len(names) or len({p.node for p in participants}) != len(names):
            raise InvalidArgument("the participant roster names a provider twice")
        mine = [p for p in participants if p.unit == self.unit]
        if not mine:
            raise InvalidArgument(f"the participant roster does not include {self.unit!r}")
        if mine[0].node != self.node or bytes(mine[0].public_key) != self.key.public_bytes():
            raise StaleMaskKey(
                f"the roster's mask key for {self.unit!r} is not its current key; refresh it"
            )
        out: dict[str, bytes] = {}
        oldest = time.monotonic()
        for p in participants:
            if p.unit != self.unit:
                verified_at, out[p.unit] = self._verified_key(p)
                oldest = min(oldest, verified_at)
        if not out:
            raise InvalidArgument("a masked contribution needs at least one other participant")
        return oldest, out

    def verify(self, p: masks_pb2.SignedMaskKey) -> bytes:
        """One participant's X25519 public key, after checking that its unit is its
        node's, and its signature and certificate against the CA (cached a while)."""
        return self._verified_key(p)[1]

    def _verified_key(self, p: masks_pb2.SignedMaskKey) -> tuple[float, bytes]:
        """(when it was verified, the key): :meth:`verify`, from the cache while fresh."""
        if p.unit != p.node.replace("-", "_"):
            raise InvalidArgument(f"mask key of node {p.node!r} is labelled unit {p.unit!r}")
        signed = SignedMaskKey(bytes(p.public_key), bytes(p.signature), bytes(p.certificate_pem))
        digest = hashlib.sha256(p.node.encode() + b"\0" + signed.to_bytes()).digest()
        hit = self._verified.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < VERIFIED_TTL_S:
            return hit
        public = verify_mask_key(signed, self.ca_pem, PeerIdentity("provider", p.node))
        if len(self._verified) > 4 * MAX_PARTICIPANTS:
            self._verified.clear()
        self._verified[digest] = (now, public)
        return now, public

    def mask(
        self, peers: Mapping[str, bytes], *, request_id: str, context: str, modulus: int
    ) -> int:
        """This provider's mask ``Σ_j ±m_ij mod modulus`` for one sum (one context)."""
        return my_mask(
            self.key, self.unit, peers, request_id=request_id, context=context, modulus=modulus
        )


class MaskKeyServicer(masks_pb2_grpc.MaskKeyServiceServicer):
    def __init__(self, keys: ProviderMaskKeys) -> None:
        self.keys = keys

    async def GetSignedMaskKey(
        self,
        request: masks_pb2.GetSignedMaskKeyRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> masks_pb2.SignedMaskKey:
        return self.keys.signed_message()


def mask_key_binding(keys: ProviderMaskKeys) -> ServiceBinding:
    servicer = MaskKeyServicer(keys)
    return ServiceBinding(
        name=masks_pb2.DESCRIPTOR.services_by_name["MaskKeyService"].full_name,
        register=lambda server: masks_pb2_grpc.add_MaskKeyServiceServicer_to_server(
            servicer, server
        ),
    )
