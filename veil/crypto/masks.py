"""Pairwise cancelling masks for secure sums (X25519 + HKDF-SHA256), and signed mask keys.

Secure sum.  Providers ``P_1 … P_t`` each hold a value ``v_i``; the platform must learn
``Σ v_i mod M`` and nothing else.  Each pair ``{i, j}`` derives the same mask
``m_ij ∈ [0, M)`` from an X25519 key agreement; ``P_i`` adds ``+m_ij`` when its name sorts
before ``P_j``'s and ``−m_ij`` otherwise.  Summed over all participants every mask
appears once with each sign, so ``Σ_i (v_i + mask_i) ≡ Σ_i v_i (mod M)``, while each
single ``v_i + mask_i`` is uniformly distributed (statistically: the mask is reduced
from 128 extra bits) to anyone missing one of ``P_i``'s pairwise secrets.

Limits (for LEAKAGE.md):

* **Collusion.** The platform together with all providers but ``P_i`` knows every
  ``m_ij`` and so learns ``v_i``.  With all but two, it learns only their sum.
* **Drop-out.** If a participant does not answer, the others' masks do not cancel and the
  combined value is uniformly random — it looks like any other number.  The caller must
  notice the missing answer and re-run over the remaining set with a fresh
  ``request_id``, or fail the request; never decode an incomplete sum.
* **Mask reuse.** Masks depend only on (pair, ``request_id``, ``context``).  Two
  different values masked under the same triple reveal their difference, so a provider
  must derive masks only for a request id it has itself checked to be fresh (the replay
  registry), and use distinct ``context`` strings for distinct sums within one request.
* **Key substitution.** The platform relays mask public keys.  If it could substitute its
  own, it would know the masks and strip them; so keys travel as :class:`SignedMaskKey`
  (signed with the provider's TLS key, checked against the CA and the identity
  ``veil://provider/<name>``).  A replayed *older* signed key of the same provider makes
  the masks not cancel (a wrong sum), not a leak: the platform never has the private key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.certs import cert_identity_uris
from veil.crypto._internal.keyfile import read_secret_file, write_secret_file
from veil.errors import ConfigError, InvalidArgument, InvalidMaskKey
from veil.tls import PeerIdentity

__all__ = [
    "MASK_EXTRA_BITS",
    "MaskKey",
    "SignedMaskKey",
    "combine",
    "mask_contribution",
    "mask_info",
    "mask_salt",
    "my_mask",
    "pairwise_mask",
    "sign_mask_key",
    "verify_mask_key",
]

log = logging.getLogger(__name__)

MASK_EXTRA_BITS = 128
"""HKDF output exceeds the modulus by this many bits: the reduced mask is within
statistical distance 2^-128 of uniform."""

_SIGNED_KEY_DOMAIN = b"veil-mask-key-v1\x00"
_MASK_INFO_PREFIX = "veil-mask-v1"
_SIGNED_KEY_MAGIC = b"VMK1"
_MASK_SALT_PREFIX = b"veil-mask-salt-v1\x00"
_MAX_CACHED_SECRETS = 1024


class MaskKey:
    """A provider's X25519 key for pairwise masks (private part: a 0600 file only).

    Shared secrets with peers are cached in memory (they do not change between requests;
    every mask is then one HKDF call).  ``repr`` shows the public key id only.
    """

    __slots__ = ("__weakref__", "_cache", "_private", "_public")

    def __init__(self, private: x25519.X25519PrivateKey) -> None:
        if not isinstance(private, x25519.X25519PrivateKey):
            raise InvalidArgument("a mask key must be an X25519 private key")
        self._private = private
        self._public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._cache: dict[bytes, bytes] = {}

    @classmethod
    def generate(cls) -> MaskKey:
        return cls(x25519.X25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the private key as PKCS#8 PEM to a new 0600 file."""
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret_file(path, pem, overwrite=overwrite)
        log.info("saved mask key %s to %s", self.key_id, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MaskKey:
        """Read a key written by :meth:`save`; refuses files others can access."""
        data = read_secret_file(path)
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(
                str(path), "mask key", "is not an unencrypted PEM private key"
            ) from None
        if not isinstance(private, x25519.X25519PrivateKey):
            raise ConfigError(str(path), "mask key", "is not an X25519 key")
        return cls(private)

    def public_bytes(self) -> bytes:
        """The 32-byte raw X25519 public key."""
        return self._public

    @property
    def key_id(self) -> str:
        return "x25519-" + hashlib.sha256(self._public).hexdigest()[:16]

    def shared_secret(self, peer_public: bytes) -> bytes:
        """X25519(my private, peer public); refuses malformed and low-order peer keys."""
        peer_public = bytes(peer_public)
        cached = self._cache.get(peer_public)
        if cached is not None:
            return cached
        if len(peer_public) != 32:
            raise InvalidMaskKey(f"peer mask key is {len(peer_public)} bytes, not 32")
        try:
            secret = self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # all-zero output: a low-order point that would fix the mask
            raise InvalidMaskKey("peer mask key is a low-order point") from None
        if len(self._cache) >= _MAX_CACHED_SECRETS:
            self._cache.clear()
        self._cache[peer_public] = secret
        return secret

    def __repr__(self) -> str:
        return f"MaskKey(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("MaskKey holds a private key and cannot be pickled; use save()")


# --- signed mask keys -------------------------------------------------------------------


def _signed_message(identity_uri: str, public_key: bytes) -> bytes:
    uri = identity_uri.encode()
    return _SIGNED_KEY_DOMAIN + struct.pack(">H", len(uri)) + uri + public_key


@dataclass(frozen=True)
class SignedMaskKey:
    """An X25519 public key signed (ECDSA P-256, SHA-256) by a provider's TLS key.

    The signature covers ``"veil-mask-key-v1\\0" ‖ len(uri) ‖ uri ‖ public_key`` where
    ``uri`` is the signer's identity ``veil://provider/<name>``; ``cert_pem`` is the
    signer's TLS certificate, checked against the CA by :func:`verify_mask_key`.
    """

    public_key: bytes
    signature: bytes
    cert_pem: bytes

    def to_bytes(self) -> bytes:
        """``"VMK1" ‖ u16 len ‖ public_key ‖ u16 len ‖ signature ‖ u32 len ‖ cert_pem``."""
        return (
            _SIGNED_KEY_MAGIC
            + struct.pack(">H", len(self.public_key))
            + self.public_key
            + struct.pack(">H", len(self.signature))
            + self.signature
            + struct.pack(">I", len(self.cert_pem))
            + self.cert_pem
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedMaskKey:
        try:
            if data[:4] != _SIGNED_KEY_MAGIC:
                raise ValueError
            pos = 4
            parts = []
            for fmt in (">H", ">H", ">I"):
                size = struct.calcsize(fmt)
                (length,) = struct.unpack_from(fmt, data, pos)
                pos += size
                if pos + length > len(data):
                    raise ValueError
                parts.append(bytes(data[pos : pos + length]))
                pos += length
            if pos != len(data):
                raise ValueError
        except (ValueError, struct.error):
            raise InvalidMaskKey("signed mask key: malformed encoding") from None
        return cls(parts[0], parts[1], parts[2])


def _pem_bytes(pem: bytes | str) -> bytes:
    return pem.encode() if isinstance(pem, str) else bytes(pem)


def sign_mask_key(
    mask_key: MaskKey, tls_key_path: str | os.PathLike[str], cert_pem: bytes | str
) -> SignedMaskKey:
    """Sign ``mask_key``'s public key with the provider's TLS private key (ECDSA P-256).

    ``cert_pem`` must be the certificate of that key and carry exactly one identity URI.
    """
    cert_data = _pem_bytes(cert_pem)
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise InvalidArgument("sign_mask_key: cert_pem is not a PEM certificate") from None
    uris = cert_identity_uris(cert)
    if len(uris) != 1:
        raise InvalidArgument(f"sign_mask_key: certificate must carry one veil:// URI, has {uris}")
    try:
        with open(tls_key_path, "rb") as fh:
            tls_key = serialization.load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        raise ConfigError(str(tls_key_path), "tls key", exc.strerror or "cannot be read") from None
    except (ValueError, TypeError):
        raise ConfigError(str(tls_key_path), "tls key", "is not a PEM private key") from None
    if not isinstance(tls_key, ec.EllipticCurvePrivateKey) or not isinstance(
        tls_key.curve, ec.SECP256R1
    ):
        raise ConfigError(str(tls_key_path), "tls key", "is not an ECDSA P-256 key")
    if tls_key.public_key() != cert.public_key():
        raise InvalidArgument("sign_mask_key: the TLS key does not match the certificate")
    public = mask_key.public_bytes()
    signature = tls_key.sign(_signed_message(uris[0], public), ec.ECDSA(hashes.SHA256()))
    return SignedMaskKey(public, signature, cert_data)


def _reject(expected: PeerIdentity, check: str, message: str) -> InvalidMaskKey:
    return InvalidMaskKey(
        f"mask key for {expected.uri}: {message}",
        details={"identity": expected.uri, "check": check},
    )


def verify_mask_key(
    signed: SignedMaskKey,
    ca_pem: bytes | str,
    expected: PeerIdentity,
    *,
    now: dt.datetime | None = None,
) -> bytes:
    """The X25519 public key in ``signed``, after checking everything that binds it.

    Checks, in order: the certificate parses and was issued by (one of) the CA
    certificate(s) in ``ca_pem``; it is valid at ``now`` and not a CA; it carries
    exactly one identity, ``expected``; its key is ECDSA P-256; the signature over the
    identity and the public key verifies; the public key is 32 bytes.  Any failure
    raises :class:`~veil.errors.InvalidMaskKey` naming the check (``details["check"]``).
    """
    try:
        cert = x509.load_pem_x509_certificate(_pem_bytes(signed.cert_pem))
    except ValueError:
        raise _reject(expected, "certificate", "certificate is not valid PEM") from None
    try:
        cas = x509.load_pem_x509_certificates(_pem_bytes(ca_pem))
    except ValueError:
        raise InvalidArgument("verify_mask_key: ca_pem holds no PEM certificate") from None
    if not any(_issued_by(cert, ca) for ca in cas):
        raise _reject(expected, "issuer", "certificate was not issued by the trusted CA")
    when = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise _reject(expected, "validity", "certificate is expired or not yet valid")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise _reject(expected, "basic_constraints", "certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    uris = cert_identity_uris(cert)
    if uris != [expected.uri]:
        raise _reject(expected, "identity", f"certificate identifies {uris}, not {expected.uri}")
    cert_key = cert.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or not isinstance(
        cert_key.curve, ec.SECP256R1
    ):
        raise _reject(expected, "key_type", "certificate key is not ECDSA P-256")
    try:
        cert_key.verify(
            signed.signature,
            _signed_message(expected.uri, bytes(signed.public_key)),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise _reject(expected, "signature", "signature does not verify") from None
    if len(signed.public_key) != 32:
        raise _reject(expected, "length", "public key is not 32 bytes")
    return bytes(signed.public_key)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- masks ------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "|" in name:
        raise InvalidArgument(f"participant name {name!r} must be a non-empty string without '|'")


def mask_salt(request_id: str | bytes) -> bytes:
    """HKDF salt: ``SHA-256("veil-mask-salt-v1\\0" ‖ request_id)``.

    Hashed to a fixed length because HKDF's salt is an HMAC key: HMAC zero-pads short keys
    and hashes long ones, so raw salts ``"r"`` and ``"r\\0"`` (or a long id and its hash)
    would give identical masks — a platform choosing request ids could force mask reuse.
    """
    rid = request_id.encode() if isinstance(request_id, str) else bytes(request_id)
    if not rid:
        raise InvalidArgument("request_id must be non-empty: masks are derived per request")
    return hashlib.sha256(_MASK_SALT_PREFIX + rid).digest()


def mask_info(context: str, name_a: str, name_b: str) -> bytes:
    """HKDF ``info``: ``veil-mask-v1|<context>|<min(name)>|<max(name)>`` (UTF-8)."""
    lo, hi = sorted((name_a, name_b))
    return f"{_MASK_INFO_PREFIX}|{context}|{lo}|{hi}".encode()


def pairwise_mask(
    my_key: MaskKey,
    my_name: str,
    peer_public: bytes,
    peer_name: str,
    *,
    request_id: str | bytes,
    context: str,
    modulus: int,
) -> int:
    """The mask ``m_ij ∈ [0, modulus)`` this pair shares for (``request_id``, ``context``).

    ``HKDF-SHA256(ikm = X25519 shared secret, salt = mask_salt(request_id),
    info = mask_info(…))``
    expanded to ``|modulus| + 128`` bits, read big-endian and reduced mod ``modulus``:
    both sides get the same value, statistically uniform (distance < 2^-128).
    """
    _check_name(my_name)
    _check_name(peer_name)
    if my_name == peer_name:
        raise InvalidArgument(f"pairwise mask between {my_name!r} and itself")
    modulus = int(modulus)
    if modulus < 2:
        raise InvalidArgument("mask modulus must be at least 2")
    length = (modulus.bit_length() + MASK_EXTRA_BITS + 7) // 8
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=mask_salt(request_id),
        info=mask_info(context, my_name, peer_name),
    ).derive(my_key.shared_secret(peer_public))
    return int.from_bytes(okm, "big") % modulus


def my_mask(
    my_key: MaskKey,
    my_name: str,
    peers: Mapping[str, bytes],
    *,
    request_id: str | bytes,
    context: str,
    modulus: int,
) -> int:
    """``Σ_{j≠i} ±m_ij mod modulus`` (``+`` when ``my_name < peer``, ``−`` otherwise).

    ``peers`` maps every other participant's name to its verified mask public key; an
    entry for ``my_name`` itself is ignored if it holds my own key (so the whole roster
    can be passed).  Over all participants the masks sum to 0 mod ``modulus``.
    """
    total = 0
    for name, public in peers.items():
        if name == my_name:
            if bytes(public) != my_key.public_bytes():
                raise InvalidMaskKey(f"the roster's key for {my_name!r} is not mine")
            continue
        m = pairwise_mask(
            my_key, my_name, public, name, request_id=request_id, context=context, modulus=modulus
        )
        total += m if my_name < name else -m
    return total % int(modulus)


def mask_contribution(value_int: int, mask: int, modulus: int) -> int:
    """A participant's masked value ``(value_int + mask) mod modulus`` (what it sends)."""
    return (int(value_int) + int(mask)) % int(modulus)


def combine(contributions: Iterable[int], modulus: int) -> int:
    """``Σ contributions mod modulus``: the true sum once every participant's is in.

    Decode a signed result with :func:`veil.crypto.centred`.
    """
    return sum(int(c) for c in contributions) % int(modulus)
