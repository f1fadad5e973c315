"""Products of powers modulo m with fewer multiplications than one ``powmod`` per factor.

These compute exactly ``Π b_j^{k_j} mod m`` — the same integer ``gmpy2.powmod`` gives
(the tests check this) — using the classical bucket method (Pippenger / Yao):

* Split every exponent into ``w``-bit digits.  For one digit position, put each base into
  the bucket of its digit ``d``; then ``Π_d B_d^d`` is built with two multiplications per
  bucket by a running product (``B_max``, ``B_max·B_{max-1}``, … multiplied together).
* Positions are combined Horner-style with ``w`` squarings between them.

For ``n`` bases and ``b``-bit exponents this costs about ``⌈b/w⌉·(n + 2^{w+1}) + b``
multiplications instead of ``n·1.2·b`` for separate exponentiations.  When the bases are
fixed (model weights used for many requests, the DJN generator of a randomness pool),
``b_j^{2^{w·i}}`` is precomputed once and the squarings disappear too.

Timing depends on the exponents (zero digits are skipped); see ``veil.crypto.paillier``.
Negative exponents are handled as ``(Π_{k<0} b^{|k|})^{-1}``, one inversion per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
from gmpy2 import mpz

Bucket = list[mpz | None]


def _mul(acc: mpz | None, x: mpz, m: mpz) -> mpz:
    return x if acc is None else acc * x % m


def _combine_buckets(buckets: Bucket, m: mpz) -> mpz | None:
    """``Π_d buckets[d]^d`` with at most two multiplications per bucket."""
    running: mpz | None = None
    total: mpz | None = None
    for d in range(len(buckets) - 1, 0, -1):
        b = buckets[d]
        if b is not None:
            running = _mul(running, b, m)
        if running is not None:
            total = _mul(total, running, m)
    return total


def best_window(terms: int, bits: int, *, fixed: bool) -> int:
    """The digit width minimising the estimated number of multiplications."""
    best, best_cost = 1, None
    for w in range(1, 13):
        windows = -(-bits // w)
        cost = windows * terms + (2 << w) * (1 if fixed else windows) + (0 if fixed else bits)
        if best_cost is None or cost < best_cost:
            best, best_cost = w, cost
    return best


def _split(exps: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    pos_i, pos_k, neg_i, neg_k = [], [], [], []
    for i, k in enumerate(exps):
        if k > 0:
            pos_i.append(i)
            pos_k.append(k)
        elif k < 0:
            neg_i.append(i)
            neg_k.append(-k)
    return pos_i, pos_k, neg_i, neg_k


def _pippenger(bases: Sequence[mpz], exps: Sequence[int], m: mpz) -> mpz:
    """``Π b^k mod m`` for non-negative ``k`` (Pippenger's bucket method)."""
    if not bases:
        return mpz(1)
    if len(bases) == 1:
        return gmpy2.powmod(bases[0], exps[0], m)
    bits = max(k.bit_length() for k in exps)
    w = best_window(len(bases), bits, fixed=False)
    mask = (1 << w) - 1
    acc: mpz | None = None
    for pos in range(-(-bits // w) - 1, -1, -1):
        if acc is not None:
            for _ in range(w):
                acc = acc * acc % m
        shift = pos * w
        buckets: Bucket = [None] * (mask + 1)
        for b, k in zip(bases, exps, strict=True):
            d = (k >> shift) & mask
            if d:
                buckets[d] = _mul(buckets[d], b, m)
        window = _combine_buckets(buckets, m)
        if window is not None:
            acc = _mul(acc, window, m)
    return mpz(1) if acc is None else acc


def multi_exp(bases: Sequence[mpz], exps: Sequence[int], m: mpz) -> mpz:
    """``Π_j bases[j]^{exps[j]} mod m``; negative exponents need invertible bases."""
    pos_i, pos_k, neg_i, neg_k = _split(exps)
    result = _pippenger([bases[i] for i in pos_i], pos_k, m)
    if neg_i:
        denominator = _pippenger([bases[i] for i in neg_i], neg_k, m)
        result = result * gmpy2.invert(denominator, m) % m
    return result


class FixedBaseTable:
    """``base^k mod m`` for ``0 ≤ k < 2^max_bits`` in ``⌈max_bits/w⌉`` multiplications.

    Stores ``base^{d·2^{w·i}}`` for every digit ``d`` and position ``i``
    (``⌈max_bits/w⌉·(2^w − 1)`` residues).
    """

    def __init__(self, base: mpz, m: mpz, max_bits: int, window: int = 6) -> None:
        self.m, self.max_bits, self.window = m, max_bits, window
        self._mask = (1 << window) - 1
        self._rows: list[list[mpz]] = []
        g = mpz(base) % m
        for _ in range(-(-max_bits // window)):
            row = [mpz(1), g]
            for _ in range(self._mask - 1):
                row.append(row[-1] * g % m)
            self._rows.append(row)
            g = row[-1] * g % m  # g^{2^w}
        self._rows_count = len(self._rows)

    def power(self, k: int) -> mpz:
        if k < 0 or k.bit_length() > self.max_bits:
            raise ValueError("exponent outside the table's range")
        acc: mpz | None = None
        m, w, mask = self.m, self.window, self._mask
        for row in self._rows:
            d = k & mask
            if d:
                acc = _mul(acc, row[d], m)
            k >>= w
        return mpz(1) if acc is None else acc


class FixedBaseMultiExp:
    """``Π_j b_j^{k_j} mod m`` for fixed bases ``b_j`` and ``|k_j| < 2^max_bits``.

    Precomputes ``b_j^{2^{w·i}}`` (one residue per base and digit position); a product then
    costs one multiplication per non-zero digit plus ``2^{w+1}`` to combine the buckets,
    with no squarings.  Exponents beyond ``max_bits`` fall back to :func:`multi_exp`.
    """

    def __init__(self, bases: Sequence[mpz], m: mpz, max_bits: int) -> None:
        self.m, self.max_bits = m, max_bits
        self.bases = [mpz(b) % m for b in bases]
        self.window = best_window(max(1, len(self.bases)), max_bits, fixed=True)
        self._mask = (1 << self.window) - 1
        positions = -(-max_bits // self.window)
        self._powers: list[list[mpz]] = []
        for b in self.bases:
            row, g = [], b
            for _ in range(positions):
                row.append(g)
                for _ in range(self.window):
                    g = g * g % m
            self._powers.append(row)

    def _product(self, idx: Sequence[int], exps: Sequence[int]) -> mpz | None:
        m, w, mask = self.m, self.window, self._mask
        buckets: Bucket = [None] * (mask + 1)
        for j, k in zip(idx, exps, strict=True):
            for g in self._powers[j]:
                d = k & mask
                if d:
                    buckets[d] = _mul(buckets[d], g, m)
                k >>= w
                if not k:
                    break
        return _combine_buckets(buckets, m)

    def dot(self, exps: Sequence[int]) -> mpz:
        if len(exps) != len(self.bases):
            raise ValueError(f"expected {len(self.bases)} exponents, got {len(exps)}")
        if any(abs(k).bit_length() > self.max_bits for k in exps):
            return multi_exp(self.bases, exps, self.m)
        pos_i, pos_k, neg_i, neg_k = _split(exps)
        result = self._product(pos_i, pos_k)
        if neg_i:
            denominator = self._product(neg_i, neg_k)
            if denominator is not None:
                inv = gmpy2.invert(denominator, self.m)
                result = inv if result is None else result * inv % self.m
        return mpz(1) if result is None else result
