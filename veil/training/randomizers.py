"""Fast Paillier randomizers for ciphertexts that only a *non-key-holder* will see.

A feature party encrypts its packed training rows under **its own** key and sends them to
the label party, which never holds that key.  For that direction the
Damgård–Jurik–Nielsen short-exponent randomizer ``ρ = H^a`` (``H = h^n mod n²``,
``h = −x² mod n`` for a secret random ``x``, ``a`` uniform below ``2^{2κ}``, κ = 128) is
IND-CPA under the decisional composite residuosity assumption plus the short-exponent
indistinguishability assumption — the analysis ``veil.crypto.pool`` documents for its
``short_exponent`` mode.  That mode also multiplies in a random subset of full
randomizers, which defends against the *key holder* only (it can work modulo ``p`` and
``q``); here the key holder is the encrypting party itself, so the subset buys nothing and
costs ~30 multiplications per value.  ``H^a`` comes from a fixed-base table whose window
is chosen for the expected number of values (13 bits — 20 multiplications mod ``n²`` per
value — for hundreds of thousands).

Never use these for a ciphertext sent *to* the key holder: those get full randomizers
(``veil.crypto.RandomnessPool`` in its default mode), and the training code does.
"""

from __future__ import annotations

import secrets
from typing import Any

import gmpy2
from gmpy2 import mpz

from veil.crypto import KAPPA, PublicKey
from veil.crypto._internal.multiexp import FixedBaseTable

MAX_WINDOW = 13


def best_window(expected: int, bits: int) -> int:
    """Window minimising table set-up plus ``expected`` values (multiplications)."""

    def cost(w: int) -> int:
        rows = -(-bits // w)
        return rows * ((1 << w) - 1) + expected * rows

    return min(range(2, MAX_WINDOW + 1), key=cost)


def _unit(n: mpz) -> mpz:
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return r


class NonHolderRandomizers:
    """DJN randomizers for one public key (its secret ``x`` never leaves the object).

    Duck-types ``veil.crypto.RandomnessPool`` (``public_key``, ``take()``) so it can be
    passed to ``veil.crypto.encrypt``.  Thread-safe: the table is read-only after setup.
    """

    __slots__ = ("_bits", "_table", "public_key")

    def __init__(
        self, public_key: PublicKey, expected: int = 100_000, exponent_bits: int = 2 * KAPPA
    ) -> None:
        self.public_key = public_key
        n, n2 = public_key.n_mpz, public_key.nsquare_mpz
        x = _unit(n)
        big_h = gmpy2.powmod(-(x * x) % n, n, n2)
        self._bits = exponent_bits
        window = best_window(max(1, expected), exponent_bits)
        self._table = FixedBaseTable(big_h, n2, exponent_bits, window)

    def take(self) -> mpz:
        return self._table.power(secrets.randbits(self._bits))

    def __repr__(self) -> str:
        return f"NonHolderRandomizers(key_id={self.public_key.key_id!r})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("randomizer state is secret and cannot be pickled")
