"""veil.crypto.paillier / fixedpoint / pool: known answers, round trips, wire forms, key files."""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import secrets
import signal
import stat
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import gmpy2
import phe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.crypto import (
    Ciphertext,
    FixedPoint,
    PaillierKeys,
    PublicKey,
    RandomnessPool,
    add,
    add_many,
    add_plain,
    centred,
    ciphertext_bytes,
    ciphertext_from_bytes,
    dot,
    encrypt,
    mul_plain,
    prepare_dot,
    public_key_bytes,
    public_key_from_bytes,
    rerandomize,
)
from veil.errors import (
    ConfigError,
    FailedPrecondition,
    InsecureKeyFile,
    InvalidArgument,
    KeyMismatch,
    StaleCiphertext,
)

# A fixed small test key: Mersenne primes 2^31 − 1 and 2^61 − 1 (n has 92 bits).
P_SMALL = 2**31 - 1
Q_SMALL = 2**61 - 1
R_FIXED = 123456789

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class FixedRandomizer:
    """Stands in for a pool with one known ``r`` — only to check exact ciphertexts."""

    def __init__(self, pk: PublicKey, r: int) -> None:
        self.public_key = pk
        self._rn = gmpy2.powmod(r, pk.n, pk.nsquare)

    def take(self) -> Any:
        return self._rn


def textbook_encrypt(n: int, m: int, r: int) -> int:
    n2 = n * n
    return pow(n + 1, m, n2) * pow(r, n, n2) % n2


@pytest.fixture(scope="module")
def small() -> PaillierKeys:
    return PaillierKeys.from_primes(P_SMALL, Q_SMALL, min_bits=0)


@pytest.fixture(scope="module")
def keys() -> PaillierKeys:
    return PaillierKeys.generate(2048)


@pytest.fixture(scope="module")
def pool(keys: PaillierKeys) -> Any:
    with RandomnessPool(keys.public, 32, short_exponent=True) as p:
        p.wait_ready(timeout=60)
        yield p


# --- known answers ----------------------------------------------------------------------


@pytest.mark.parametrize("m", [0, 1, 42, 2**60, P_SMALL * Q_SMALL - 1])
def test_encrypt_known_answer(small: PaillierKeys, m: int) -> None:
    n = small.public.n
    expected = textbook_encrypt(n, m, R_FIXED)
    assert expected == phe.PaillierPublicKey(n).raw_encrypt(m, r_value=R_FIXED)
    fixed = cast(RandomnessPool, FixedRandomizer(small.public, R_FIXED))
    c = encrypt(small.public, m, fixed)
    assert c.value == expected
    assert small.decrypt(c) == m
    assert ciphertext_bytes(c) == expected.to_bytes(23, "big")  # 2·92 bits → 23 bytes


def test_encrypt_known_answer_exact_integer(small: PaillierKeys) -> None:
    # Pinned so a change of formula or encoding cannot pass unnoticed.
    fixed = cast(RandomnessPool, FixedRandomizer(small.public, R_FIXED))
    c = encrypt(small.public, 42, fixed)
    assert c.value == textbook_encrypt(P_SMALL * Q_SMALL, 42, R_FIXED)
    assert c.value == 8700220528495752016669654904814053352360228893800905870


def test_negative_plaintexts_wrap(small: PaillierKeys) -> None:
    n = small.public.n
    fixed = cast(RandomnessPool, FixedRandomizer(small.public, R_FIXED))
    c = encrypt(small.public, -5, fixed)
    assert c.value == textbook_encrypt(n, n - 5, R_FIXED)
    assert small.decrypt(c) == n - 5
    assert small.decrypt_centred(c) == -5


def test_homomorphic_known_answers(small: PaillierKeys) -> None:
    n = small.public.n
    n2 = n * n
    fixed = cast(RandomnessPool, FixedRandomizer(small.public, R_FIXED))
    c1, c2 = encrypt(small.public, 7, fixed), encrypt(small.public, 11, fixed)
    assert add(c1, c2).value == c1.value * c2.value % n2
    assert add_plain(c1, 5).value == c1.value * (1 + 5 * n) % n2
    assert mul_plain(c1, 3).value == pow(c1.value, 3, n2)
    assert mul_plain(c1, -3).value == pow(pow(c1.value, -1, n2), 3, n2)
    assert mul_plain(c1, 0).value == 1  # the reason results must be re-randomized
    assert dot([c1, c2], [2, -1]).value == pow(c1.value, 2, n2) * pow(c2.value, -1, n2) % n2
    assert small.decrypt(add(c1, c2)) == 18
    assert small.decrypt(add_plain(c1, -10)) == n - 3
    assert small.decrypt_centred(dot([c1, c2], [2, -1])) == 3


def test_decrypt_matches_phe_crt(keys: PaillierKeys, pool: RandomnessPool) -> None:
    reference = phe.PaillierPrivateKey(phe.PaillierPublicKey(keys.public.n), keys._p, keys._q)
    for m in (0, 1, 2**100 + 7, keys.public.n - 1):
        c = encrypt(keys.public, m, pool)
        assert keys.decrypt(c) == reference.raw_decrypt(c.value) == m
        assert reference.decrypt_encoded(c.to_phe()).encoding == m  # phe's own path
        assert Ciphertext.from_phe(c.to_phe()) == c


# --- fixed point ------------------------------------------------------------------------

N_FP = P_SMALL * Q_SMALL


@pytest.mark.parametrize(
    ("value", "frac_bits", "residue"),
    [
        (1.5, 16, 98304),
        (-1.5, 16, N_FP - 98304),
        (0.1, 16, 6554),  # 6553.6 → 6554
        (-0.1, 16, N_FP - 6554),
        (Decimal("0.1"), 16, 6554),
        (Decimal("-2.75"), 8, N_FP - 704),
        (Fraction(1, 3), 10, 341),  # 341.33 → 341
        (2**-17, 16, 0),  # 0.5 → 0 (half to even)
        (3 * 2**-17, 16, 2),  # 1.5 → 2 (half to even)
        (-(2**-17), 16, 0),
        (7, 0, 7),
        (-7, 3, N_FP - 56),
        (True, 4, 16),
    ],
)
def test_fixed_point_vectors(value: Any, frac_bits: int, residue: int) -> None:
    fp = FixedPoint(frac_bits)
    assert fp.encode(value, N_FP) == residue
    assert abs(fp.decode(residue, N_FP) - float(value)) <= fp.precision


def test_fixed_point_decode_vectors() -> None:
    fp = FixedPoint(16)
    assert fp.decode(N_FP - 98304, N_FP) == -1.5
    assert fp.decode(98304, N_FP) == 1.5
    assert fp.decode_exact(N_FP - 1, N_FP) == Fraction(-1, 65536)
    assert fp.times(FixedPoint(8)) == FixedPoint(24)
    assert fp.precision == 2**-17
    assert centred(N_FP // 2, N_FP) == N_FP // 2
    assert centred(N_FP // 2 + 1, N_FP) == N_FP // 2 + 1 - N_FP


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, Decimal("NaN")])
def test_fixed_point_refuses_non_finite(bad: Any) -> None:
    with pytest.raises(InvalidArgument):
        FixedPoint(16).encode(bad, N_FP)


def test_fixed_point_refuses_wrapping_values() -> None:
    with pytest.raises(InvalidArgument, match="does not fit"):
        FixedPoint(40).encode(2.0**60, N_FP)
    with pytest.raises(InvalidArgument):
        FixedPoint(-1)


# --- property round trips ---------------------------------------------------------------

reals = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(value=reals, frac_bits=st.sampled_from([0, 16, 30, 52, 64]))
def test_encrypt_decrypt_within_precision(
    keys: PaillierKeys, pool: RandomnessPool, value: float, frac_bits: int
) -> None:
    fp = FixedPoint(frac_bits)
    c = encrypt(keys.public, fp.encode(value, keys.public.n), pool)
    assert abs(keys.decrypt_fixed(c, fp) - value) <= fp.precision * (1 + 1e-12) + abs(value) * 1e-15


@SETTINGS
@given(
    pairs=st.lists(
        st.tuples(
            st.floats(min_value=-100, max_value=100, allow_nan=False),
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_dot_equals_plaintext(
    keys: PaillierKeys, pool: RandomnessPool, pairs: list[tuple[float, float]]
) -> None:
    fw, fx = FixedPoint(30), FixedPoint(20)
    n = keys.public.n
    ws = [encrypt(keys.public, fw.encode(w, n), pool) for w, _ in pairs]
    xs = [fx.to_int(x) for _, x in pairs]
    got = keys.decrypt_fixed(dot(ws, xs), fw.times(fx))
    exact = math.fsum(w * x for w, x in pairs)
    bound = math.fsum(abs(w) * fx.precision + abs(x) * fw.precision for w, x in pairs)
    assert abs(got - exact) <= bound + 1e-9 * max(1.0, abs(exact))
    assert prepare_dot(ws, exponent_bits=48).dot(xs) == dot(ws, xs)


@SETTINGS
@given(
    ms=st.lists(st.integers(min_value=-(2**200), max_value=2**200), min_size=1, max_size=6),
    ks=st.lists(st.integers(min_value=-(2**64), max_value=2**64), min_size=6, max_size=6),
)
def test_homomorphic_integers(
    keys: PaillierKeys, pool: RandomnessPool, ms: list[int], ks: list[int]
) -> None:
    pk = keys.public
    cs = [encrypt(pk, m, pool) for m in ms]
    ks = ks[: len(ms)]
    assert keys.decrypt_centred(add_many(cs)) == sum(ms)
    assert keys.decrypt_centred(dot(cs, ks)) == sum(m * k for m, k in zip(ms, ks, strict=True))
    assert keys.decrypt_centred(mul_plain(cs[0], ks[0])) == ms[0] * ks[0]
    assert keys.decrypt_centred(add_plain(cs[0], ks[0])) == ms[0] + ks[0]
    plan = prepare_dot(cs, exponent_bits=16)  # wider exponents take the general path
    assert plan.dot(ks) == dot(cs, ks)


def test_dot_plan_matches_powmod(keys: PaillierKeys, pool: RandomnessPool) -> None:
    pk = keys.public
    cs = [encrypt(pk, i, pool) for i in range(40)]
    ks = [(-1) ** i * (i * 2654435761 % 2**30) for i in range(40)]
    ks[5] = 0
    n2 = pk.nsquare
    expected = 1
    for c, k in zip(cs, ks, strict=True):
        expected = expected * pow(c.value, k, n2) % n2
    assert dot(cs, ks).value == expected
    assert prepare_dot(cs, 30).dot(ks).value == expected


# --- re-randomization and pools ----------------------------------------------------------


@pytest.mark.parametrize("short", [False, True])
def test_pool_values_are_nth_residues(keys: PaillierKeys, short: bool) -> None:
    with RandomnessPool(keys.public, 4, short_exponent=short) as p:
        assert p.wait_ready(timeout=60)
        values = [p.take() for _ in range(6)]  # 4 precomputed, then inline
    assert len(set(values)) == 6
    for v in values:
        assert keys.decrypt(Ciphertext(keys.public, int(v))) == 0  # an encryption of 0


def test_djn_tables_give_the_direct_products(keys: PaillierKeys) -> None:
    """The short-exponent randomizer from its two tables equals ``H^a·Π_{i∈S} Y_i``
    computed with one ``powmod`` and plain multiplications, for chosen ``a`` and ``S``
    (zero bytes, full bytes, the top bits of both)."""
    import gmpy2

    from veil.crypto.pool import _DJN

    djn = _DJN(keys.public, 256, 64)
    n2 = keys.public.nsquare_mpz
    base = djn.table.power(1)
    cases = [(0, 0), (1, 1), (2**256 - 1, 2**64 - 1), (0xFF00FF << 100, 0x8000_0000_0000_0001)]
    cases += [(secrets.randbits(256), secrets.randbits(64)) for _ in range(8)]
    for a, subset in cases:
        want = gmpy2.powmod(base, a, n2)
        for i, y in enumerate(djn.smear):
            if subset >> i & 1:
                want = want * y % n2
        assert djn.value_for(a, subset) == want, (a, subset)


def test_pool_refills_in_bursts_from_half_empty(keys: PaillierKeys) -> None:
    """Taking a value does not wake the refill thread until half the pool is used (so
    most requests run without it competing for the CPU); then it fills up again."""
    with RandomnessPool(keys.public, 8, short_exponent=True) as p:
        assert p.wait_ready(timeout=60)
        for _ in range(3):
            p.take()
        time.sleep(0.3)  # ample time for a refill, had one been woken
        assert p.ready == 5
        p.take()  # half left: the thread refills to full
        assert p.wait_ready(timeout=60)
        assert p.ready == 8 and p.inline_count == 0


def test_rerandomize_changes_ciphertext_not_plaintext(
    keys: PaillierKeys, pool: RandomnessPool
) -> None:
    c = encrypt(keys.public, 12345, pool)
    d = rerandomize(c, pool)
    e = rerandomize(c)  # no pool: a full randomizer computed inline
    assert len({c, d, e}) == 3
    assert keys.decrypt(d) == keys.decrypt(e) == 12345
    assert d.rerandomized and e.rerandomized


def test_pool_for_another_key_is_refused(keys: PaillierKeys, small: PaillierKeys) -> None:
    other = RandomnessPool(small.public, 1, start=False)
    with pytest.raises(KeyMismatch):
        encrypt(keys.public, 1, other)
    other.close()
    with pytest.raises(FailedPrecondition):
        other.take()


def test_pool_is_fork_safe(keys: PaillierKeys) -> None:
    with RandomnessPool(keys.public, 4, short_exponent=True) as p:
        assert p.wait_ready(timeout=60)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: must not hand out the parent's precomputed values
            try:
                os.write(write, int(p.take()).to_bytes(512, "big"))
            finally:
                os._exit(0)
        os.close(write)
        child_value = b""
        while chunk := os.read(read, 4096):
            child_value += chunk
        os.close(read)
        os.waitpid(pid, 0)
        parent_values = {int(p.take()).to_bytes(512, "big") for _ in range(4)}
    assert len(child_value) == 512
    assert child_value not in parent_values


def test_pool_survives_fork_while_its_lock_is_held(keys: PaillierKeys) -> None:
    with RandomnessPool(keys.public, 2, short_exponent=True) as p:
        assert p.wait_ready(timeout=60)
        held, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with p._state.cond:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        held.wait()
        pid = os.fork()
        if pid == 0:  # the lock's holder does not exist here; take() must not hang
            signal.alarm(30)
            try:
                p.take()
                os._exit(0)
            except BaseException:
                os._exit(1)
        release.set()
        holder.join()
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_stale_ciphertexts_do_not_leave(keys: PaillierKeys, pool: RandomnessPool) -> None:
    c = encrypt(keys.public, 3, pool)
    assert c.rerandomized
    ciphertext_bytes(c)
    for derived in (mul_plain(c, 2), add(c, c), add_plain(c, 1), dot([c], [1])):
        assert not derived.rerandomized
        with pytest.raises(StaleCiphertext):
            ciphertext_bytes(derived)
        ciphertext_bytes(derived, unsafe_allow_stale=True)
        assert ciphertext_bytes(rerandomize(derived, pool))
    received = ciphertext_from_bytes(keys.public, ciphertext_bytes(c))
    assert received == c and not received.rerandomized


def test_key_mismatch(keys: PaillierKeys, small: PaillierKeys, pool: RandomnessPool) -> None:
    c = encrypt(keys.public, 1, pool)
    d = encrypt(small.public, 1)
    with pytest.raises(KeyMismatch):
        add(c, d)
    with pytest.raises(KeyMismatch):
        keys.decrypt(d)
    with pytest.raises(InvalidArgument, match="integer"):
        mul_plain(c, 1.5)  # type: ignore[arg-type]


# --- wire forms -------------------------------------------------------------------------


def test_public_key_wire_round_trip(keys: PaillierKeys) -> None:
    data = public_key_bytes(keys.public)
    assert len(data) == 256 and int.from_bytes(data, "big") == keys.public.n
    pk = public_key_from_bytes(data)
    assert isinstance(pk, phe.PaillierPublicKey) and pk == keys.public
    assert pk.key_id == keys.key_id


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" + (P_SMALL * Q_SMALL).to_bytes(12, "big"),
        (P_SMALL * Q_SMALL).to_bytes(12, "big"),  # too small
        (2**2048 - 2).to_bytes(256, "big"),  # even
        ((2**1024 + 643) ** 2).to_bytes(257, "big"),  # a square
        (3 * (2**2047 + 1)).to_bytes(257, "big"),  # small factor
    ],
)
def test_public_key_from_bytes_rejects(data: bytes) -> None:
    with pytest.raises(InvalidArgument):
        public_key_from_bytes(data)


def test_ciphertext_wire_round_trip(keys: PaillierKeys, pool: RandomnessPool) -> None:
    c = encrypt(keys.public, 99, pool)
    data = ciphertext_bytes(c)
    assert len(data) == 512
    back = ciphertext_from_bytes(keys.public, data)
    assert back == c and keys.decrypt(back) == 99


def test_generate_refuses_small_keys() -> None:
    with pytest.raises(InvalidArgument):
        PaillierKeys.generate(1024)
    with pytest.raises(InvalidArgument):
        PaillierKeys.from_primes(P_SMALL, Q_SMALL)  # below the 2048-bit floor by default
    with pytest.raises(InvalidArgument):
        PaillierKeys.from_primes(P_SMALL, P_SMALL, min_bits=0)


# --- key files and secrecy ----------------------------------------------------------------


def test_key_file_round_trip_0600(keys: PaillierKeys, tmp_path: Path) -> None:
    path = tmp_path / "platform.paillier.json"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = PaillierKeys.load(path)
    assert loaded.public == keys.public and loaded.key_id == keys.key_id
    c = encrypt(keys.public, 5)
    assert loaded.decrypt(c) == 5
    with pytest.raises(ConfigError, match="already exists"):
        keys.save(path)
    keys.save(path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_with_loose_permissions_is_refused(keys: PaillierKeys, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    keys.save(path)
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        PaillierKeys.load(path)


def test_corrupt_key_file_error_does_not_echo_it(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text('{"type": "veil-paillier-private-key", "version": 1, "p": "zzsecret", "q": 1}')
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        PaillierKeys.load(path)
    assert "zzsecret" not in str(err.value)


def test_private_key_never_in_repr_str_pickle_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = PaillierKeys.generate(2048)
    keys.save(tmp_path / "k.json")
    loaded = PaillierKeys.load(tmp_path / "k.json")
    pool = RandomnessPool(keys.public, 1, start=False)
    c = encrypt(keys.public, 1, pool)
    logging.getLogger("test").info("keys=%s loaded=%r pool=%r c=%r", keys, loaded, pool, c)
    pool.close()
    secrets_text = [
        form for prime in (keys._p, keys._q) for form in (str(prime), format(int(prime), "x"))
    ]
    shown = [repr(keys), str(keys), repr(loaded), caplog.text]
    for text in shown:
        for secret in secrets_text:
            assert secret not in text
    assert keys.key_id in caplog.text  # the logs do say which key
    with pytest.raises(TypeError):
        pickle.dumps(keys)
    with pytest.raises(TypeError):
        pickle.dumps(pool)


@SETTINGS
@given(m=st.integers(min_value=-(2**512) + 1, max_value=2**512 - 1))
def test_decrypt_small_round_trips_signed_plaintexts_within_its_bound(
    keys: PaillierKeys, pool: RandomnessPool, m: int
) -> None:
    c = encrypt(keys.public, m % keys.public.n, pool)
    assert keys.decrypt_small(c, bound_bits=512) == m == keys.decrypt_centred(c)


def test_decrypt_small_reports_plaintexts_outside_its_bound(
    keys: PaillierKeys, pool: RandomnessPool
) -> None:
    n = keys.public.n
    for m in (2**512, -(2**512), 2**600, n // 2):
        assert keys.decrypt_small(encrypt(keys.public, m % n, pool), bound_bits=512) is None, m
    # masks that did not cancel: a uniform residue never reads as a small total
    rng = random.Random(12)
    for _ in range(20):
        c = encrypt(keys.public, rng.randrange(n), pool)
        assert keys.decrypt_small(c, bound_bits=512) is None
    # the sum of masked values whose masks cancel reads exactly
    a = rng.randrange(n)
    total = add(encrypt(keys.public, (a + 41) % n, pool), encrypt(keys.public, n - a - 83, pool))
    assert keys.decrypt_small(total, bound_bits=512) == -42


def test_decrypt_small_reads_mod_p_as_documented(keys: PaillierKeys, pool: RandomnessPool) -> None:
    """It reads the plaintext mod p only: p·k + 5 reads as 5.  Only the key holder knows
    p, so only it could build such a plaintext; a uniform one reads in bound with
    probability below 2^-510."""
    p = int(keys._p)
    assert keys.decrypt_small(encrypt(keys.public, 3 * p + 5, pool), bound_bits=512) == 5


def test_decrypt_small_checks_its_bound_and_key(
    keys: PaillierKeys, small: PaillierKeys, pool: RandomnessPool
) -> None:
    c = encrypt(keys.public, 7, pool)
    widest = int(keys._p).bit_length() - 1 - 128
    assert keys.decrypt_small(c, bound_bits=widest) == 7
    assert keys.decrypt_small(c, bound_bits=3) == 7 and keys.decrypt_small(c, bound_bits=2) is None
    for bad in (-1, widest + 1):
        with pytest.raises(InvalidArgument, match="bound_bits must be between 0 and"):
            keys.decrypt_small(c, bound_bits=bad)
    with pytest.raises(KeyMismatch):
        small.decrypt_small(c, bound_bits=0)
