"""Secure sum of per-row partial scores across feature parties (pairwise masks, vectors).

Each feature party ``p`` holds ``u_p = X_p·w_p`` for the rows of a batch.  It sends
``s_p = enc(u_p) + M_p (mod 2^64)`` where ``enc(u) = round(u·2^24)`` (two's complement)
and ``M_p = Σ_{q≠p} ±PRG(seed_pq)``: ``+`` when ``p``'s name sorts before ``q``'s.  Over
all feature parties the masks cancel, so the label party learns
``Σ_p u_p`` (to ``2^-25`` per party) and, from any single ``s_p``, nothing: each
``s_p`` is uniformly distributed in ``Z_{2^64}^n`` to anyone missing one of ``p``'s
pairwise seeds.

``seed_pq`` is ``veil.crypto.pairwise_mask(..., modulus=2^256)`` — HKDF-SHA256 over the
X25519 secret of the pair's per-run mask keys, salted with the run's request id, with the
step as context — and ``PRG`` is AES-256 in counter mode keyed by it (zero nonce: each key
is used for one context only).  Contexts never repeat within a run (the stage order
enforces one answer per step), and they include a digest of the rows asked for, so a label
party that asked different parties for different rows gets masks that do not cancel
instead of a mismatched sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veil.crypto.masks import MaskKey, pairwise_mask
from veil.errors import InvalidArgument

SCORE_FRAC_BITS = 24
_SCALE = float(1 << SCORE_FRAC_BITS)
_LIMIT = float(1 << 38)
U64 = npt.NDArray[np.uint64]


def encode_scores(u: npt.NDArray[np.float64]) -> U64:
    if u.size and float(np.max(np.abs(u))) >= _LIMIT:
        raise InvalidArgument("partial scores out of the secure-sum range")
    return np.rint(u * _SCALE).astype(np.int64).view(np.uint64)


def decode_sum(total: U64) -> npt.NDArray[np.float64]:
    return total.view(np.int64).astype(np.float64) / _SCALE


def rows_digest(rows: npt.NDArray[np.int64] | None) -> str:
    if rows is None:
        return "all"
    return hashlib.sha256(np.asarray(rows, dtype="<i8").tobytes()).hexdigest()[:32]


def _prg(seed: int, n: int) -> U64:
    key = seed.to_bytes(32, "big")
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    return np.frombuffer(enc.update(b"\x00" * (8 * n)) + enc.finalize(), dtype="<u8").astype(
        np.uint64
    )


def mask_vector(
    my_key: MaskKey,
    my_name: str,
    peers: Mapping[str, bytes],
    *,
    request_id: str,
    context: str,
    n: int,
) -> U64:
    """``M_p`` for ``n`` rows; ``peers`` maps every other feature party to its verified key."""
    total = np.zeros(n, dtype=np.uint64)
    for name in sorted(peers):
        if name == my_name:
            continue
        seed = pairwise_mask(
            my_key,
            my_name,
            peers[name],
            name,
            request_id=request_id,
            context=context,
            modulus=1 << 256,
        )
        stream = _prg(seed, n)
        total = total + stream if my_name < name else total - stream
    return total


def masked_scores(
    u: npt.NDArray[np.float64],
    my_key: MaskKey,
    my_name: str,
    peers: Mapping[str, bytes],
    *,
    request_id: str,
    context: str,
) -> bytes:
    """What a feature party sends: ``enc(u) + M_p`` as little-endian uint64."""
    masked = encode_scores(u) + mask_vector(
        my_key, my_name, peers, request_id=request_id, context=context, n=len(u)
    )
    return masked.astype("<u8").tobytes()


def combine_scores(contributions: Mapping[str, bytes], n: int) -> npt.NDArray[np.float64]:
    """``Σ_p u_p`` from every feature party's masked contribution (all must be present)."""
    total = np.zeros(n, dtype=np.uint64)
    for name, data in contributions.items():
        if len(data) != 8 * n:
            raise InvalidArgument(f"feature party {name!r} sent {len(data)} bytes, not {8 * n}")
        total = total + np.frombuffer(data, dtype="<u8").astype(np.uint64)
    return decode_sum(total)
