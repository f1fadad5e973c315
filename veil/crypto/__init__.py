"""Veil's crypto compositions: Paillier (phe + gmpy2), fixed point, pairwise masks.

The contract with the protocols built on it is ``docs/crypto.md``.  In short:

* :mod:`veil.crypto.paillier` — keys (:class:`PaillierKeys`, :class:`PublicKey`), wire
  forms, :func:`encrypt`, :func:`rerandomize` and homomorphic :func:`add`,
  :func:`add_plain`, :func:`mul_plain`, :func:`dot` / :class:`DotPlan`;
* :mod:`veil.crypto.pool` — :class:`RandomnessPool`, precomputed randomizers;
* :mod:`veil.crypto.fixedpoint` — :class:`FixedPoint` encodings with a stated precision;
* :mod:`veil.crypto.masks` — X25519/HKDF pairwise masks, signed mask keys, secure sums.

Rule of thumb: every ciphertext that leaves a process went through :func:`rerandomize`
(:func:`ciphertext_bytes` enforces it), and every secure-sum contribution is masked.
"""

from veil.crypto.fixedpoint import FixedPoint, centred
from veil.crypto.masks import (
    MaskKey,
    SignedMaskKey,
    combine,
    mask_contribution,
    my_mask,
    pairwise_mask,
    sign_mask_key,
    verify_mask_key,
)
from veil.crypto.paillier import (
    MIN_MODULUS_BITS,
    SMALL_MARGIN_BITS,
    Ciphertext,
    DotPlan,
    PaillierKeys,
    PublicKey,
    add,
    add_many,
    add_plain,
    as_public_key,
    ciphertext_bytes,
    ciphertext_from_bytes,
    ciphertext_from_int,
    dot,
    encrypt,
    full_randomizer,
    mul_plain,
    prepare_dot,
    public_key_bytes,
    public_key_from_bytes,
    public_key_id,
    rerandomize,
)
from veil.crypto.pool import KAPPA, RandomnessPool

__all__ = [
    "KAPPA",
    "MIN_MODULUS_BITS",
    "SMALL_MARGIN_BITS",
    "Ciphertext",
    "DotPlan",
    "FixedPoint",
    "MaskKey",
    "PaillierKeys",
    "PublicKey",
    "RandomnessPool",
    "SignedMaskKey",
    "add",
    "add_many",
    "add_plain",
    "as_public_key",
    "centred",
    "ciphertext_bytes",
    "ciphertext_from_bytes",
    "ciphertext_from_int",
    "combine",
    "dot",
    "encrypt",
    "full_randomizer",
    "mask_contribution",
    "mul_plain",
    "my_mask",
    "pairwise_mask",
    "prepare_dot",
    "public_key_bytes",
    "public_key_from_bytes",
    "public_key_id",
    "rerandomize",
    "sign_mask_key",
    "verify_mask_key",
]
