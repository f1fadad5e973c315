"""Fixed-point encoding of reals as residues modulo n, with a stated precision.

``FixedPoint(f)`` represents a real ``v`` by the integer ``round(v · 2^f)`` (round half
to even), reduced modulo the plaintext modulus ``n`` so negatives wrap to ``n − |x|``.
Decoding takes the centred residue (the representative in ``(−n/2, n/2]``) and divides
by ``2^f``.  Consequences:

* **Precision.** Encoding one value errs by at most ``2^{-(f+1)}`` (:attr:`precision`).
  A sum of ``t`` encodings errs by at most ``t · 2^{-(f+1)}``.  A dot product
  ``Σ w_j·x_j`` of encodings ``W_j = w_j·2^{f_w} + ε_j``, ``X_j = x_j·2^{f_x} + δ_j``
  carries ``f_w + f_x`` fractional bits (:meth:`times`) and errs by at most
  ``Σ (|w_j|·2^{-(f_x+1)} + |x_j|·2^{-(f_w+1)} + 2^{-(f_w+f_x+2)})``.
* **Range.** The homomorphic result is only meaningful while the exact integer result
  stays in ``(−n/2, n/2]``; beyond it the residue wraps silently.  With a 2048-bit ``n``
  that is ``2^2047`` — e.g. 64 fractional bits for weights, 64 for features and 2^900
  terms of magnitude 2^900 still fit — but the caller must keep its own bound.
  :meth:`encode` refuses a single value outside the range rather than wrap it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from numbers import Integral

from veil.errors import InvalidArgument


def centred(residue: int, modulus: int) -> int:
    """The representative of ``residue mod modulus`` in ``(−modulus/2, modulus/2]``."""
    r = int(residue) % modulus
    return r - modulus if r > modulus // 2 else r


@dataclass(frozen=True)
class FixedPoint:
    """Encoding with ``frac_bits`` fractional bits: ``v ↦ round(v·2^frac_bits) mod n``."""

    frac_bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.frac_bits, int) or not 0 <= self.frac_bits <= 1024:
            raise InvalidArgument(
                f"frac_bits must be an integer in [0, 1024], not {self.frac_bits!r}"
            )

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def precision(self) -> float:
        """Largest error of one encoding: half a unit in the last place, ``2^-(f+1)``."""
        return math.ldexp(1.0, -(self.frac_bits + 1))

    def times(self, other: FixedPoint) -> FixedPoint:
        """The encoding a product of an encoding of ``self`` and one of ``other`` carries."""
        return FixedPoint(self.frac_bits + other.frac_bits)

    def to_int(self, value: float | Decimal | Fraction | int) -> int:
        """``round(value · 2^f)`` as a signed integer (half to even); NaN/∞ are refused.

        Use this for plaintext exponents (``mul_plain``/``dot`` accept negatives).
        """
        if isinstance(value, bool):
            return int(value) << self.frac_bits
        if isinstance(value, Integral):
            return int(value) << self.frac_bits
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise InvalidArgument(f"cannot encode {value} as a fixed-point number")
            return round(Fraction(value) * self.scale)  # exact, whatever the Decimal context
        if isinstance(value, Fraction):
            return round(value * self.scale)
        f = float(value)
        if not math.isfinite(f):
            raise InvalidArgument(f"cannot encode {f} as a fixed-point number")
        return round(Fraction(f) * self.scale)  # exact: no float rounding before ours

    def encode(self, value: float | Decimal | Fraction | int, modulus: int) -> int:
        """The residue in ``[0, modulus)`` representing ``value``; refuses values that wrap."""
        x = self.to_int(value)
        if not -(modulus // 2) < x <= modulus // 2:
            raise InvalidArgument(
                f"value {value!r} with {self.frac_bits} fractional bits does not fit the "
                f"{int(modulus).bit_length()}-bit modulus"
            )
        return x % modulus

    def decode(self, residue: int, modulus: int) -> float:
        """The real a residue represents: centred residue / 2^f (correctly rounded)."""
        return centred(residue, modulus) / self.scale

    def decode_exact(self, residue: int, modulus: int) -> Fraction:
        """As :meth:`decode`, exactly."""
        return Fraction(centred(residue, modulus), self.scale)

    def from_int(self, x: int) -> float:
        """The real a signed fixed-point integer represents."""
        return int(x) / self.scale
