"""Detail values sealed end to end, provider → institution, across the platform.

An institution asking for authorized detail sends a one-time X25519 public key; each
provider seals its answer to that key with HPKE (RFC 9180, base mode:
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM — ``cryptography``'s
implementation).  The platform and the gateway relay the ciphertext: a curious platform
learns which fields were asked and how large the answer is, not the values.

The HPKE ``info`` binds a blob to one request, one provider and one enterprise, so a
relay cannot move a provider's sealed answer into another request or attribute it to
another provider.  The key travels inside the platform-signed request token; a platform
that substitutes its own key (an active attack) is outside what this protects against —
see LEAKAGE.md.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veil.errors import InvalidArgument
from veil.v1 import common_pb2

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
INFO_PREFIX = b"veil-sealed-detail-v1"
PUBLIC_KEY_BYTES = 32


class OneTimeKey:
    """An institution's per-request recipient key; the private half never leaves memory."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def open(self, blob: bytes, *, request_id: str, provider: str, uscc: str) -> bytes:
        try:
            return SUITE.decrypt(blob, self._private, info=_info(request_id, provider, uscc))
        except (InvalidTag, ValueError):
            raise InvalidArgument(
                f"sealed answer from provider {provider!r} does not open for this request"
            ) from None

    def __repr__(self) -> str:
        return "OneTimeKey(<private>)"


def _info(request_id: str, provider: str, uscc: str) -> bytes:
    return b"|".join((INFO_PREFIX, request_id.encode(), provider.encode(), uscc.encode()))


def recipient_text(public_bytes: bytes) -> str:
    """The wire/claim form of a recipient key (base64url, no padding)."""
    check_public_key(public_bytes)
    return base64.urlsafe_b64encode(public_bytes).rstrip(b"=").decode()


def recipient_bytes(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise InvalidArgument("recipient key is not base64url") from None
    check_public_key(raw)
    return raw


def check_public_key(raw: bytes) -> None:
    if len(raw) != PUBLIC_KEY_BYTES:
        raise InvalidArgument(
            f"recipient_public_key must be a raw X25519 key of {PUBLIC_KEY_BYTES} bytes"
        )


def seal(
    public_bytes: bytes, plaintext: bytes, *, request_id: str, provider: str, uscc: str
) -> bytes:
    """Encrypt ``plaintext`` to the recipient (fresh ephemeral key every call)."""
    check_public_key(public_bytes)
    key = X25519PublicKey.from_public_bytes(public_bytes)
    return SUITE.encrypt(plaintext, key, info=_info(request_id, provider, uscc))


def seal_records(
    public_bytes: bytes,
    datasets: list[common_pb2.DatasetRecords],
    *,
    request_id: str,
    provider: str,
    uscc: str,
) -> common_pb2.SealedAnswer:
    plaintext = common_pb2.SealedRecords(datasets=datasets).SerializeToString(deterministic=True)
    blob = seal(public_bytes, plaintext, request_id=request_id, provider=provider, uscc=uscc)
    return common_pb2.SealedAnswer(provider=provider, ciphertext=blob)


def open_answers(
    key: OneTimeKey, answers: Iterable[common_pb2.SealedAnswer], *, request_id: str, uscc: str
) -> list[common_pb2.DatasetRecords]:
    """The institution's side: open every provider's sealed answer."""
    out: list[common_pb2.DatasetRecords] = []
    for answer in answers:
        plain = key.open(
            answer.ciphertext, request_id=request_id, provider=answer.provider, uscc=uscc
        )
        out.extend(common_pb2.SealedRecords.FromString(plain).datasets)
    return out
