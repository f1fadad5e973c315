"""Paillier encryption (phe keys, gmpy2 arithmetic) as Veil's protocols use it.

The scheme (Paillier 1999, with ``g = n + 1`` as phe uses):

* public key ``n = p·q``; plaintexts are residues mod ``n``, ciphertexts residues mod ``n²``;
* ``Enc(m; r) = (1 + m·n) · r^n  mod n²`` with ``r`` uniform in ``Z_n*`` — because
  ``(1 + n)^m ≡ 1 + m·n (mod n²)`` the first factor needs no exponentiation;
* ``Dec(c) = L(c^λ mod n²) · μ mod n`` with ``L(x) = (x − 1)/n``; done here, as in phe,
  with the Chinese remainder theorem over ``p²`` and ``q²`` (about 4× faster).

Homomorphisms on raw integers: ``Enc(a)·Enc(b) = Enc(a + b)``,
``Enc(a)·(1 + b·n) = Enc(a + b)``, ``Enc(a)^k = Enc(k·a)``, so
``Π Enc(w_j)^{x_j} = Enc(Σ w_j·x_j)`` — a dot product with plaintext ``x`` computed by
someone who never sees ``w``.

**Randomness is the security.**  ``Enc(a)^k`` has randomness ``r^k``; with ``k = 0`` the
result is the constant ``1``.  Whoever encrypted ``w`` (the platform, which also holds
the private key) can recompute ``Π Enc(w_j)^{x̂_j}`` for every guess ``x̂`` of a
low-entropy ``x`` and compare.  So every ciphertext that leaves a process must first be
multiplied by a fresh ``ρ = s^n`` with ``s`` uniform in ``Z_n*`` (:func:`rerandomize`):
the result is then a uniformly random encryption of its plaintext, independent of how
it was computed — statistically, even for the key holder.  :class:`Ciphertext` tracks
this (``rerandomized``) and :func:`ciphertext_bytes` refuses to serialise a ciphertext
that was transformed since its last re-randomization.

Timing: exponentiations by plaintext exponents (:func:`mul_plain`, :func:`dot`) take time
depending on the exponents' bits (zero digits are skipped); a peer timing a provider's
answers learns at most a noisy hint of the exponents' sizes.  Decryption uses
``gmpy2.powmod_sec`` (constant time in the secret exponents ``p − 1``, ``q − 1``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import phe
from gmpy2 import mpz

from veil.crypto._internal.keyfile import read_secret_file, write_secret_file
from veil.crypto._internal.multiexp import FixedBaseMultiExp, multi_exp
from veil.crypto.fixedpoint import FixedPoint, centred
from veil.errors import (
    ConfigError,
    InvalidArgument,
    KeyMismatch,
    MalformedCiphertext,
    StaleCiphertext,
)

if TYPE_CHECKING:
    from veil.crypto.pool import RandomnessPool

__all__ = [
    "MIN_MODULUS_BITS",
    "SMALL_MARGIN_BITS",
    "Ciphertext",
    "DotPlan",
    "FixedPoint",
    "PaillierKeys",
    "PublicKey",
    "add",
    "add_many",
    "add_plain",
    "as_public_key",
    "centred",
    "ciphertext_bytes",
    "ciphertext_from_bytes",
    "ciphertext_from_int",
    "dot",
    "encrypt",
    "full_randomizer",
    "mul_plain",
    "prepare_dot",
    "public_key_bytes",
    "public_key_from_bytes",
    "public_key_id",
    "rerandomize",
]

log = logging.getLogger(__name__)

MIN_MODULUS_BITS = 2048
"""The cryptographic floor (privacy-goals.md): no Paillier modulus below 2048 bits."""

SMALL_MARGIN_BITS = 128
"""How far below ``|p|`` the bound of :meth:`PaillierKeys.decrypt_small` must stay: a
uniform residue mod ``p`` lands in bound with probability at most ``2^-128``."""

_KEY_FILE_TYPE = "veil-paillier-private-key"


class PublicKey(phe.PaillierPublicKey):
    """A phe public key that also keeps ``n`` and ``n²`` as gmpy2 integers.

    It *is* a ``phe.PaillierPublicKey`` (equal to any phe key with the same ``n``), so phe
    code accepts it; Veil's functions take either and convert with :func:`as_public_key`.
    """

    def __init__(self, n: int) -> None:
        super().__init__(int(n))
        self.n_mpz = mpz(n)
        self.nsquare_mpz = self.n_mpz * self.n_mpz
        self.bits = int(n).bit_length()
        self.ciphertext_size = (2 * self.bits + 7) // 8
        """Wire width of a ciphertext in bytes: 2·|n| bits."""

    @property
    def key_id(self) -> str:
        return public_key_id(self)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, key_id={self.key_id!r})"


def as_public_key(pk: phe.PaillierPublicKey) -> PublicKey:
    """``pk`` as a :class:`PublicKey` (itself if it already is one)."""
    if isinstance(pk, PublicKey):
        return pk
    if isinstance(pk, phe.PaillierPublicKey):
        return PublicKey(pk.n)
    raise InvalidArgument(f"expected a Paillier public key, got {type(pk).__name__}")


def public_key_bytes(pk: phe.PaillierPublicKey) -> bytes:
    """The wire form of a public key: ``n`` as minimal big-endian bytes."""
    n = int(pk.n)
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def public_key_id(pk: phe.PaillierPublicKey) -> str:
    """A short stable identifier: ``paillier-`` + 16 hex digits of SHA-256(n bytes)."""
    return "paillier-" + hashlib.sha256(public_key_bytes(pk)).hexdigest()[:16]


def public_key_from_bytes(data: bytes, *, min_bits: int = MIN_MODULUS_BITS) -> PublicKey:
    """Parse :func:`public_key_bytes`; refuse a modulus that cannot be a Paillier key.

    Checks what can be checked without the factors: canonical encoding, at least
    ``min_bits`` bits, odd, not a perfect square, no factor below 1000.  (A key holder can
    still pick weak primes; that harms only what is encrypted under its own key — the
    statistical hiding of :func:`rerandomize` does not depend on the key being honest.)
    """
    if not data or data[0] == 0:
        raise InvalidArgument("Paillier public key: n must be non-empty minimal big-endian bytes")
    n = mpz(int.from_bytes(data, "big"))
    bits = int(n.bit_length())
    if bits < min_bits:
        raise InvalidArgument(
            f"Paillier public key: modulus has {bits} bits; at least {min_bits} are required"
        )
    if n % 2 == 0 or gmpy2.is_square(n) or gmpy2.gcd(n, _SMALL_PRIMORIAL) != 1:
        raise InvalidArgument("Paillier public key: modulus is not a product of two large primes")
    return PublicKey(int(n))


def _primorial(limit: int) -> mpz:
    out, p = mpz(1), mpz(2)
    while p < limit:
        out *= p
        p = gmpy2.next_prime(p)
    return out


_SMALL_PRIMORIAL = _primorial(1000)


def _secret_powmod(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
    """``gmpy2.powmod_sec`` (constant time in ``exponent``, a secret) with the GIL released
    meanwhile: a decryption in a worker thread does not stall the event loop's thread."""
    with gmpy2.context(allow_release_gil=True):
        return gmpy2.powmod_sec(base, exponent, modulus)


# --- ciphertexts ---------------------------------------------------------------------


class Ciphertext:
    """A Paillier ciphertext: a residue mod ``n²`` under one public key.

    Immutable.  ``rerandomized`` is true only for the direct output of :func:`encrypt` or
    :func:`rerandomize` in this process — i.e. carrying randomness nobody else knows and
    used nowhere else; every homomorphic operation clears it, and
    :func:`ciphertext_from_bytes` starts cleared (the sender knows the randomness).

    ``Ciphertext(pk, value)`` validates ``value`` like :func:`ciphertext_from_int`.
    """

    __slots__ = ("_c", "_fresh", "_pk")

    def __init__(self, public_key: phe.PaillierPublicKey, value: int) -> None:
        pk = as_public_key(public_key)
        self._pk = pk
        self._c = _checked(pk, value)
        self._fresh = False

    @classmethod
    def _make(cls, pk: PublicKey, c: mpz, fresh: bool) -> Ciphertext:
        out = cls.__new__(cls)
        out._pk, out._c, out._fresh = pk, c, fresh
        return out

    @property
    def public_key(self) -> PublicKey:
        return self._pk

    @property
    def value(self) -> int:
        """The raw ciphertext integer in ``(0, n²)``."""
        return int(self._c)

    @property
    def rerandomized(self) -> bool:
        return self._fresh

    def to_phe(self) -> phe.EncryptedNumber:
        """The same ciphertext as a phe ``EncryptedNumber`` (exponent 0: a raw integer)."""
        return phe.EncryptedNumber(self._pk, int(self._c), 0)

    @classmethod
    def from_phe(cls, enc: phe.EncryptedNumber) -> Ciphertext:
        """Wrap a phe ciphertext; phe's float exponent must be 0 (raw integer encoding)."""
        if enc.exponent != 0:
            raise InvalidArgument(
                "phe EncryptedNumber uses phe's float encoding (exponent "
                f"{enc.exponent}); encode with veil.crypto.FixedPoint instead"
            )
        return cls(enc.public_key, enc.ciphertext(be_secure=False))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ciphertext):
            return NotImplemented
        return self._c == other._c and self._pk.n == other._pk.n

    def __hash__(self) -> int:
        return hash((int(self._c), self._pk.n))

    def __repr__(self) -> str:
        return (
            f"Ciphertext(key_id={self._pk.key_id!r}, rerandomized={self._fresh}, "
            f"value=0x{int(self._c) & 0xFFFFFFFF:08x}…)"
        )


def _checked(pk: PublicKey, value: int) -> mpz:
    if isinstance(value, bool) or not isinstance(value, int | mpz):
        raise MalformedCiphertext(
            f"ciphertext must be an integer, not {type(value).__name__}",
            details={"reason": "type"},
        )
    c = mpz(value)
    if c <= 0:
        raise MalformedCiphertext(
            "ciphertext is zero or negative (not a residue in Z_{n²}*)", details={"reason": "zero"}
        )
    if c >= pk.nsquare_mpz:
        raise MalformedCiphertext(
            "ciphertext is not below n² (out of range)", details={"reason": "out_of_range"}
        )
    if gmpy2.gcd(c, pk.n_mpz) != 1:
        raise MalformedCiphertext(
            "ciphertext is not coprime to n (not an element of Z_{n²}*)",
            details={"reason": "not_coprime"},
        )
    return c


def ciphertext_from_int(pk: phe.PaillierPublicKey, value: int) -> Ciphertext:
    """A ciphertext from its raw integer, rejected (:class:`MalformedCiphertext`) when
    ``value ≥ n²``, ``value ≤ 0`` or ``gcd(value, n) ≠ 1``."""
    return Ciphertext(pk, value)


def ciphertext_bytes(c: Ciphertext, *, unsafe_allow_stale: bool = False) -> bytes:
    """The wire form: the raw integer, big-endian, exactly ``2·|n|`` bits wide.

    Refuses (:class:`StaleCiphertext`) a ciphertext that was transformed since it was last
    re-randomized: its randomness is a function of randomness its inputs' authors know,
    which lets them test guesses of the plaintext.  ``unsafe_allow_stale=True`` skips the
    check; use it only for a ciphertext whose every input came from this process's own
    fresh encryptions and that no other party has seen in another form.
    """
    if not c.rerandomized and not unsafe_allow_stale:
        raise StaleCiphertext(
            "ciphertext was not re-randomized after its last homomorphic operation; "
            "call veil.crypto.rerandomize(c, pool) before it leaves the process"
        )
    return int(c._c).to_bytes(c.public_key.ciphertext_size, "big")


def ciphertext_from_bytes(pk: phe.PaillierPublicKey, data: bytes) -> Ciphertext:
    """Parse :func:`ciphertext_bytes`; :class:`MalformedCiphertext` names the defect."""
    key = as_public_key(pk)
    if len(data) != key.ciphertext_size:
        raise MalformedCiphertext(
            f"ciphertext is {len(data)} bytes; a {key.bits}-bit key needs exactly "
            f"{key.ciphertext_size}",
            details={"reason": "wrong_length"},
        )
    return Ciphertext(key, int.from_bytes(data, "big"))


# --- randomness and encryption --------------------------------------------------------


def full_randomizer(pk: phe.PaillierPublicKey) -> mpz:
    """A fresh ``r^n mod n²`` with ``r`` uniform in ``Z_n*`` (one |n|-bit exponentiation).

    Multiplying any ciphertext by it yields a uniformly random encryption of the same
    plaintext: statistically hiding, against anyone, including the key holder.
    """
    key = as_public_key(pk)
    n = key.n_mpz
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return gmpy2.powmod(r, n, key.nsquare_mpz)


def _randomizer(key: PublicKey, pool: RandomnessPool | None) -> mpz:
    if pool is None:
        return full_randomizer(key)
    if pool.public_key.n != key.n:
        raise KeyMismatch("the randomness pool belongs to another public key")
    return pool.take()


def _int(k: Any, what: str) -> int:
    if isinstance(k, bool):
        return int(k)
    try:
        return operator.index(k)
    except TypeError:
        raise InvalidArgument(
            f"{what} must be an integer (encode reals with FixedPoint), not {type(k).__name__}"
        ) from None


def encrypt(pk: phe.PaillierPublicKey, m: int, pool: RandomnessPool | None = None) -> Ciphertext:
    """``Enc(m mod n) = (1 + m·n)·ρ mod n²`` with a fresh randomizer ``ρ = r^n``.

    ``m`` is an integer (negatives wrap mod ``n``; encode reals with :class:`FixedPoint`).
    ``ρ`` comes from ``pool`` (see :class:`~veil.crypto.pool.RandomnessPool` for the
    hiding each pool mode gives) or, without a pool, is computed now (:func:`full_randomizer`).
    """
    key = as_public_key(pk)
    mm = mpz(_int(m, "plaintext")) % key.n_mpz
    c = (1 + mm * key.n_mpz) * _randomizer(key, pool) % key.nsquare_mpz
    return Ciphertext._make(key, c, True)


def rerandomize(c: Ciphertext, pool: RandomnessPool | None = None) -> Ciphertext:
    """``c · ρ mod n²`` for a fresh randomizer ``ρ``: same plaintext, new randomness.

    Every ciphertext that leaves a process passes through this.  With a pool in full mode
    (or no pool), the result is a uniformly random encryption of ``Dec(c)`` whatever ``c``
    was — it reveals nothing about how ``c`` was computed, even to the key holder.
    """
    key = c.public_key
    return Ciphertext._make(key, c._c * _randomizer(key, pool) % key.nsquare_mpz, True)


# --- homomorphic operations -----------------------------------------------------------


def _same_key(a: PublicKey, b: PublicKey) -> None:
    if a is not b and a.n != b.n:
        raise KeyMismatch("ciphertexts are under different public keys")


def add(c1: Ciphertext, c2: Ciphertext) -> Ciphertext:
    """``Enc(a)·Enc(b) mod n² = Enc(a + b)``."""
    _same_key(c1.public_key, c2.public_key)
    key = c1.public_key
    return Ciphertext._make(key, c1._c * c2._c % key.nsquare_mpz, False)


def add_many(cs: Iterable[Ciphertext]) -> Ciphertext:
    """``Enc(Σ a_i)`` from ``Enc(a_i)`` (at least one)."""
    items = list(cs)
    if not items:
        raise InvalidArgument("add_many needs at least one ciphertext")
    key = items[0].public_key
    acc = items[0]._c
    for c in items[1:]:
        _same_key(key, c.public_key)
        acc = acc * c._c % key.nsquare_mpz
    return Ciphertext._make(key, acc, False)


def add_plain(c: Ciphertext, m: int) -> Ciphertext:
    """``Enc(a)·g^m = Enc(a)·(1 + m·n) mod n² = Enc(a + m)`` (``m`` reduced mod ``n``)."""
    key = c.public_key
    mm = mpz(_int(m, "plaintext")) % key.n_mpz
    return Ciphertext._make(key, c._c * (1 + mm * key.n_mpz) % key.nsquare_mpz, False)


def mul_plain(c: Ciphertext, k: int) -> Ciphertext:
    """``Enc(a)^k mod n² = Enc(k·a)``; negative ``k`` uses the inverse of ``c``.

    The result's randomness is ``r^k`` — predictable to whoever knows ``r`` (``k = 0``
    gives the constant ``1``): re-randomize before it leaves the process.
    """
    key = c.public_key
    kk = _int(k, "exponent")
    return Ciphertext._make(key, gmpy2.powmod(c._c, kk, key.nsquare_mpz), False)


def dot(cs: Sequence[Ciphertext], ks: Sequence[int]) -> Ciphertext:
    """``Π Enc(w_j)^{k_j} = Enc(Σ k_j·w_j)`` by Pippenger's multi-exponentiation.

    About 3× faster than one exponentiation per term; when the same ciphertexts are used
    for many dot products (a model's encrypted weights), :func:`prepare_dot` is faster
    still.  Re-randomize the result before it leaves the process.
    """
    if len(cs) != len(ks):
        raise InvalidArgument(f"dot: {len(cs)} ciphertexts but {len(ks)} exponents")
    if not cs:
        raise InvalidArgument("dot needs at least one term")
    key = cs[0].public_key
    for c in cs[1:]:
        _same_key(key, c.public_key)
    exps = [_int(k, "exponent") for k in ks]
    return Ciphertext._make(key, multi_exp([c._c for c in cs], exps, key.nsquare_mpz), False)


class DotPlan:
    """Dot products against fixed ciphertexts, with precomputed powers.

    Stores ``c_j^{2^{w·i}}`` for every ciphertext and digit position (for 40 ciphertexts
    and 64-bit exponents at 2048 bits: 40·13 residues of 512 bytes), so each product costs
    one multiplication per non-zero ``w``-bit digit plus ``2^{w+1}``, without squarings.
    Exponents wider than ``exponent_bits`` still work (general algorithm, slower).
    """

    def __init__(self, cs: Sequence[Ciphertext], exponent_bits: int = 64) -> None:
        if not cs:
            raise InvalidArgument("DotPlan needs at least one ciphertext")
        self.public_key = cs[0].public_key
        for c in cs[1:]:
            _same_key(self.public_key, c.public_key)
        self.exponent_bits = exponent_bits
        self._engine = FixedBaseMultiExp(
            [c._c for c in cs], self.public_key.nsquare_mpz, exponent_bits
        )

    def __len__(self) -> int:
        return len(self._engine.bases)

    def dot(self, ks: Sequence[int]) -> Ciphertext:
        """``Enc(Σ k_j·w_j)``, equal to :func:`dot` on the same inputs."""
        if len(ks) != len(self):
            raise InvalidArgument(f"dot: {len(self)} ciphertexts but {len(ks)} exponents")
        exps = [_int(k, "exponent") for k in ks]
        return Ciphertext._make(self.public_key, self._engine.dot(exps), False)


def prepare_dot(cs: Sequence[Ciphertext], exponent_bits: int = 64) -> DotPlan:
    """A :class:`DotPlan` for ``cs`` (exponents up to ``exponent_bits`` bits are fastest)."""
    return DotPlan(cs, exponent_bits)


# --- private key ----------------------------------------------------------------------


class PaillierKeys:
    """The platform's Paillier key pair.  ``.public`` goes to providers; the rest stays.

    The private factors live only in this object and in the 0600 file :meth:`save`
    writes; ``repr``/``str`` show the key id only, and pickling is refused so they cannot
    leak into a cache, a queue or a log by accident.
    """

    __slots__ = ("_hp", "_hq", "_p", "_p2", "_pinv", "_q", "_q2", "public")

    def __init__(self, public: PublicKey, p: int, q: int) -> None:
        """Use :meth:`generate`, :meth:`load` or :meth:`from_primes`."""
        p_, q_ = (mpz(p), mpz(q)) if p < q else (mpz(q), mpz(p))
        self.public = public
        self._p, self._q = p_, q_
        self._p2, self._q2 = p_ * p_, q_ * q_
        self._pinv = gmpy2.invert(p_, q_)
        g = public.n_mpz + 1
        self._hp = gmpy2.invert((gmpy2.powmod(g, p_ - 1, self._p2) - 1) // p_, p_)
        self._hq = gmpy2.invert((gmpy2.powmod(g, q_ - 1, self._q2) - 1) // q_, q_)

    @classmethod
    def generate(cls, bits: int = 3072) -> PaillierKeys:
        """A fresh key pair from phe's generator (``n`` of exactly ``bits`` bits).

        3072 bits ≈ 128-bit security; 2048 bits (≈ 112-bit) is the floor.
        """
        if bits < MIN_MODULUS_BITS:
            raise InvalidArgument(f"Paillier keys need at least {MIN_MODULUS_BITS} bits")
        pub, priv = phe.generate_paillier_keypair(n_length=bits)
        keys = cls(PublicKey(pub.n), priv.p, priv.q)
        log.info("generated %d-bit Paillier key %s", bits, keys.key_id)
        return keys

    @classmethod
    def from_primes(cls, p: int, q: int, *, min_bits: int = MIN_MODULUS_BITS) -> PaillierKeys:
        """A key pair from given primes (key import, tests with fixed small keys).

        Checks that ``p ≠ q`` are prime, ``gcd(n, (p−1)(q−1)) = 1`` (so ``g = n + 1``
        works) and that ``n`` has at least ``min_bits`` bits.
        """
        p_, q_ = mpz(p), mpz(q)
        if p_ == q_ or not (gmpy2.is_prime(p_, 40) and gmpy2.is_prime(q_, 40)):
            raise InvalidArgument("Paillier key: p and q must be distinct primes")
        n = p_ * q_
        if gmpy2.gcd(n, (p_ - 1) * (q_ - 1)) != 1:
            raise InvalidArgument("Paillier key: gcd(n, (p-1)(q-1)) must be 1")
        if n.bit_length() < min_bits:
            raise InvalidArgument(f"Paillier key: n has {n.bit_length()} bits, below {min_bits}")
        return cls(PublicKey(int(n)), int(p_), int(q_))

    @classmethod
    def from_phe(cls, private_key: phe.PaillierPrivateKey) -> PaillierKeys:
        return cls.from_primes(private_key.p, private_key.q)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def _check_own(self, c: Ciphertext) -> None:
        if not isinstance(c, Ciphertext):
            raise InvalidArgument(f"expected a Ciphertext, not {type(c).__name__}")
        if c.public_key.n != self.public.n:
            raise KeyMismatch("ciphertext was encrypted under another public key")

    def decrypt(self, c: Ciphertext) -> int:
        """The plaintext in ``[0, n)``, by CRT: ``m_p = L_p(c^{p−1} mod p²)·h_p mod p``,
        likewise mod ``q``, then ``m = m_p + p·((m_q − m_p)·p⁻¹ mod q)``.  A plaintext
        known to be small needs only the first half: :meth:`decrypt_small`.
        """
        self._check_own(c)
        p, q = self._p, self._q
        xp = _secret_powmod(c._c % self._p2, p - 1, self._p2)
        xq = _secret_powmod(c._c % self._q2, q - 1, self._q2)
        mp = (xp - 1) // p * self._hp % p
        mq = (xq - 1) // q * self._hq % q
        return int(mp + (mq - mp) * self._pinv % q * p)

    def decrypt_small(self, c: Ciphertext, *, bound_bits: int) -> int | None:
        """The plaintext as a signed integer if it lies within ``±2^bound_bits``, else
        ``None``, from the ``p`` half of :meth:`decrypt` alone (half its cost).

        ``m_p = L_p(c^{p−1} mod p²)·h_p mod p`` is ``m mod p``; centred mod ``p`` it
        equals ``m`` centred mod ``n`` whenever ``|m| < p/2``, and ``bound_bits`` must be
        at least :data:`SMALL_MARGIN_BITS` below ``|p|`` so that every in-bound result
        is far from that limit.  A plaintext outside the bound that was not chosen with
        knowledge of ``p`` — a uniform residue, such as masks that did not cancel —
        reads as a residue uniform mod ``p`` and is reported in-bound with probability
        at most ``2^{bound_bits + 1 − (|p| − 1)}`` (``2^-510`` for the 512-bit bound
        at a 2048-bit key): callers use ``None`` to detect it.  Only the key holder knows
        ``p``, so no contributor can aim a large plaintext at a small residue.
        """
        self._check_own(c)
        p = self._p
        widest = p.bit_length() - 1 - SMALL_MARGIN_BITS
        if not 0 <= bound_bits <= widest:
            raise InvalidArgument(
                f"bound_bits must be between 0 and {widest} for this key, not {bound_bits}"
            )
        xp = _secret_powmod(c._c % self._p2, p - 1, self._p2)
        m = centred(int((xp - 1) // p * self._hp % p), int(p))
        return m if abs(m) < 1 << bound_bits else None

    def decrypt_centred(self, c: Ciphertext) -> int:
        """The plaintext as a signed integer in ``(−n/2, n/2]``."""
        return centred(self.decrypt(c), self.public.n)

    def decrypt_fixed(self, c: Ciphertext, encoding: FixedPoint) -> float:
        """The plaintext decoded as a fixed-point real."""
        return encoding.decode(self.decrypt(c), self.public.n)

    # -- files --

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the private key (JSON with hex ``p``, ``q``) to a new 0600 file."""
        body = {
            "type": _KEY_FILE_TYPE,
            "version": 1,
            "key_id": self.key_id,
            "bits": self.public.bits,
            "p": format(int(self._p), "x"),
            "q": format(int(self._q), "x"),
        }
        write_secret_file(path, (json.dumps(body, indent=1) + "\n").encode(), overwrite=overwrite)
        log.info("saved Paillier key %s to %s", self.key_id, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PaillierKeys:
        """Read a key written by :meth:`save`; refuses files others can access."""
        name = str(path)
        raw = read_secret_file(path)
        try:
            body = json.loads(raw)
        except ValueError:
            raise ConfigError(name, "paillier key", "is not JSON") from None
        if not isinstance(body, dict) or body.get("type") != _KEY_FILE_TYPE:
            raise ConfigError(name, "type", f"is not {_KEY_FILE_TYPE!r}")
        if body.get("version") != 1:
            raise ConfigError(name, "version", "unsupported key file version")
        try:
            p, q = int(body["p"], 16), int(body["q"], 16)
        except (KeyError, TypeError, ValueError):
            # Never echo the value: it is (a corrupted copy of) the private key.
            raise ConfigError(name, "p/q", "missing or not hexadecimal") from None
        try:
            keys = cls.from_primes(p, q)
        except InvalidArgument as exc:
            raise ConfigError(name, "paillier key", exc.message) from None
        if body.get("key_id") not in (None, keys.key_id):
            raise ConfigError(name, "key_id", "does not match the key in the file")
        return keys

    def __repr__(self) -> str:
        return f"PaillierKeys(bits={self.public.bits}, key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("PaillierKeys holds a private key and cannot be pickled; use save()")
