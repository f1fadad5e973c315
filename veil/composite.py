"""Checks across providers, combined under encryption: what each provider contributes and
how the platform reads the combination.

Every provider i evaluates its own conditions (three-valued: true / false / no record)
and sends one or two Paillier ciphertexts under the platform's key (2048-bit modulus n)
of *masked* integers ``x_i = c_i + M_i mod n``.  The masks ``M_i`` are pairwise X25519 +
HKDF masks (:mod:`veil.crypto.masks`) that sum to 0 mod n over the participants, salted
by the request id and a per-ciphertext context, so the platform — which holds the
private key — decrypts each ``x_i`` to a uniformly random number and only the product of
all ciphertexts to ``Σ c_i mod n``.  Every ciphertext is a fresh encryption: ``g^{x_i}``
times a fresh ``r^n`` from a randomness pool, so no two are linkable or testable.

What the ``c_i`` are, per protocol (``r``, ``r'``, ``r''`` fresh uniform in [1, n) each
time; ``D_i``/``U_i`` counts of the provider's *decisive* / *no-record* conditions):

``all``   decisive = false.  ``c = (r·D_i + r'·U_i, r''·D_i)``.  The first sum is 0 iff
          no condition anywhere is false or lacks a record, otherwise uniform on Z_n (one
          non-zero ``r·D_i`` or ``r'·U_i`` is uniform, D_i, U_i < n being invertible); the
          second is 0 iff nothing is false.  The platform reads: first = 0 → true (one
          zero test: the common case of an honest declaration); else second ≠ 0 →
          false, else no record — the answer and nothing else (except with probability
          about 2/p).  When the answer is false the first sum is uniform whatever U is.
          A zero test (:meth:`~veil.crypto.PaillierKeys.is_zero`) costs half a
          decryption and reads the sum mod p only, so the platform never even decrypts
          the uniform value of a non-zero sum.
``any``   the same with decisive = true: first = 0 → false; else second ≠ 0 → true;
          else no record.
``count`` ``at_least k`` of m conditions: ``c = T_i + (m+1)·U_i`` (true / no-record
          counts); the platform reads T = Σ mod (m+1) and U = Σ div (m+1).  **It learns
          both counts**, not which conditions they are.
``sum``   ``Σ fields op t``: ``c = ⌊10⁴·s_i⌉ + r·U_i`` with s_i the provider's partial sum
          (exact to 10⁻⁴ of the unit, signed values as centred residues) and U_i its
          summed fields without a record.  If no term lacks a record, the combined value
          is the exact sum (|Σ| < 2^80); if one does, it is uniform on Z_n and falls
          outside ±:data:`SUM_BOUND` except with probability < 2^-1700: no record.
          **It learns the sum**, not the terms.

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
SUM_BOUND = 2**256
"""A genuine combined sum is far inside ±2^256 (16 terms below 10^18 · 10^4); a value
outside it is the uniform residue of a sum with a missing term."""


class Protocol(StrEnum):
    SINGLE = "single"
    ALL = "all"
    ANY = "any"
    COUNT = "count"
    SUM = "sum"
    PLAINTEXT = "plaintext"  # benchmark baseline: answers in the clear to the platform


CIPHERTEXTS = {Protocol.ALL: 2, Protocol.ANY: 2, Protocol.COUNT: 1, Protocol.SUM: 1}


class MalformedContribution(Unavailable):
    """A provider's contribution is not a valid ciphertext under the platform's key
    (``details["provider"]`` names it), or the contributions combine to an impossible
    value: rejected, and the check is not answered — never a partial or a guessed answer."""


def _nonzero_random(n: int) -> int:
    return 1 + secrets.randbelow(n - 1)


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
        return [
            (_nonzero_random(n) * d + _nonzero_random(n) * u) % n,
            _nonzero_random(n) * d % n,
        ]
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


def _centred(value: int, n: int) -> int:
    value %= n
    return value - n if value > n // 2 else value


def decide(
    protocol: Protocol,
    sums: Callable[[int], int] | Sequence[int],
    n: int,
    *,
    k: int = 0,
    total: int = 0,
    op: str = "",
    threshold: Decimal | None = None,
    zero: Callable[[int], bool] | None = None,
) -> tuple[Truth, dict[str, str]]:
    """The answer from the decrypted sums, and what the platform learned beyond it
    (``{"true": "2", "no_record": "0"}`` for count, ``{"sum": "…"}`` for sum).

    ``sums(i)`` decrypts the i-th combined ciphertext; the second one of all/any is
    decrypted only when the first does not decide (a plain sequence works too).
    ``all``/``any`` need only whether a sum is 0: ``zero(i)`` answers that
    (:meth:`Combined.is_zero`, half a decryption) when given.
    """
    if not callable(sums):
        values = list(sums)
        sums = values.__getitem__
    if protocol in (Protocol.ALL, Protocol.ANY):
        decisive, other = (
            (Truth.FALSE, Truth.TRUE) if protocol is Protocol.ALL else (Truth.TRUE, Truth.FALSE)
        )
        read = sums
        is_zero = zero if zero is not None else (lambda i: read(i) % n == 0)
        if is_zero(0):
            return other, {}
        return (Truth.NO_RECORD if is_zero(1) else decisive), {}
    if protocol is Protocol.COUNT:
        value = sums(0) % n
        true, unknown = value % (total + 1), value // (total + 1)
        if unknown > total or true + unknown > total:
            raise MalformedContribution(
                "the contributions combine to an impossible count (a provider's contribution "
                "was malformed); the check is not answered",
                details={"reason": "count_out_of_range"},
            )
        revealed = {"true": str(true), "no_record": str(unknown)}
        return t_at_least(k, true, unknown), revealed
    if protocol is Protocol.SUM:
        combined = _centred(sums(0), n)
        if abs(combined) >= SUM_BOUND:
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
    """Platform side: the product ``Π_providers c_i`` of each ciphertext index, parsed
    once, read by decryption (``read(i)`` = Σ_providers x_i mod n) or by the half-cost
    zero test (``is_zero(i)``, :meth:`~veil.crypto.PaillierKeys.is_zero`).

    Each ciphertext is parsed (and refused if malformed: :class:`MalformedContribution`
    naming ``units[j]``, the provider of ``answers[j]``) before it is combined; no single
    provider's ciphertext is ever decrypted.
    """

    def __init__(
        self,
        keys: PaillierKeys,
        answers: Sequence[Sequence[bytes]],
        units: Sequence[str] = (),
    ) -> None:
        self.keys = keys
        self.answers = answers
        self.units = units
        self._products: dict[int, Ciphertext] = {}
        self._sums: dict[int, int] = {}

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

    def product(self, i: int) -> Ciphertext:
        if i not in self._products:
            cts = [self._parse(j, bytes(a[i])) for j, a in enumerate(self.answers)]
            self._products[i] = add_many(cts)
        return self._products[i]

    def read(self, i: int) -> int:
        if i not in self._sums:
            self._sums[i] = self.keys.decrypt(self.product(i))
        return self._sums[i]

    def is_zero(self, i: int) -> bool:
        if i in self._sums:
            return self._sums[i] == 0
        return self.keys.is_zero(self.product(i))
