"""Vectorised identifiers: unique valid USCCs and resident identity card numbers.

Uniqueness is structural rather than checked after the fact: enterprise *i* (its
global index in the population) gets the organisation-code body ``prefix + f(i)``
where ``f(i) = (a·i + b) mod M`` is an affine bijection of ``[0, M)`` (``a`` coprime to
``M``).  Distinct indices therefore get distinct bodies within a body style, and the
styles cannot collide (numeric bodies vs bodies starting with a letter), so every code
is unique however the population is chunked.  ``a`` and ``b`` come from the seed, so
different seeds give different codes.

Both check characters are computed with the same tables as :mod:`veil.uscc` (the
tests validate every generated code with :func:`veil.uscc.validate_uscc`).
"""

from __future__ import annotations

from math import gcd

import numpy as np
import numpy.typing as npt

from veil.uscc import ALPHABET, ORG_CODE_VALUES, ORG_CODE_WEIGHTS, USCC_WEIGHTS

__all__ = ["AffineCode", "id_card_numbers", "uscc_batch"]

_ALPHA = np.array(list(ALPHABET))
_USCC_VAL = np.full(128, -1, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _USCC_VAL[ord(_c)] = _i
_ORG_VAL = np.full(128, -1, dtype=np.int64)
for _c, _v in ORG_CODE_VALUES.items():
    _ORG_VAL[ord(_c)] = _v

NUMERIC_SPACE = 10**8
LETTER_SPACE = 31**6


class AffineCode:
    """The bijection ``i -> (a·i + b) mod m`` with ``a`` drawn coprime to ``m``."""

    def __init__(self, rng: np.random.Generator, m: int) -> None:
        while True:
            a = int(rng.integers(m // 7, m - 1))
            if gcd(a, m) == 1:
                break
        self.a, self.b, self.m = a, int(rng.integers(0, m)), m

    def __call__(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        # a < m <= 10^9 and i < 10^9 keep a·i + b below 2^63: no int64 overflow.
        if len(idx) and int(idx.max()) >= 10**9:
            raise ValueError("population index out of range for the affine code")
        return (self.a * idx.astype(np.int64) + self.b) % self.m


def _digits(values: npt.NDArray[np.int64], base: int, width: int) -> npt.NDArray[np.int64]:
    out = np.empty((len(values), width), dtype=np.int64)
    v = values.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = v % base
        v //= base
    return out


def _chars_to_codes(chars: npt.NDArray[np.str_]) -> npt.NDArray[np.int64]:
    """(n, k) array of single characters -> (n, k) array of their ASCII codes."""
    codes = np.frombuffer(chars.astype("U1").tobytes(), dtype=np.uint32).reshape(chars.shape)
    return codes.astype(np.int64)


def uscc_batch(
    dept: npt.NDArray[np.str_],
    org_type: npt.NDArray[np.str_],
    region: npt.NDArray[np.str_],
    body_prefix: npt.NDArray[np.str_],
    body_number: npt.NDArray[np.int64],
) -> npt.NDArray[np.str_]:
    """Assemble USCCs for whole arrays at once.

    ``body_prefix`` is ``""`` for numeric (pre-2015 style) bodies, whose 8 characters are
    the decimal digits of ``body_number`` (< 10^8), or a two-letter prefix such as
    ``"MA"`` followed by ``body_number`` (< 31^6) written in the 31-character alphabet.
    """
    n = len(dept)
    numeric = body_prefix == ""
    body = np.empty((n, 8), dtype="<U1")
    if numeric.any():
        body[numeric] = _digits(body_number[numeric], 10, 8).astype(str)
    lettered = ~numeric
    if lettered.any():
        prefix = body_prefix[lettered].astype("<U2")
        pre = np.frombuffer(prefix.tobytes(), dtype="<U1").reshape(-1, 2)
        body[lettered, :2] = pre
        body[lettered, 2:] = _ALPHA[_digits(body_number[lettered], 31, 6)]
    body_codes = _chars_to_codes(body)
    s9 = (_ORG_VAL[body_codes] * np.array(ORG_CODE_WEIGHTS)).sum(axis=1)
    c9 = 11 - s9 % 11
    check9 = np.where(c9 == 10, "X", np.where(c9 == 11, "0", c9.astype(str)))
    region_chars = np.frombuffer(region.astype("<U6").tobytes(), dtype="<U1").reshape(n, 6)
    first17 = np.concatenate(
        [
            dept.astype("<U1")[:, None],
            org_type.astype("<U1")[:, None],
            region_chars,
            body,
            check9.astype("<U1")[:, None],
        ],
        axis=1,
    )
    s18 = (_USCC_VAL[_chars_to_codes(first17)] * np.array(USCC_WEIGHTS)).sum(axis=1)
    check18 = _ALPHA[(31 - s18 % 31) % 31]
    full = np.concatenate([first17, check18[:, None]], axis=1)
    return np.frombuffer(full.tobytes(), dtype="<U18")


_ID_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)])
_ID_CHECK = np.array(list("10X98765432"))


def id_card_numbers(
    rng: np.random.Generator, region: npt.NDArray[np.str_], birth: npt.NDArray[np.datetime64]
) -> npt.NDArray[np.str_]:
    """Synthetic 18-digit resident identity numbers (GB 11643-1999) with a valid check.

    Region of issue + birth date ``YYYYMMDD`` + 3-digit sequence + ISO 7064 MOD 11-2
    check character.  They identify nobody: sequences are random.
    """
    n = len(region)
    ymd = np.datetime_as_string(birth, unit="D")
    ymd = np.char.replace(ymd, "-", "")
    seq = np.char.zfill(rng.integers(0, 1000, n).astype(str), 3)
    first17 = np.char.add(np.char.add(region.astype("<U6"), ymd), seq)
    digits = np.frombuffer(first17.astype("<U17").tobytes(), dtype="<U1").reshape(n, 17)
    s = (digits.astype(np.int64) * _ID_WEIGHTS).sum(axis=1)
    return np.char.add(first17, _ID_CHECK[s % 11])
