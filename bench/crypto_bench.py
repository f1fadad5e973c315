"""Crypto primitive benchmark: the modular arithmetic Veil's protocols cannot avoid.

Run from the repository root::

    python bench/crypto_bench.py --quick          # ~20 s: fewer repetitions
    python bench/crypto_bench.py                  # 2048 and 3072 bits
    python bench/crypto_bench.py --bits 2048

Prints one table (median time per operation, in milliseconds, one column per modulus
size) and then the derived lower bound for one joint-model score with 6 providers × 40
features — the CPU time of the exponentiations alone, summed over all parties, which
bounds the throughput of the scoring protocol on a machine with ``nproc`` cores.

Randomizers: "full" is ``r^n`` with uniform ``r`` (statistically hiding, also against the
key holder); "DJN" is Veil's short-exponent variant (see ``veil.crypto.pool``).  A pool
precomputes either in the background; ``take`` from a warm pool is then a queue pop, but
the sustained rate is bounded by the generation cost, which the derived rows include.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gmpy2
import phe
from cryptography.hazmat.primitives.asymmetric import x25519

from veil.crypto import (
    FixedPoint,
    MaskKey,
    PaillierKeys,
    RandomnessPool,
    add,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    dot,
    encrypt,
    full_randomizer,
    mul_plain,
    my_mask,
    pairwise_mask,
    prepare_dot,
    rerandomize,
)
from veil.crypto.pool import _DJN, _SMEAR_BASES

FEATURES = 40
PROVIDERS = 6


def median_ms(op: Callable[[], Any], reps: int) -> float:
    """Median wall time of ``op`` in milliseconds (runs in small batches for tiny ops)."""
    op()  # warm caches
    start = time.perf_counter()
    op()
    single = time.perf_counter() - start
    batch = max(1, int(0.002 / max(single, 1e-9)))  # batches of >= ~2 ms
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(batch):
            op()
        samples.append((time.perf_counter() - start) / batch * 1000)
    return statistics.median(samples)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_bits(bits: int, reps: int) -> dict[str, float]:
    keys = PaillierKeys.generate(bits)
    pk = keys.public
    n = pk.n
    out: dict[str, float] = {}
    reference = phe.PaillierPrivateKey(phe.PaillierPublicKey(n), keys._p, keys._q)
    heavy = max(5, reps // 4)

    djn = _DJN(pk, 256, _SMEAR_BASES)
    h_n = full_randomizer(pk)
    pool = RandomnessPool(pk, 64, short_exponent=True)
    pool.wait_ready(timeout=120)
    c = encrypt(pk, 123456789, pool)
    c2 = encrypt(pk, 987654321, pool)
    ws = [encrypt(pk, FixedPoint(30).encode(0.01 * i - 0.2, n), pool) for i in range(FEATURES)]
    k30 = [secrets.randbits(30) - (1 << 29) for _ in range(FEATURES)]
    k64 = [secrets.randbits(64) - (1 << 63) for _ in range(FEATURES)]
    plan30, plan64 = prepare_dot(ws, 30), prepare_dot(ws, 64)
    wire = ciphertext_bytes(c)

    out["encrypt (full r^n inline)"] = median_ms(lambda: encrypt(pk, 42), heavy)
    out["randomizer: full r^n"] = median_ms(lambda: full_randomizer(pk), heavy)
    out["randomizer: DJN h^a, a<2^256 (powmod)"] = median_ms(
        lambda: gmpy2.powmod(h_n, secrets.randbits(256), pk.nsquare_mpz), reps
    )
    out["randomizer: Veil DJN (table + subset)"] = median_ms(djn.value, reps)
    out["pool take (warm)"] = median_ms(_take_warm(pool), reps)
    out["rerandomize (warm pool)"] = median_ms(_rerandomize_warm(pool, c), reps)
    out["decrypt (CRT, powmod_sec)"] = median_ms(lambda: keys.decrypt(c), reps)
    out["decrypt (phe raw_decrypt, reference)"] = median_ms(
        lambda: reference.raw_decrypt(c.value), reps
    )
    out["add (c1·c2)"] = median_ms(lambda: add(c, c2), reps)
    out["add_plain (c·(1+mn))"] = median_ms(lambda: add_plain(c, 987654321), reps)
    out["mul_plain 30-bit"] = median_ms(lambda: mul_plain(c, k30[0]), reps)
    out["mul_plain 64-bit"] = median_ms(lambda: mul_plain(c, k64[0]), reps)
    out[f"dot {FEATURES} x 30-bit: naive powmods"] = median_ms(
        lambda: _naive_dot(ws, k30, pk.nsquare_mpz), heavy
    )
    out[f"dot {FEATURES} x 30-bit (Pippenger)"] = median_ms(lambda: dot(ws, k30), reps)
    out[f"dot {FEATURES} x 64-bit (Pippenger)"] = median_ms(lambda: dot(ws, k64), reps)
    out[f"DotPlan {FEATURES} x 30-bit (fixed bases)"] = median_ms(lambda: plan30.dot(k30), reps)
    out[f"DotPlan {FEATURES} x 64-bit (fixed bases)"] = median_ms(lambda: plan64.dot(k64), reps)
    out["ciphertext_from_bytes (validate)"] = median_ms(
        lambda: ciphertext_from_bytes(pk, wire), reps
    )

    names = [f"p{i}" for i in range(PROVIDERS)]
    mask_keys = {name: MaskKey.generate() for name in names}
    publics = {name: key.public_bytes() for name, key in mask_keys.items()}
    peer = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    counter = iter(range(10**9))

    def cold_mask() -> int:
        fresh = MaskKey.generate()  # no cached shared secret: X25519 + HKDF
        return pairwise_mask(fresh, "p0", peer, "p1", request_id="r", context="score", modulus=n)

    out["mask: X25519 keygen + exchange + HKDF"] = median_ms(cold_mask, reps)
    out["mask: HKDF only (cached secret)"] = median_ms(
        lambda: pairwise_mask(
            mask_keys["p0"],
            "p0",
            publics["p1"],
            "p1",
            request_id=str(next(counter)),
            context="score",
            modulus=n,
        ),
        reps,
    )
    out[f"my_mask ({PROVIDERS - 1} peers, cached)"] = median_ms(
        lambda: my_mask(
            mask_keys["p0"], "p0", publics, request_id=str(next(counter)), context="s", modulus=n
        ),
        reps,
    )
    pool.close()
    return out


def _take_warm(pool: RandomnessPool) -> Callable[[], Any]:
    """``take`` from a full pool: refill between samples is excluded by re-adding values."""
    state = pool._state
    value = pool.take()

    def op() -> Any:
        with state.cond:
            state.values.append(value)
        return pool.take()

    return op


def _rerandomize_warm(pool: RandomnessPool, c: Any) -> Callable[[], Any]:
    state = pool._state
    value = pool.take()

    def op() -> Any:
        with state.cond:
            state.values.append(value)
        return rerandomize(c, pool)

    return op


def _naive_dot(ws: list[Any], ks: list[int], n2: Any) -> Any:
    acc = gmpy2.mpz(1)
    for w, k in zip(ws, ks, strict=True):
        acc = acc * gmpy2.powmod(w._c, k, n2) % n2
    return acc


def derived(r: dict[str, float]) -> dict[str, float]:
    """CPU lower bound of one score: 6 providers × (dot 40 + mask + randomizer) + platform."""
    provider_fixed = (
        r[f"DotPlan {FEATURES} x 30-bit (fixed bases)"]
        + r["add_plain (c·(1+mn))"]
        + r["rerandomize (warm pool)"]
        + r[f"my_mask ({PROVIDERS - 1} peers, cached)"]
    )
    platform = (
        PROVIDERS * (r["ciphertext_from_bytes (validate)"] + r["add (c1·c2)"])
        + r["decrypt (CRT, powmod_sec)"]
    )
    full = PROVIDERS * (provider_fixed + r["randomizer: full r^n"]) + platform
    djn = PROVIDERS * (provider_fixed + r["randomizer: Veil DJN (table + subset)"]) + platform
    return {
        f"score CPU, {PROVIDERS}x{FEATURES}, full randomizers (ms)": full,
        f"score CPU, {PROVIDERS}x{FEATURES}, Veil DJN randomizers (ms)": djn,
        f"max scores/s on {os.cpu_count()} cores, full": 1000 * (os.cpu_count() or 1) / full,
        f"max scores/s on {os.cpu_count()} cores, Veil DJN": 1000 * (os.cpu_count() or 1) / djn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, action="append", help="modulus size (repeatable)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    sizes = args.bits or [2048, 3072]
    reps = 7 if args.quick else 25

    print(f"# machine: {os.cpu_count()} cores, {cpu_model()}")
    print(
        f"# python {platform.python_version()}, gmpy2 {gmpy2.version()}, phe "
        f"{getattr(phe, '__version__', '1.5')}"
    )
    print(f"# command: python {' '.join(sys.argv)}")
    results = {bits: bench_bits(bits, reps) for bits in sizes}
    width = max(len(name) for name in results[sizes[0]]) + 2
    header = "operation".ljust(width) + "".join(f"{str(b) + '-bit ms':>14}" for b in sizes)
    print(header)
    print("-" * len(header))
    for name in results[sizes[0]]:
        print(name.ljust(width) + "".join(f"{results[b][name]:>14.3f}" for b in sizes))
    print()
    lower = {b: derived(results[b]) for b in sizes}
    for name in lower[sizes[0]]:
        print(name.ljust(width + 14) + "".join(f"{lower[b][name]:>14.1f}" for b in sizes))


if __name__ == "__main__":
    main()
