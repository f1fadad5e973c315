"""Precomputed Paillier randomizers ``ρ = s^n mod n²`` (the expensive part of encryption).

A randomizer costs one exponentiation with an |n|-bit exponent (about 9 ms at 2048 bits,
29 ms at 3072 on the 2-core reference machine; docs/performance.md).
:class:`RandomnessPool` computes them in a background thread while the process is idle,
so :meth:`RandomnessPool.take` usually returns at once — and never waits longer than
computing one value itself.  The thread refills in bursts, from half-empty to full, so
that most requests run without it competing for the CPU.

Two modes, with different guarantees.  Choose by *who will see the ciphertexts*:

``short_exponent=False`` (default) — full randomizers
    ``s`` uniform in ``Z_n*``.  ``c·s^n`` is a uniformly random encryption of ``Dec(c)``:
    **statistically** hiding against everyone, including the private-key holder and even
    a key holder that generated its key maliciously.  Use it for every ciphertext sent to
    the key holder (providers answering the platform).

``short_exponent=True`` — Damgård–Jurik–Nielsen short exponents
    Setup (once per pool, secret to this process): ``x`` uniform in ``Z_n*``,
    ``h = −x² mod n``, ``H = h^n mod n²``, and ``k = 64`` full randomizers
    ``Y_i = y_i^n``.  Each value is ``ρ = H^a · Π_{i∈S} Y_i`` with ``a`` uniform below
    ``2^{2κ}`` (κ = 128) and ``S`` a uniformly random subset — ``ρ = (h^a·Π y_i)^n``, a
    valid randomizer.  ``H^a`` comes from a fixed-base table (32 multiplications) and
    ``Π_S Y_i`` from tables of subset products (8 at most): about 39 multiplications,
    some 40× (2048-bit) faster than a full randomizer.

    *Security.*  Against parties who do **not** know the factorization (providers
    receiving the platform's encrypted weights), DJN prove this IND-CPA under the
    decisional composite residuosity assumption together with the assumption that
    ``h^a`` for a 2κ-bit ``a`` is indistinguishable from a random element of ``⟨h⟩``
    (generic attacks on short exponents cost 2^κ).

    Against the **key holder** it is only computationally hiding and weaker: knowing
    ``p`` and ``q``, it can take ``n``-th roots and work in ``Z_p*``, ``Z_q*``.
    (1) Plain DJN (``ρ = H^a`` alone) is *broken* there: ``h = −x²`` has Legendre
    symbols ``(h|p) = (−1|p)``, ``(h|q) = (−1|q)``, so every ``h^a`` lies in a subgroup
    of index ≥ 2 that the key holder can test in microseconds; it recovers a provider's
    low-entropy inputs from re-randomized answers (``tests/test_crypto_attacks.py`` runs
    this attack).  The random subset of full randomizers ``Y_i`` makes the randomizer's
    image in every small quotient of ``Z_n*`` uniform again, up to statistical distance
    ``≈ 2^{-(k − log₂|Q|)/2}``.  (2) What remains rests on discrete logarithms in the
    large prime-order parts of ``Z_p*`` and ``Z_q*``: with them the key holder recovers
    short exponents (Pohlig–Hellman plus lattice reduction).  For an honestly generated
    2048-bit key that is a 1024-bit prime field, about 2^80 work with the number-field
    sieve (Logjam-class, amortizable across queries); for 3072 bits about 2^100 — below
    the 128-bit level of the rest of the system.  A key holder that chose ``p − 1`` and
    ``q − 1`` smooth breaks it outright.  So use this mode for ciphertexts sent to
    non-key-holders, or accept and document (LEAKAGE.md) the computational assumption.

Fork safety: values computed before ``fork()`` are discarded in the child (two processes
handing out the same randomizer would let the key holder divide two answers and cancel
it); the background thread restarts lazily.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import gmpy2
import phe
from gmpy2 import mpz

from veil.crypto._internal.multiexp import FixedBaseTable
from veil.crypto.paillier import PublicKey, as_public_key, full_randomizer
from veil.errors import FailedPrecondition, InvalidArgument

__all__ = ["KAPPA", "RandomnessPool"]

KAPPA = 128
"""Statistical/computational security parameter κ: DJN exponents have 2κ bits."""

_SMEAR_BASES = 64
_WINDOW = 8
_SMEAR_GROUP = 8


def _subset_products(bases: list[mpz], m: mpz) -> list[mpz]:
    """``out[b] = Π_{i: bit i of b} bases[i] mod m`` for every ``b < 2^len(bases)``."""
    out = [mpz(1)]
    for i, base in enumerate(bases):
        out.extend(x * base % m for x in out[: 1 << i])
    return out


class _DJN:
    """The per-pool DJN generator; its secrets (``x``, ``y_i``) never leave the object.

    ``ρ = H^a · Π_{i∈S} Y_i`` with two precomputed tables, so that a value costs about
    39 multiplications mod ``n²`` instead of 75: ``H^a`` from a fixed-base table of
    8-bit digits (32 rows of 255, ≈ 4 MB at 2048 bits), and the subset product from the
    products of every subset of each group of 8 ``Y_i`` (8 tables of 256, ≈ 1 MB), one
    multiplication per non-zero byte of ``S``.  The values are exactly those of the
    direct products (tested); the tables are as secret as ``x`` and the ``y_i``.
    """

    def __init__(self, key: PublicKey, exponent_bits: int, smear_bases: int) -> None:
        n, n2 = key.n_mpz, key.nsquare_mpz
        x = _unit(n)
        h = (-(x * x)) % n
        self.exponent_bits, self.n2 = exponent_bits, n2
        self.table = FixedBaseTable(gmpy2.powmod(h, n, n2), n2, exponent_bits, _WINDOW)
        self.smear = [full_randomizer(key) for _ in range(smear_bases)]
        self.groups = [
            _subset_products(self.smear[i : i + _SMEAR_GROUP], n2)
            for i in range(0, smear_bases, _SMEAR_GROUP)
        ]

    def value(self) -> mpz:
        return self.value_for(
            secrets.randbits(self.exponent_bits), secrets.randbits(len(self.smear))
        )

    def value_for(self, a: int, subset: int) -> mpz:
        """``H^a · Π_{i∈S} Y_i`` for ``S`` = the set bits of ``subset`` (``value`` draws
        both uniformly; tests supply them)."""
        rho, n2 = self.table.power(a), self.n2
        mask = (1 << _SMEAR_GROUP) - 1
        for products in self.groups:
            digit = subset & mask
            if digit:
                rho = rho * products[digit] % n2
            subset >>= _SMEAR_GROUP
        return rho


def _unit(n: mpz) -> mpz:
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return r


class _State:
    """Everything the worker thread touches (so the pool object itself can be collected)."""

    def __init__(self, key: PublicKey, size: int, make: Callable[[], mpz] | None) -> None:
        self.key = key
        self.size = size
        # Refill in bursts: wake the worker only once half the pool is used, then fill it
        # up.  Waking it on every take put one randomizer's work (and two thread
        # switches) inside nearly every request; bursts keep it off most of them.
        self.low_water = size // 2
        self.filling = True
        self.cond = threading.Condition()
        self.values: collections.deque[mpz] = collections.deque()
        self.closed = False
        self.pid = os.getpid()
        self.thread: threading.Thread | None = None
        self.make: Callable[[], mpz] | None = make  # None until DJN setup is done
        self.inline = 0

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.values.clear()
            self.cond.notify_all()


_LIVE_STATES: weakref.WeakSet[_State] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Give every pool a fresh lock and an empty queue in a forked child.

    The parent's worker thread may have held the lock at the moment of ``fork()`` (the
    child would then wait on it forever), and its precomputed values must never be used
    twice.  ``pid`` is left as the parent's so :meth:`RandomnessPool.take` restarts the
    worker.
    """
    for state in list(_LIVE_STATES):
        state.cond = threading.Condition()
        state.values.clear()
        state.thread = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _worker(state: _State, setup: Callable[[], Callable[[], mpz]] | None) -> None:
    # Release the GIL inside long gmpy2 operations so the event loop keeps running.
    gmpy2.get_context().allow_release_gil = True
    if setup is not None and state.make is None:
        make = setup()
        with state.cond:
            state.make = make
    pid = state.pid
    while True:
        with state.cond:
            while not state.closed and state.pid == pid:
                if len(state.values) >= state.size:
                    state.filling = False
                elif len(state.values) <= state.low_water:
                    state.filling = True
                if state.filling:
                    break
                state.cond.wait()
            if state.closed or state.pid != pid:
                return
            current = state.make
        assert current is not None
        value = current()
        with state.cond:
            if state.closed or state.pid != pid:
                return
            state.values.append(value)
            state.cond.notify_all()


class RandomnessPool:
    """Randomizers ``s^n mod n²`` for one public key, precomputed in the background.

    ``size`` values are kept ready.  See the module docstring for the two modes; the
    default (``short_exponent=False``) is statistically hiding against everyone.
    """

    def __init__(
        self,
        pk: phe.PaillierPublicKey,
        size: int = 64,
        short_exponent: bool = False,
        *,
        exponent_bits: int = 2 * KAPPA,
        start: bool = True,
    ) -> None:
        if size < 0:
            raise InvalidArgument("pool size must be non-negative")
        if short_exponent and exponent_bits < 2 * KAPPA:
            raise InvalidArgument(f"DJN exponents need at least {2 * KAPPA} bits")
        self.public_key = as_public_key(pk)
        self.short_exponent = short_exponent
        self.exponent_bits = exponent_bits
        self._setup: Callable[[], Callable[[], mpz]] | None = None
        make: Callable[[], mpz] | None
        if short_exponent:
            key = self.public_key

            def setup() -> Callable[[], mpz]:
                return _DJN(key, exponent_bits, _SMEAR_BASES).value

            self._setup, make = setup, None
        else:
            key = self.public_key

            def make() -> mpz:
                return full_randomizer(key)

        self._state = _State(self.public_key, size, make)
        _LIVE_STATES.add(self._state)
        self._finalizer = weakref.finalize(self, self._state.close)
        if start:
            self.start()

    def start(self) -> None:
        """Start (or, after a fork, restart) the background thread."""
        state = self._state
        with state.cond:
            if state.closed:
                raise FailedPrecondition("randomness pool is closed")
            if os.getpid() != state.pid:  # forked: never reuse the parent's values
                state.values.clear()
                state.pid = os.getpid()
                state.thread = None
                state.cond.notify_all()
            if state.thread is not None and state.thread.is_alive():
                return
            state.thread = threading.Thread(
                target=_worker, args=(state, self._setup), name="veil-randomness-pool", daemon=True
            )
            state.thread.start()

    def take(self) -> mpz:
        """One fresh randomizer, used once.  Computes it inline if none is ready."""
        state = self._state
        with state.cond:
            if state.closed:
                raise FailedPrecondition("randomness pool is closed")
            forked = os.getpid() != state.pid
            if not forked and state.values:
                value = state.values.popleft()
                if len(state.values) <= state.low_water and not state.filling:
                    state.cond.notify_all()
                return value
            make = state.make
            state.inline += 1
        if forked:
            self.start()
        if make is None:  # DJN setup still running: fall back to a full randomizer
            return full_randomizer(self.public_key)
        return make()

    def wait_ready(self, count: int | None = None, timeout: float = 60.0) -> bool:
        """Block until ``count`` (default: ``size``) values are ready; False on timeout."""
        state = self._state
        want = min(state.size, state.size if count is None else count)
        deadline = time.monotonic() + timeout
        with state.cond:
            while len(state.values) < want and not state.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                state.cond.wait(left)
            return len(state.values) >= want

    @property
    def ready(self) -> int:
        """How many precomputed values are waiting."""
        return len(self._state.values)

    @property
    def inline_count(self) -> int:
        """How many times :meth:`take` found the pool empty and computed a value itself."""
        return self._state.inline

    def close(self) -> None:
        """Stop the thread and discard the precomputed values."""
        self._finalizer()

    def __enter__(self) -> RandomnessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = f"djn{self.exponent_bits}" if self.short_exponent else "full"
        return (
            f"RandomnessPool(key_id={self.public_key.key_id!r}, mode={mode}, "
            f"size={self._state.size}, ready={self.ready})"
        )

    def __reduce__(self) -> Any:
        raise TypeError("a RandomnessPool must not be copied to another process")
