"""C2SP signed notes (Ed25519) and C2SP tlog-checkpoint v1.0.0 checkpoints.

A *signed note* (c2sp.org/signed-note, golang.org/x/mod/sumdb/note) is UTF-8 text
ending in a newline, a blank line, then signature lines ``— <key name>
base64(key ID || signature)``.  The key ID is the first four bytes (big-endian) of
``SHA-256(key name || 0x0A || 0x01 || Ed25519 public key)``; it only *selects* a
key -- it is deliberately short and not a security boundary: whoever forges a
colliding ID still fails signature verification against the configured key.

A *checkpoint* (c2sp.org/tlog-checkpoint) is a note whose text is the log's origin,
its tree size in decimal and its RFC 9162 root hash in base64, optionally followed by
extension lines.  By signing a checkpoint the log commits to the entire content of
the tree at that size; two signed checkpoints that are not consistent (no
consistency proof joins them) prove the log forked.

Keys travel as strings: verifier keys ``name+hex(keyID)+base64(0x01 || public key)``
(safe to publish), signer keys ``PRIVATE+KEY+name+hex(keyID)+base64(0x01 || seed)``
(secret: only ever written to 0600 key files, never logged or repr'd).

Decoding is strict: base64 must be canonical (re-encoding gives the same text), so
every change to a signature line's characters is detected, not just changes to the
decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from veil._internal.merkle import HASH_SIZE
from veil.errors import (
    InvalidKey,
    InvalidSignature,
    MalformedNote,
    OriginMismatch,
    UnverifiedNote,
)

SIG_TYPE_ED25519 = 0x01
"""C2SP signed-note signature type identifier byte for Ed25519."""

ED25519_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
KEY_ID_SIZE = 4
SIGNATURE_PREFIX = "— "
"""Em dash (U+2014) and a space: how every signature line starts."""

MAX_SIGNATURES = 100
"""Parsing stops (malformed note) beyond this many signature lines; the spec requires
accepting at least 16."""

PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"

_HEX8 = re.compile(r"[0-9a-f]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode_strict(text: str) -> bytes | None:
    """Standard base64 with padding; ``None`` unless ``text`` is the canonical
    encoding of its bytes (so no two strings decode to the same value)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if _b64encode(raw) == text else None


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty with no Unicode space, no control character and no '+'."""
    return bool(name) and not any(c.isspace() or c < " " or c == "+" for c in name)


def key_id(name: str, typed_public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type byte || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + typed_public_key).digest()
    return int.from_bytes(digest[:KEY_ID_SIZE], "big")


class Verifier:
    """An Ed25519 note verifier key: a name, its key ID and the public key."""

    __slots__ = ("_public_key", "key_id", "name", "public_key_bytes")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_valid_key_name(name):
            raise InvalidKey(f"invalid key name {name!r}")
        if len(public_key) != ED25519_KEY_SIZE:
            raise InvalidKey(f"Ed25519 public key is {len(public_key)} bytes, want 32")
        self.name = name
        self.public_key_bytes = public_key
        self.key_id = key_id(name, bytes([SIG_TYPE_ED25519]) + public_key)
        self._public_key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Parse ``name+hex(keyID)+base64(0x01 || key)``, checking the key ID."""
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise InvalidKey("malformed verifier key")
        name, hex_id, key64 = parts
        raw = _b64decode_strict(key64)
        if not is_valid_key_name(name) or not _HEX8.fullmatch(hex_id) or not raw:
            raise InvalidKey("malformed verifier key")
        if raw[0] != SIG_TYPE_ED25519:
            raise InvalidKey(f"unknown verifier key algorithm {raw[0]:#04x}")
        if len(raw) != 1 + ED25519_KEY_SIZE:
            raise InvalidKey("malformed verifier key: wrong key length")
        if int(hex_id, 16) != key_id(name, raw):
            raise InvalidKey("verifier key id does not match its name and key")
        return cls(name, raw[1:])

    @property
    def key_string(self) -> str:
        """The publishable verifier key string ``name+hex(keyID)+base64(0x01||key)``."""
        typed = bytes([SIG_TYPE_ED25519]) + self.public_key_bytes
        return f"{self.name}+{self.key_id:08x}+{_b64encode(typed)}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is a valid Ed25519 signature of ``message``."""
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            self._public_key.verify(signature, message)
        except _CryptoInvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Verifier)
            and self.name == other.name
            and self.public_key_bytes == other.public_key_bytes
        )

    def __hash__(self) -> int:
        return hash((self.name, self.public_key_bytes))

    def __repr__(self) -> str:
        return f"Verifier({self.key_string!r})"


class Signer:
    """An Ed25519 note signer.  The seed never appears in ``repr`` or logs; it leaves
    the process only through :meth:`private_key_string` / :meth:`save`."""

    __slots__ = ("_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._verifier = Verifier(name, private_key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A fresh key from the OS CSPRNG."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        if len(seed) != ED25519_KEY_SIZE:
            raise InvalidKey(f"Ed25519 seed is {len(seed)} bytes, want 32")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def parse(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+name+hex(keyID)+base64(0x01 || seed)``.

        The key ID names the *public* key, so it is checked after deriving the public
        key from the seed: a mismatch means a corrupted or spliced key string.
        """
        if not skey.startswith(PRIVATE_KEY_PREFIX):
            raise InvalidKey("malformed signer key")
        parts = skey[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise InvalidKey("malformed signer key")
        name, hex_id, key64 = parts
        raw = _b64decode_strict(key64)
        if not is_valid_key_name(name) or not _HEX8.fullmatch(hex_id) or not raw:
            raise InvalidKey("malformed signer key")
        if raw[0] != SIG_TYPE_ED25519:
            raise InvalidKey(f"unknown signer key algorithm {raw[0]:#04x}")
        if len(raw) != 1 + ED25519_KEY_SIZE:
            raise InvalidKey("malformed signer key: wrong seed length")
        signer = cls.from_seed(name, raw[1:])
        if signer.key_id != int(hex_id, 16):
            raise InvalidKey("signer key id does not match its name and key")
        return signer

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signer:
        """Read a signer key file written by :meth:`save`."""
        return cls.parse(Path(path).read_text(encoding="utf-8").strip())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the signer key string to ``path`` with mode 0600 (owner only)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (self.private_key_string() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    def verifier(self) -> Verifier:
        return self._verifier

    def private_key_string(self) -> str:
        """The SECRET signer key string; only for writing a 0600 key file."""
        typed = bytes([SIG_TYPE_ED25519]) + self._private_key.private_bytes_raw()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{_b64encode(typed)}"

    def sign(self, message: bytes) -> bytes:
        """A raw 64-byte Ed25519 signature of ``message``."""
        return self._private_key.sign(message)

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and the raw signature bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The encoded signature line, including its newline."""
        blob = self.key_id.to_bytes(KEY_ID_SIZE, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {_b64encode(blob)}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text (trusted only because ``signatures`` verified) plus
    signatures from keys the caller did not know (kept, not trusted)."""

    text: str
    signatures: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = field(default=())


def _check_note_chars(text: str) -> None:
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNote("malformed note: control character")


def sign_note(text: str, *signers: Signer) -> bytes:
    """Sign ``text`` (which must end in a newline) and encode the signed note."""
    if not signers:
        raise InvalidKey("sign_note needs at least one signer")
    if not text.endswith("\n"):
        raise MalformedNote("malformed note: text must end with a newline")
    _check_note_chars(text)
    message = text.encode("utf-8")
    lines = [NoteSignature(s.name, s.key_id, s.sign(message)).line() for s in signers]
    return (text + "\n" + "".join(lines)).encode("utf-8")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNote("malformed note: bad signature line")
    name, sep, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
    raw = _b64decode_strict(b64) if sep else None
    if raw is None or not is_valid_key_name(name) or len(raw) <= KEY_ID_SIZE:
        raise MalformedNote("malformed note: bad signature line")
    return NoteSignature(name, int.from_bytes(raw[:KEY_ID_SIZE], "big"), raw[KEY_ID_SIZE:])


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a signed note and verify the signatures of known keys.

    Follows C2SP signed-note: a signature is attributed to a key only when both
    name and key ID match; signatures from unknown keys are ignored (returned in
    ``unverified``); any signature from a known key that fails to verify rejects the
    whole note (:class:`InvalidSignature`); with no verified signature the text must
    not be trusted (:class:`UnverifiedNote`).  Ill-formed input raises
    :class:`MalformedNote`; a signature whose name and ID match two known verifiers
    (even the same key listed twice, as in the Go reference) raises
    :class:`InvalidKey` ("ambiguous key").
    """
    known: dict[tuple[str, int], list[Verifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_id), []).append(v)
    try:
        msg = note.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNote("malformed note: not UTF-8") from None
    _check_note_chars(msg)
    split = msg.rfind("\n\n")
    if split < 0:
        raise MalformedNote("malformed note: no signature block")
    text, sig_block = msg[: split + 1], msg[split + 2 :]
    if not sig_block.endswith("\n"):
        raise MalformedNote("malformed note: signature block must end with a newline")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote("malformed note: too many signatures")
    message = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, int]] = set()
    for line in lines:
        sig = _parse_signature_line(line)
        candidates = known.get((sig.name, sig.key_id))
        if not candidates:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if len(candidates) > 1:  # as golang.org/x/mod/sumdb/note: even identical twins
            raise InvalidKey(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not candidates[0].verify(message, sig.signature):
            raise InvalidSignature(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified.append(sig)
    if not verified:
        raise UnverifiedNote("note has no verifiable signatures")
    return Note(text, tuple(verified), tuple(unverified))


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or any(c < " " for c in self.origin):
            raise MalformedNote("malformed checkpoint: invalid origin")
        if self.size < 0:
            raise MalformedNote("malformed checkpoint: negative size")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedNote(f"malformed checkpoint: root hash is not {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or any(c < " " for c in ext):
                raise MalformedNote("malformed checkpoint: invalid extension line")

    def to_text(self) -> str:
        """The note text: one field per line, ending in a newline."""
        lines = [self.origin, str(self.size), _b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body exactly as :meth:`to_text` writes it."""
        if not text.endswith("\n"):
            raise MalformedNote("malformed checkpoint: must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNote("malformed checkpoint: fewer than three lines")
        origin, size_text, root64, *extensions = lines
        if not _DECIMAL.fullmatch(size_text):
            raise MalformedNote("malformed checkpoint: tree size is not canonical decimal")
        root = _b64decode_strict(root64)
        if root is None:
            raise MalformedNote("malformed checkpoint: root hash is not canonical base64")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note for ``checkpoint``.  Its origin should equal the key name."""
    return sign_note(checkpoint.to_text(), signer)


def verify_checkpoint(note: bytes, verifier: Verifier, *, origin: str | None = None) -> Checkpoint:
    """Open a checkpoint note that must carry a valid signature by ``verifier``.

    ``origin`` is the log identity expected on the first line; by default the
    verifier's key name (the C2SP recommendation).  Checking it stops a validly
    signed checkpoint of one log being presented as another's.
    """
    opened = open_note(note, [verifier])
    checkpoint = Checkpoint.parse(opened.text)
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise OriginMismatch(f"checkpoint origin {checkpoint.origin!r} is not {expected!r}")
    return checkpoint
