"""Signing keys, public keys as JWK, and key sets (JWKS).

Only two key types exist: Ed25519 (JWS ``EdDSA``) and P-256 (JWS ``ES256``).  The JWS
algorithm is a property of the *key*, never of the token: a verifier derives it from the key
it trusts and refuses a token whose header names anything else.  That is what defeats
algorithm confusion (``alg: none``, or HS256 with a public key used as the HMAC secret).

Key ids (``kid``) default to the RFC 7638 JWK thumbprint (SHA-256 over the required public
members in lexicographic order), so a ``kid`` names one key everywhere without coordination.

Private keys live only in :class:`SigningKey`: its ``repr`` shows the ``kid`` and algorithm,
it refuses to be pickled, and it is written only to a PKCS#8 PEM file with mode 0600 (and
refused when read from a file that group or others can access).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from veil.errors import ConfigError, InsecureKeyFile, InvalidArgument, InvalidJWK, UnknownKey
from veil.tokens.constants import ALGORITHMS

__all__ = [
    "KeySet",
    "PrivateKey",
    "PublicKey",
    "SigningKey",
    "VerifyingKey",
    "alg_for_key",
    "jwk_thumbprint",
]

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

KID_RE = re.compile(r"[A-Za-z0-9._:@+/=-]{1,128}")
"""A ``kid``: printable, no whitespace (it is written to key files and log lines)."""

PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""JWK members that carry secret material (RFC 7518 §6): never in a published key."""

_MAX_KEY_FILE_BYTES = 64 * 1024
_KEY_FILE_BANNER = "Veil signing key (PKCS#8). Keep private: mode 0600.\n"


def alg_for_key(key: object) -> str:
    """The only JWS algorithm allowed with ``key`` (public or private)."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise InvalidJWK(f"EC curve {key.curve.name} is not allowed; only P-256 (ES256)")
    raise InvalidJWK(f"key type {type(key).__name__} is not allowed; only Ed25519 and P-256")


def check_kid(kid: object) -> str:
    """Return ``kid`` if it is a well-formed key id, else raise :class:`InvalidJWK`."""
    if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
        raise InvalidJWK("kid must be 1-128 characters from A-Z a-z 0-9 . _ : @ + / = -")
    return kid


def _public_members(key: PublicKey) -> dict[str, str]:
    """The required public JWK members (kty, crv, x[, y]) of ``key``."""
    jwk: dict[str, Any]
    if isinstance(key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    names = ("kty", "crv", "x", "y") if jwk["kty"] == "EC" else ("kty", "crv", "x")
    return {name: str(jwk[name]) for name in names}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public Ed25519 or P-256 JWK."""
    names = ("crv", "kty", "x", "y") if jwk.get("kty") == "EC" else ("crv", "kty", "x")
    try:
        members = {name: jwk[name] for name in names}
    except KeyError as exc:
        raise InvalidJWK(f"JWK lacks the required member {exc.args[0]!r}") from None
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, eq=False)
class VerifyingKey:
    """A trusted public key: its ``kid``, its one algorithm, and the key itself."""

    kid: str
    alg: str
    key: PublicKey

    @classmethod
    def from_public_key(cls, key: PublicKey, kid: str | None = None) -> VerifyingKey:
        alg = alg_for_key(key)
        members = _public_members(key)
        return cls(check_kid(kid) if kid is not None else jwk_thumbprint(members), alg, key)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, require_kid: bool = True) -> VerifyingKey:
        """Parse a *public* JWK, refusing private members and anything but Ed25519 / P-256.

        Optional members are checked when present: ``alg`` must be the key's algorithm,
        ``use`` must be ``sig``, ``key_ops`` must be exactly ``["verify"]``.
        """
        if not isinstance(jwk, Mapping) or not all(isinstance(k, str) for k in jwk):
            raise InvalidJWK("a JWK must be a JSON object")
        private = sorted(PRIVATE_JWK_MEMBERS.intersection(jwk))
        if private:
            raise InvalidJWK(
                f"JWK carries private key members {', '.join(private)}; publish public keys only"
            )
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if not (kty == "OKP" and crv == "Ed25519") and not (kty == "EC" and crv == "P-256"):
            raise InvalidJWK(
                f"JWK kty={str(kty)[:16]!r} crv={str(crv)[:16]!r} is not allowed; "
                "only OKP/Ed25519 and EC/P-256"
            )
        members = ("x", "y") if kty == "EC" else ("x",)
        if any(not isinstance(jwk.get(m), str) for m in members):
            raise InvalidJWK(f"JWK {kty}/{crv} needs string members {', '.join(members)}")
        try:
            if kty == "EC":
                key: Any = ECAlgorithm.from_jwk({m: jwk[m] for m in ("kty", "crv", "x", "y")})
            else:
                key = OKPAlgorithm.from_jwk({m: jwk[m] for m in ("kty", "crv", "x")})
        except Exception as exc:  # pyjwt raises InvalidKeyError, cryptography ValueError
            raise InvalidJWK(f"JWK {kty}/{crv} is not a valid public key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise InvalidJWK("JWK does not describe a public key")
        alg = alg_for_key(key)
        if "alg" in jwk and jwk["alg"] != alg:
            raise InvalidJWK(f"JWK alg {str(jwk['alg'])[:16]!r} does not match its key ({alg})")
        if "use" in jwk and jwk["use"] != "sig":
            raise InvalidJWK("JWK use must be 'sig'")
        if "key_ops" in jwk and jwk["key_ops"] != ["verify"]:
            raise InvalidJWK("JWK key_ops must be ['verify'] for a public signature key")
        if "kid" in jwk:
            kid = check_kid(jwk["kid"])
        elif require_kid:
            raise InvalidJWK("JWK has no kid")
        else:
            kid = jwk_thumbprint(jwk)
        return cls(kid, alg, key)

    def to_jwk(self) -> dict[str, str]:
        """Public JWK with ``kid``, ``alg`` and ``use: sig``."""
        return {**_public_members(self.key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def thumbprint(self) -> str:
        return jwk_thumbprint(_public_members(self.key))

    def same_key(self, other: VerifyingKey) -> bool:
        """True when both hold the same public key (whatever their ``kid``)."""
        return self.thumbprint() == other.thumbprint()

    def __repr__(self) -> str:
        return f"VerifyingKey(kid={self.kid!r}, alg={self.alg!r})"


class SigningKey:
    """A private signing key with its ``kid`` and algorithm.

    Build one with :meth:`generate`, :meth:`load` or from a ``cryptography`` private key.
    """

    __slots__ = ("_alg", "_kid", "_private")

    def __init__(self, private_key: PrivateKey, *, kid: str | None = None) -> None:
        if not isinstance(private_key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise InvalidArgument("a signing key must be an Ed25519 or P-256 private key")
        self._alg = alg_for_key(private_key)
        self._private = private_key
        public = VerifyingKey.from_public_key(private_key.public_key(), kid)
        self._kid = public.kid

    @classmethod
    def generate(cls, alg: str = "EdDSA", kid: str | None = None) -> SigningKey:
        """A fresh key for ``alg`` (``EdDSA`` → Ed25519, ``ES256`` → P-256)."""
        if alg == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), kid=kid)
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), kid=kid)
        raise InvalidArgument(f"alg must be one of {', '.join(ALGORITHMS)}, got {alg[:16]!r}")

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> str:
        return self._alg

    @property
    def public_key(self) -> PublicKey:
        return self._private.public_key()

    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey(self._kid, self._alg, self.public_key)

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use: sig``."""
        return self.verifying_key().to_jwk()

    def thumbprint(self) -> str:
        return self.verifying_key().thumbprint()

    def __repr__(self) -> str:
        return f"SigningKey(kid={self._kid!r}, alg={self._alg!r})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SigningKey cannot be pickled; save it to a 0600 key file instead")

    # --- key files ---

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the key as PKCS#8 PEM, mode 0600, atomically (temp file, then link/rename).

        The ``kid`` is kept as explanatory text before the PEM block (RFC 7468 §2 allows
        it; OpenSSL and ``cryptography`` skip it).  An existing file is refused unless
        ``overwrite``: replacing a key by accident loses the identity it proves.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise ConfigError(str(target), "key file", "already exists; refusing to overwrite")
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        data = f"{_KEY_FILE_BANNER}kid: {self._kid}\n".encode() + pem
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            if overwrite:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)  # atomic: fails if the target appeared meanwhile
        except FileExistsError:
            raise ConfigError(
                str(target), "key file", "already exists; refusing to overwrite"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a key written by :meth:`save` (or any unencrypted PKCS#8 PEM key).

        Refused with :class:`~veil.errors.InsecureKeyFile` when group or others have any
        access to the file: a key others could read is no longer a secret.  The mode is
        checked on the opened descriptor, so a swap between check and read is impossible.
        """
        name = str(path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ConfigError(name, "key file", exc.strerror or "cannot be opened") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(name, "key file", "is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise InsecureKeyFile(
                    name,
                    "permissions",
                    f"mode {mode:04o} lets group/others access the private key; "
                    f"run chmod 600 {name}",
                )
            data = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise ConfigError(name, "key file", "is too large to be a key")
        kid = None
        head, sep, _ = data.partition(b"-----BEGIN")
        if not sep:
            raise ConfigError(name, "key file", "holds no PEM block")
        for line in head.decode("utf-8", "replace").splitlines():
            if line.startswith("kid: "):
                kid = line[len("kid: ") :].strip()
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            reason = "is encrypted" if "encrypted" in str(exc).lower() else "is not a PEM key"
            raise ConfigError(name, "key file", reason) from None
        if not isinstance(private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(name, "key file", "holds neither an Ed25519 nor a P-256 key")
        try:
            return cls(private, kid=kid)
        except InvalidJWK as exc:
            raise ConfigError(name, "key file", exc.message) from None


class KeySet:
    """Trusted public keys by ``kid`` (a verifier's view of a JWKS).

    ``label`` names the set in error messages ("platform keys", "EIA keys").
    """

    def __init__(self, keys: Iterable[VerifyingKey] = (), *, label: str = "key set") -> None:
        self.label = label
        self._keys: dict[str, VerifyingKey] = {}
        for key in keys:
            if key.kid in self._keys:
                raise InvalidJWK(f"{label}: kid {key.kid!r} appears twice")
            self._keys[key.kid] = key

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], *, label: str = "key set") -> KeySet:
        """Parse a published JWKS ``{"keys": [...]}``; every key needs a unique ``kid``.

        A JWKS holding private members (``d`` …) is refused outright: publishing it was
        a leak, and accepting it would normalise that.
        """
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise InvalidJWK(f"{label}: a JWKS must be an object with a 'keys' list")
        keys = []
        for i, jwk in enumerate(jwks["keys"]):
            try:
                keys.append(VerifyingKey.from_jwk(jwk))
            except InvalidJWK as exc:
                raise InvalidJWK(f"{label}: key {i}: {exc.message}") from None
        return cls(keys, label=label)

    @classmethod
    def of(cls, *keys: SigningKey | VerifyingKey, label: str = "key set") -> KeySet:
        """The public halves of ``keys``."""
        return cls(
            (k.verifying_key() if isinstance(k, SigningKey) else k for k in keys), label=label
        )

    def get(self, kid: str) -> VerifyingKey:
        """The key named ``kid``, or :class:`~veil.errors.UnknownKey`."""
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownKey(f"{self.label}: no key with kid {str(kid)[:128]!r}")
        return key

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [key.to_jwk() for key in self._keys.values()]}

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[VerifyingKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet({self.label!r}, kids={list(self._keys)!r})"


def as_verifying_key(found: object, kid: str) -> VerifyingKey:
    """Normalise what a key look-up returned (a :class:`VerifyingKey`, a public JWK or a
    ``cryptography`` public key) into a :class:`VerifyingKey` for ``kid``.

    A private key is refused: a look-up that hands out private keys is a bug.
    """
    if isinstance(found, VerifyingKey):
        key = found
    elif isinstance(found, Mapping):
        key = VerifyingKey.from_jwk(found, require_kid=False)
        if "kid" not in found:
            key = VerifyingKey(kid, key.alg, key.key)
    elif isinstance(found, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        key = VerifyingKey(kid, alg_for_key(found), found)
    else:
        raise TypeError(f"key look-up returned {type(found).__name__}, not a public key")
    if key.kid != kid:
        raise UnknownKey(f"key look-up for kid {kid!r} returned key {key.kid!r}")
    return key
