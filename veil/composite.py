"""Checks across providers, combined under encryption: what each provider contributes and
how the platform reads the combination.

Every provider i evaluates its own conditions (three-valued: true / false / no record)
and sends one Paillier ciphertext under the platform's key (≥ 2048-bit modulus n) of a
*masked* integer ``x_i = c_i + M_i mod n``.  The masks ``M_i`` are pairwise X25519 +
HKDF masks (:mod:`veil.crypto.masks`) that sum to 0 mod n over the participants, salted
by the request id and a per-ciphertext context, so the platform — which holds the
private key — decrypts each ``x_i`` to a uniformly random number and only the product of
all ciphertexts to ``Σ c_i``.  Every ciphertext is a fresh encryption: ``g^{x_i}`` times
a fresh ``r^n`` from a randomness pool, so no two are linkable or testable.  Every
genuine ``Σ c_i`` is small (at most 2^800), so the platform reads it mod ``p`` alone
(:meth:`~veil.crypto.PaillierKeys.decrypt_small`: half a decryption); a product that
reads out of bound is masks that did not cancel — refused, never an answer.

What the ``c_i`` are, per protocol (``D_i``/``U_i`` counts of the provider's *decisive* /
*no-record* conditions):

``all``   decisive = false.  Two slots packed in one plaintext,
          ``c = (a + P·s) + 2^W·(b + P·s')`` with ``P`` = :data:`ZERO_TEST_PRIME` (a public
          256-bit prime), ``a = r·D_i + r'·U_i mod P`` and ``b = r''·D_i mod P`` (``r``,
          ``r'``, ``r''`` fresh uniform in [1, P)), ``s``, ``s'`` fresh uniform below
          2^:data:`SMUDGE_BITS` and ``W`` = :data:`SLOT_BITS`.  The platform reads each
          slot of the total mod P: the first is 0 iff no condition anywhere is false or
          lacks a record, otherwise uniform on Z_P; the second is 0 iff nothing is false.
          First = 0 → true; else second ≠ 0 → false; else no record — the answer and
          nothing else, except with probability about 2/P (≈ 2^-255).  Each slot's
          quotient by P is ``Σ s`` plus the carries of ``Σ a`` (fewer than the number of
          providers): the smudging ``s`` hides those carries within statistical distance
          (providers)·2^-128.  When the answer is false the first slot is uniform
          whatever U is.  One ciphertext instead of one per slot: half the randomizers,
          masks and bytes, and one half-decryption for every answer.
``any``   the same with decisive = true: first = 0 → false; else second ≠ 0 → true;
          else no record.
``count`` ``at_least k`` of m conditions: ``c = T_i + (m+1)·U_i`` (true / no-record
          counts); the platform reads T = Σ mod (m+1) and U = Σ div (m+1).  **It learns
          both counts**, not which conditions they are.
``sum``   ``Σ fields op t``: ``c = ⌊10⁴·s_i⌉ + r·U_i`` with s_i the provider's partial sum
          (exact to 10⁻⁴ of the unit, signed values as centred residues), U_i its summed
          fields without a record and ``r`` uniform in [1, n).  If no term lacks a record,
          the combined value is the exact sum (|Σ| < 2^80); if one does, it is uniform on
          Z_n and reads outside ±2^:data:`SUM_BOUND_BITS` except with probability < 2^-765: no
          record.  **It learns the sum**, not the terms.

Collusion: the platform together with every provider but one can remove that provider's
masks (they share its pairwise seeds) and read its ``c_i``.  See LEAKAGE.md.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from decimal import Decimal
from enum import StrEnum

from veil.claims import Truth, compare, t_at_least
from veil.crypto import (
    Ciphertext,
    PaillierKeys,
    PublicKey,
    RandomnessPool,
    add_many,
    ciphertext_bytes,
    ciphertext_from_bytes,
    encrypt,
    mask_contribution,
)
from veil.errors import InvalidArgument, MalformedCiphertext, Unavailable

__all__ = [
    "CIPHERTEXTS",
    "SUM_SCALE",
    "Combined",
    "MalformedContribution",
    "Protocol",
    "ciphertexts_digest",
    "decide",
    "mask_context",
    "masked_ciphertexts",
    "plain_contribution",
]

SUM_SCALE = 10**4
"""Sums travel as integers in units of 10⁻⁴ (stores keep 4 decimal places)."""
SUM_BOUND_BITS = 256
"""A genuine combined sum is far inside ±2^256 (16 terms below 10^18 · 10^4); a value
outside it is the uniform residue of a sum with a missing term."""
COUNT_BOUND_BITS = 64
"""A genuine ``at_least`` total ``T + (m+1)·U`` is below (m+1)², far inside 2^64."""

ZERO_TEST_PRIME = 2**256 - 189
"""``P`` of ``all``/``any``: the largest prime below 2^256.  A slot that should be
uniform mod P reads as zero with probability 1/P."""
SMUDGE_BITS = 128
"""Each slot carries ``P·s`` with ``s`` uniform below 2^128, hiding the carries of the
slot's sum (statistical distance below 2^-128 per carry)."""
SLOT_BITS = 400
"""The width ``W`` of a slot: a slot's total over k providers is below
k·P·(2^128 + 1) < k·2^385, so up to 2^15 providers fit."""
PACKED_BITS = 2 * SLOT_BITS
"""A genuine ``all``/``any`` total is below 2^800: it reads mod ``p`` at any key of at
least 2048 bits (|p| ≥ 1024 > 800 + :data:`~veil.crypto.SMALL_MARGIN_BITS`)."""


class Protocol(StrEnum):
    SINGLE = "single"
    ALL = "all"
    ANY = "any"
    COUNT = "count"
    SUM = "sum"
    PLAINTEXT = "plaintext"  # benchmark baseline: answers in the clear to the platform


CIPHERTEXTS = {Protocol.ALL: 1, Protocol.ANY: 1, Protocol.COUNT: 1, Protocol.SUM: 1}
READ_BITS = {
    Protocol.ALL: PACKED_BITS,
    Protocol.ANY: PACKED_BITS,
    Protocol.COUNT: COUNT_BOUND_BITS,
    Protocol.SUM: SUM_BOUND_BITS,
}
"""How large a genuine combined plaintext can be, per protocol (:class:`Combined`)."""


class MalformedContribution(Unavailable):
    """A provider's contribution is not a valid ciphertext under the platform's key
    (``details["provider"]`` names it), or the contributions combine to an impossible
    value: rejected, and the check is not answered — never a partial or a guessed answer."""


def _nonzero_random(n: int) -> int:
    return 1 + secrets.randbelow(n - 1)


def _slot(value: int) -> int:
    """``value mod P`` smudged by a fresh multiple of P (:data:`SMUDGE_BITS`)."""
    return value % ZERO_TEST_PRIME + ZERO_TEST_PRIME * secrets.randbits(SMUDGE_BITS)


def _pack(first: int, second: int) -> int:
    return _slot(first) + (_slot(second) << SLOT_BITS)


def _unpack(total: int) -> tuple[int, int]:
    """The two slots of a combined ``all``/``any`` total, each mod P."""
    return (
        (total & ((1 << SLOT_BITS) - 1)) % ZERO_TEST_PRIME,
        (total >> SLOT_BITS) % ZERO_TEST_PRIME,
    )


def plain_contribution(
    protocol: Protocol,
    n: int,
    *,
    truths: Sequence[Truth] = (),
    total: int = 0,
    partial_sum: Decimal | None = None,
    missing: int = 0,
) -> list[int]:
    """The provider's unmasked values ``c_i`` (residues mod n) for ``protocol``.

    ``truths``: its conditions' answers (all, any, count; ``total`` = m for count);
    ``partial_sum`` / ``missing``: its summed fields' total and how many have no record.
    """
    if protocol in (Protocol.ALL, Protocol.ANY):
        decisive = Truth.FALSE if protocol is Protocol.ALL else Truth.TRUE
        d = sum(1 for t in truths if t is decisive)
        u = sum(1 for t in truths if t is Truth.NO_RECORD)
        prime = ZERO_TEST_PRIME
        first = _nonzero_random(prime) * d + _nonzero_random(prime) * u
        return [_pack(first, _nonzero_random(prime) * d)]
    if protocol is Protocol.COUNT:
        if total < len(truths):
            raise InvalidArgument("total_conditions is smaller than this provider's conditions")
        t = sum(1 for x in truths if x is Truth.TRUE)
        u = sum(1 for x in truths if x is Truth.NO_RECORD)
        return [(t + (total + 1) * u) % n]
    if protocol is Protocol.SUM:
        value = 0 if partial_sum is None else round(partial_sum * SUM_SCALE)
        return [(value + _nonzero_random(n) * missing) % n]
    raise InvalidArgument(f"protocol {protocol} has no masked contribution")


def _masks_did_not_cancel() -> MalformedContribution:
    return MalformedContribution(
        "the contributions do not combine to a possible value (their masks did not cancel: "
        "a provider answered for another roster or request, or sent garbage); the check "
        "is not answered",
        details={"reason": "masks_did_not_cancel"},
    )


def decide(
    protocol: Protocol,
    combined: int | None,
    *,
    k: int = 0,
    total: int = 0,
    op: str = "",
    threshold: Decimal | None = None,
) -> tuple[Truth, dict[str, str]]:
    """The answer from the combined plaintext, and what the platform learned beyond it
    (``{"true": "2", "no_record": "0"}`` for count, ``{"sum": "…"}`` for sum).

    ``combined``: :meth:`Combined.read`, the signed plaintext of the product of every
    provider's ciphertext, or ``None`` if it is outside ±2^:data:`READ_BITS` of the
    protocol.
    """
    if protocol in (Protocol.ALL, Protocol.ANY):
        decisive, other = (
            (Truth.FALSE, Truth.TRUE) if protocol is Protocol.ALL else (Truth.TRUE, Truth.FALSE)
        )
        if combined is None or combined < 0:
            raise _masks_did_not_cancel()
        first, second = _unpack(combined)
        if first == 0:
            return other, {}
        return (Truth.NO_RECORD if second == 0 else decisive), {}
    if protocol is Protocol.COUNT:
        if combined is None or combined < 0:
            raise _masks_did_not_cancel()
        true, unknown = combined % (total + 1), combined // (total + 1)
        if unknown > total or true + unknown > total:
            raise MalformedContribution(
                "the contributions combine to an impossible count (a provider's contribution "
                "was malformed); the check is not answered",
                details={"reason": "count_out_of_range"},
            )
        revealed = {"true": str(true), "no_record": str(unknown)}
        return t_at_least(k, true, unknown), revealed
    if protocol is Protocol.SUM:
        if combined is None:
            return Truth.NO_RECORD, {}
        assert threshold is not None
        total_sum = Decimal(combined) / SUM_SCALE
        return compare(total_sum, op, threshold), {"sum": format(total_sum.normalize(), "f")}
    raise InvalidArgument(f"protocol {protocol} is not combined under encryption")


def ciphertexts_digest(ciphertexts: Sequence[bytes]) -> str:
    """SHA-256 over length-prefixed ciphertexts (what a provider's attestation signs)."""
    h = hashlib.sha256()
    for c in ciphertexts:
        h.update(len(c).to_bytes(4, "big"))
        h.update(c)
    return h.hexdigest()


def mask_context(protocol: Protocol, index: int) -> str:
    """The HKDF context of ciphertext ``index``: distinct masks per ciphertext."""
    return f"verify|{protocol.value}|{index}"


def masked_ciphertexts(
    protocol: Protocol,
    values: Sequence[int],
    *,
    public_key: PublicKey,
    mask_for: Callable[[str], int],
    pool: RandomnessPool | None,
) -> list[bytes]:
    """Mask each value with ``mask_for(context)`` and encrypt it afresh (provider side).

    ``encrypt`` multiplies ``g^x`` by a fresh randomizer from ``pool``: the ciphertext's
    randomness is independent of the provider's data, and ``x`` itself is masked.
    """
    n = public_key.n
    out = []
    for i, value in enumerate(values):
        masked = mask_contribution(value, mask_for(mask_context(protocol, i)), n)
        out.append(ciphertext_bytes(encrypt(public_key, masked, pool)))
    return out


class Combined:
    """Platform side: the product ``Π_providers c_i`` of the providers' ciphertexts,
    parsed once and read mod ``p`` (:meth:`read`,
    :meth:`~veil.crypto.PaillierKeys.decrypt_small`: half a decryption).

    Each ciphertext is parsed (and refused if malformed: :class:`MalformedContribution`
    naming ``units[j]``, the provider of ``answers[j]``) before it is combined; no single
    provider's ciphertext is ever decrypted.
    """

    def __init__(
        self,
        keys: PaillierKeys,
        protocol: Protocol,
        answers: Sequence[Sequence[bytes]],
        units: Sequence[str] = (),
    ) -> None:
        self.keys = keys
        self.bound_bits = READ_BITS[protocol]
        self.answers = answers
        self.units = units

    def _parse(self, j: int, blob: bytes) -> Ciphertext:
        try:
            return ciphertext_from_bytes(self.keys.public, blob)
        except MalformedCiphertext as exc:
            who = self.units[j] if j < len(self.units) else f"#{j}"
            raise MalformedContribution(
                f"provider {who!r} sent a malformed ciphertext ({exc.message}); rejected, "
                "the check is not answered",
                details={"provider": who, "reason": exc.details.get("reason", "malformed")},
            ) from None

    def product(self) -> Ciphertext:
        return add_many([self._parse(j, bytes(a[0])) for j, a in enumerate(self.answers)])

    def read(self) -> int | None:
        """``Σ_providers x_i`` as a signed integer, or ``None`` when it is outside the
        protocol's bound (:data:`READ_BITS`): masks that did not cancel."""
        return self.keys.decrypt_small(self.product(), bound_bits=self.bound_bits)
