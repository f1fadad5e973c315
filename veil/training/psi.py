"""Private set intersection on X25519 (commutative blinding), and the feature parties'
group key.

``H(id)`` is SHA-512 of ``"veil-psi-v1\\0" ‖ id`` truncated to a 32-byte X25519
u-coordinate (a point of Curve25519 or of its twist; both have prime-order subgroups of
≈ 2^252 and X25519 clamps scalars to multiples of the cofactor).  ``[k]P`` is
``X25519(k, P)``; clamped scalar multiplications commute, so
``[a]([b]H) = [b]([a]H)``.  Under the decisional Diffie–Hellman assumption in these
groups (random-oracle ``H``), ``[k]H(id)`` looks random to whoever lacks ``k``.

The protocol (``docs/training.md``, "Alignment") uses two secrets ``K1``, ``K2`` shared by
all feature parties and never by the label party, sealed by the first feature party (the
*leader*) to each other one with AES-256-GCM under a key from their X25519 mask keys
(HKDF-SHA256), relayed by the label party, which cannot open them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.crypto.masks import MaskKey
from veil.errors import InvalidArgument

POINT = 32
_DOMAIN = b"veil-psi-v1\x00"
GROUP_SECRET_BYTES = 64


def hash_to_point(ident: str) -> bytes:
    digest = bytearray(hashlib.sha512(_DOMAIN + ident.encode("utf-8")).digest()[:POINT])
    digest[31] &= 0x7F  # RFC 7748 ignores the top bit; clear it so the encoding is canonical
    return bytes(digest)


class Blinder:
    """Multiplication by one secret scalar (a fresh random one unless given)."""

    __slots__ = ("_key",)

    def __init__(self, scalar: bytes | None = None) -> None:
        raw = scalar if scalar is not None else secrets.token_bytes(POINT)
        if len(raw) != POINT:
            raise InvalidArgument("a PSI scalar is 32 bytes")
        self._key = x25519.X25519PrivateKey.from_private_bytes(raw)

    def apply(self, points: Iterable[bytes]) -> list[bytes]:
        out = []
        for p in points:
            try:
                out.append(self._key.exchange(x25519.X25519PublicKey.from_public_bytes(p)))
            except ValueError:
                raise InvalidArgument("PSI: a blinded ID is not a valid point") from None
        return out

    def __repr__(self) -> str:
        return "Blinder(<secret>)"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Blinder holds a secret scalar and cannot be pickled")


def join_points(points: Sequence[bytes]) -> bytes:
    return b"".join(points)


def split_points(data: bytes) -> list[bytes]:
    if len(data) % POINT:
        raise InvalidArgument(f"PSI: {len(data)} bytes is not a whole number of points")
    return [data[i : i + POINT] for i in range(0, len(data), POINT)]


def _box_key(my_key: MaskKey, peer_public: bytes, job: str, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(b"veil-training-group-key-salt\x00" + job.encode()).digest(),
        info=f"veil-training-group-key-v1|{lo}|{hi}".encode(),
    ).derive(my_key.shared_secret(peer_public))


def seal_group_secret(
    secret: bytes, my_key: MaskKey, me: str, peer: str, peer_public: bytes, job: str
) -> bytes:
    """``nonce ‖ AES-256-GCM(secret)`` for ``peer``; AAD binds the job and both names."""
    nonce = os.urandom(12)
    aad = f"{job}|{me}|{peer}".encode()
    return nonce + AESGCM(_box_key(my_key, peer_public, job, me, peer)).encrypt(nonce, secret, aad)


def open_group_secret(
    box: bytes, my_key: MaskKey, me: str, sender: str, sender_public: bytes, job: str
) -> bytes:
    if len(box) < 12 + 16:
        raise InvalidArgument("sealed group key is too short")
    aad = f"{job}|{sender}|{me}".encode()
    try:
        secret = AESGCM(_box_key(my_key, sender_public, job, sender, me)).decrypt(
            box[:12], box[12:], aad
        )
    except InvalidTag:
        raise InvalidArgument(
            f"the group key sealed by {sender!r} does not open (tampered or wrong key)"
        ) from None
    if len(secret) != GROUP_SECRET_BYTES:
        raise InvalidArgument("the group key has the wrong length")
    return secret
