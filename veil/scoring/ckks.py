"""CKKS (TenSEAL) for full-coverage batch evaluation: parameters, keys, masks and noise.

Parameters (HomomorphicEncryption.org standard, 128-bit classical security for ternary
secrets: N = 8192 allows 218 bits of modulus):

* ``N = 8192`` → 4096 slots: 4096 enterprises per ciphertext;
* coefficient moduli 50 + 50 + 50 (+ 60 special) = 210 bits; scale ``2^50``.

The circuit is one plaintext–ciphertext product per table entry (``Enc(w)·1[bin]``) or
linear feature (``Enc(w)·x``), summed, and **never rescaled**: the provider's context has
``auto_rescale`` off, so every product, the fresh mask encryption and the sum sit at
scale ``2^100`` (:data:`RESULT_SCALE`) on the full 150-bit modulus — values up to 2^48
decrypt correctly, and a rescale per product (~40 % of a product's cost) is saved.  The
platform checks that shape (:func:`check_result`) before adding providers' answers.

What leaves a provider, per chunk: ``Σ Enc(w)⊙x + Enc(m_i + e_i)`` where ``m_i`` is its
pairwise mask vector and ``e_i`` flooding noise, encrypted *fresh* with the public key
(which also re-randomizes the ciphertext).  Why both:

* **masks** — the platform holds the secret key and could decrypt each provider's
  ciphertext; masks uniform in ``[−2^30, 2^30)`` per pair (ChaCha20 keystream seeded by
  the pair's X25519/HKDF secret for this job and chunk) cancel in the sum.  Each slot's
  masked value is within statistical distance ``|s|/2^31`` (≈ 2^-25 for |s| ≤ 64) of
  uniform — weaker than the 2^-128 of the online Paillier masks, because CKKS is
  approximate arithmetic over reals;
* **noise flooding** — CKKS decryption returns the message *plus its error*, and part
  of that error is ``Σ e_w·x`` where ``e_w`` is the encryption error of the platform's
  own weight ciphertexts: known to the key holder, so the error is a linear function of
  the provider's data.  Each slot gets Gaussian noise ``σ = 2^-16`` (≈ 1.5e-5), about
  2^17 times the measured circuit error (~7e-11): the leak per slot is bounded by a
  statistical distance of about 2^-17.  This is the precision/privacy trade-off.

Stated precision: with ``t`` providers the logit errs by a Gaussian of standard deviation
``σ·√t`` plus < 1e-6 (mask cancellation, encoding): ``|ΔPD| ≤ |Δlogit|/4 ≤ 1e-4`` with
overwhelming probability for ``t ≤ 16`` (6σ√16 = 3.7e-4 in the logit).
"""

from __future__ import annotations

import math
import os
import secrets
import stat

import numpy as np
import numpy.typing as npt
import tenseal as ts
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from veil.crypto._internal.keyfile import write_secret_file
from veil.errors import ConfigError, InsecureKeyFile, InvalidArgument

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (50, 50, 50, 60)
SCALE_BITS = 50
SLOTS = POLY_MODULUS_DEGREE // 2
RESULT_SCALE = 2.0 ** (2 * SCALE_BITS)
RESULT_MODULI = len(COEFF_MOD_BIT_SIZES) - 1  # the special prime is not a data level
MASK_BOUND = float(2**30)
FLOOD_SIGMA = 2.0**-16
MAX_PROVIDERS_FOR_PRECISION = 16
MAX_SECRET_CONTEXT_BYTES = 8 * 1024 * 1024
PRECISION = "|ΔPD| ≤ 1e-4 (CKKS N=8192, scale 2^50, flooding σ=2^-16 per provider, ≤ 16 providers)"

F64 = npt.NDArray[np.float64]


def new_secret_context() -> ts.Context:
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
    )
    ctx.global_scale = 2.0**SCALE_BITS
    return ctx


def public_context_bytes(ctx: ts.Context) -> bytes:
    """The context without its secret key (nor relinearization/Galois keys: unused)."""
    return bytes(
        ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def load_public_context(data: bytes) -> ts.Context:
    """A provider's view of the platform's context; refuses one carrying a secret key
    (it would be the platform's mistake, and the provider would then hold it).  Products
    made under it are not rescaled (see the module docstring)."""
    try:
        ctx = ts.context_from(data)
    except Exception:
        raise InvalidArgument("CKKS public context does not parse") from None
    if ctx.has_secret_key() or not ctx.has_public_key():
        raise InvalidArgument("CKKS context must carry the public key and no secret key")
    ctx.global_scale = 2.0**SCALE_BITS
    ctx.auto_rescale = False
    return ctx


def check_result(vector: ts.CKKSVector, who: str) -> None:
    """A provider's batch answer must be one ciphertext of :data:`SLOTS` values at
    :data:`RESULT_SCALE` on the full modulus: anything else would not add up with the
    others (or decrypt to nonsense) — rejected, naming the provider."""
    cts = vector.ciphertext()
    ok = (
        vector.size() == SLOTS
        and len(cts) == 1
        and cts[0].size() == 2
        and cts[0].coeff_modulus_size() == RESULT_MODULI
        and cts[0].scale == RESULT_SCALE
    )
    if not ok:
        raise InvalidArgument(
            f"provider {who!r} returned a CKKS ciphertext of the wrong shape, scale or "
            "level; rejected"
        )


def save_secret_context(ctx: ts.Context, path: str | os.PathLike[str]) -> None:
    """The secret context (secret key and parameters) to a new 0600 file."""
    data = ctx.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    write_secret_file(path, bytes(data), overwrite=False)


def _read_secret(path: str | os.PathLike[str]) -> bytes:
    """Like ``veil.crypto``'s key-file reader (mode checked on the open descriptor, group
    and others refused), for a secret context of a few hundred KiB: a CKKS secret key is
    a polynomial, far above the 64 KiB that reader allows."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(name, "ckks key", exc.strerror or "cannot be opened") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(name, "ckks key", "is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InsecureKeyFile(
                name, "permissions", f"mode {mode:04o} lets group/others read the secret key"
            )
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_SECRET_CONTEXT_BYTES:
                raise ConfigError(name, "ckks key", "is too large")
    finally:
        os.close(fd)
    return b"".join(chunks)


def load_secret_context(path: str | os.PathLike[str]) -> ts.Context:
    data = _read_secret(path)
    try:
        ctx = ts.context_from(data)
    except Exception:
        raise ConfigError(str(path), "ckks key", "is not a TenSEAL CKKS context") from None
    if not ctx.has_secret_key():
        raise ConfigError(str(path), "ckks key", "holds no secret key")
    ctx.global_scale = 2.0**SCALE_BITS
    return ctx


def _keystream(key: bytes, size: int) -> bytes:
    encryptor = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
    return encryptor.update(b"\x00" * size)


def _unit_uniform(key: bytes, n: int) -> F64:
    """``n`` doubles uniform in [0, 1) from a ChaCha20 keystream (53 bits each)."""
    raw = np.frombuffer(_keystream(key, 8 * n), dtype=">u8").astype(np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


def mask_vector(seed: int, n: int, bound: float = MASK_BOUND) -> F64:
    """The pair's mask vector, uniform in ``[−bound, bound)``, from a 256-bit seed (both
    providers of the pair derive the same seed with X25519 + HKDF)."""
    if not 0 <= seed < 2**256:
        raise InvalidArgument("mask seed must be a 256-bit integer")
    return bound * (2.0 * _unit_uniform(seed.to_bytes(32, "big"), n) - 1.0)


def flood_noise(n: int, sigma: float = FLOOD_SIGMA) -> F64:
    """Gaussian noise (Box–Muller over a fresh ChaCha20 keystream): unpredictable to the
    platform, unlike a seeded statistical generator."""
    u = _unit_uniform(secrets.token_bytes(32), 2 * n)
    u1 = np.maximum(u[:n], 2.0**-53)
    return sigma * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u[n:])
