"""Fixed-point packing of a feature party's rows into Paillier plaintexts.

The gradient of feature party ``p`` on a batch is ``g = X_pᵀ r / |batch|`` (``r`` the
residuals, known only to the label party).  The feature party encrypts its rows once,
under **its own** Paillier key, packing ``k`` features per plaintext::

    K_{i,c} = Σ_{t<k} (x_q[i, c·k + t] + OFF) · 2^{S·t}         (slot t of chunk c)

with ``x_q = round(x · 2^FX)`` (``|x| < 16`` after encoding, so ``0 ≤ x_q + OFF < 2^17``
with ``OFF = 2^{FX+4}``).  The label party raises row ciphertexts to its residuals
``r_q = round(r · 2^FR)`` and multiplies (one Pippenger multi-exponentiation per chunk)::

    Π_i Enc(K_{i,c})^{r_q,i} = Enc( Σ_t (Σ_i r_q,i·x_q[i,j] + OFF·Σ_i r_q,i) · 2^{S·t} )

then removes the offset term itself (it knows ``Σ_i r_q,i``; the feature party never
learns the batch's residual sum) and re-randomizes.  The feature party decrypts and reads
slot ``t`` as the signed integer ``Σ_i r_q,i·x_q[i,j]`` (borrows between slots are undone
by reading the centred value slot by slot), i.e. its exact gradient in units of
``2^{-(FX+FR)}``.

Precision: ``x`` to ``2^-13`` and ``r`` to ``2^-17`` (round to nearest) — far below the
noise of a mini-batch gradient.  Range: a slot holds ``|Σ| < 2^{S−1}``; with
``|x_q| < 2^16``, ``|r_q| ≤ 2^16`` and ``S = 56`` that allows batches up to ``2^22`` rows
(checked).  A 2048-bit modulus packs 36 slots per ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument

FX = 12
"""Fractional bits of a packed feature value."""
FR = 16
"""Fractional bits of a residual used as an exponent."""
FEATURE_LIMIT = 16.0
"""Encoded features must lie in (−16, 16): standardised values are clipped to ±clip ≤ 15."""
OFF = 1 << (FX + 4)
SLOT_BITS = 56
SLOT_BYTES = SLOT_BITS // 8
MAX_BATCH = 1 << 22


@dataclass(frozen=True)
class Packing:
    """How one feature party's ``features`` columns map to ciphertext chunks."""

    features: int
    modulus_bits: int

    def __post_init__(self) -> None:
        if self.features < 1:
            raise InvalidArgument("packing needs at least one feature")
        if self.slots < 1:
            raise InvalidArgument(f"a {self.modulus_bits}-bit modulus is too small to pack")

    @property
    def slots(self) -> int:
        """Slots per plaintext: ``S·k`` bits must stay below ``n/2`` (signed results)."""
        return (self.modulus_bits - 2) // SLOT_BITS

    @property
    def chunks(self) -> int:
        return -(-self.features // self.slots)

    def chunk_columns(self, c: int) -> range:
        return range(c * self.slots, min(self.features, (c + 1) * self.slots))

    def offset_weight(self, c: int) -> int:
        """``Σ_t OFF·2^{S·t}`` over the used slots of chunk ``c`` (the offset correction
        the label party removes, multiplied by ``Σ r_q``)."""
        return sum(OFF << (SLOT_BITS * t) for t in range(len(self.chunk_columns(c))))


def quantize_features(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    if x.size and float(np.max(np.abs(x))) >= FEATURE_LIMIT:
        raise InvalidArgument(
            f"encoded features must lie in (-{FEATURE_LIMIT:g}, {FEATURE_LIMIT:g})"
        )
    return np.rint(x * (1 << FX)).astype(np.int64)


def quantize_residuals(r: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.rint(np.clip(r, -1.0, 1.0) * (1 << FR)).astype(np.int64)


def pack_rows(xq: npt.NDArray[np.int64], packing: Packing, chunk: int) -> list[int]:
    """Plaintext integers ``K_{i,chunk}`` for every row of ``xq`` (n × features)."""
    cols = packing.chunk_columns(chunk)
    block = (xq[:, cols.start : cols.stop] + OFF).astype(np.uint64)
    if block.size and (int(block.min()) < 0 or int(block.max()) >= (1 << (FX + 5))):
        raise InvalidArgument("quantized features out of the packing range")
    raw = block.astype("<u8").view(np.uint8).reshape(len(xq), len(cols), 8)[:, :, :SLOT_BYTES]
    flat = np.ascontiguousarray(raw).reshape(len(xq), len(cols) * SLOT_BYTES)
    return [int.from_bytes(row.tobytes(), "little") for row in flat]


def unpack_sums(value: int, count: int) -> list[int]:
    """The signed slot values of a decrypted, centred sum (``count`` used slots)."""
    out = []
    t = int(value)
    half, full = 1 << (SLOT_BITS - 1), 1 << SLOT_BITS
    for _ in range(count):
        v = t & (full - 1)
        if v >= half:
            v -= full
        out.append(v)
        t = (t - v) >> SLOT_BITS
    if t != 0:
        raise InvalidArgument("decrypted gradient does not fit its slots (malformed ciphertext)")
    return out


def check_batch(size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        raise InvalidArgument(f"batch of {size} rows is outside 1..{MAX_BATCH}")
