"""The attacks privacy-goals.md names, run against veil.crypto: each works only where stated.

1. Guessing a provider's low-entropy feature from its answer.  (a) Without re-randomization
   the platform recomputes ``Π Enc(w_j)^{x̂_j}`` for each guess and compares — it wins
   every time, masks or not.  (b) The key holder can also test quadratic characters
   mod p and q: this breaks plain DJN short-exponent re-randomization
   (``ρ = (−x²)^{n·a}``), but not Veil's pools.  With ``rerandomize`` the platform does
   no better than chance.
2. Decrypting one provider's masked contribution tells nothing about its value.
3. A mask key substituted by the relaying platform is rejected.
4. Malformed ciphertexts are rejected with a reason.
5. The documented limit: the platform with all providers but one recovers that one's value.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import gmpy2
import grpc
import pytest

from veil.certs import NodePaths, init_dev_pki
from veil.crypto import (
    Ciphertext,
    MaskKey,
    PaillierKeys,
    RandomnessPool,
    SignedMaskKey,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    ciphertext_from_int,
    dot,
    encrypt,
    mask_contribution,
    my_mask,
    pairwise_mask,
    rerandomize,
    sign_mask_key,
    verify_mask_key,
)
from veil.errors import InvalidMaskKey, MalformedCiphertext, StaleCiphertext
from veil.tls import PeerIdentity

TRIALS = 200
# Chance is 0.5; with 200 trials the standard deviation is 0.035, so ±0.15 is > 4σ.
CHANCE_LOW, CHANCE_HIGH = 0.35, 0.65


@pytest.fixture(scope="module")
def keys() -> PaillierKeys:
    return PaillierKeys.generate(2048)


@pytest.fixture(scope="module")
def full_pool(keys: PaillierKeys) -> Any:
    with RandomnessPool(keys.public, 16) as pool:
        yield pool


@pytest.fixture(scope="module")
def djn_pool(keys: PaillierKeys) -> Any:
    with RandomnessPool(keys.public, 16, short_exponent=True) as pool:
        assert pool.wait_ready(timeout=60)
        yield pool


@pytest.fixture(scope="module")
def providers() -> dict[str, MaskKey]:
    return {name: MaskKey.generate() for name in ("court", "hf", "tax")}


def publics(providers: dict[str, MaskKey]) -> dict[str, bytes]:
    return {name: key.public_bytes() for name, key in providers.items()}


def provider_answer(
    enc_w: Ciphertext,
    x: int,
    mask: int,
    rerandomizer: Callable[[Ciphertext], Ciphertext] | None,
) -> Ciphertext:
    """What a provider sends: Enc(w)^x · g^mask, re-randomized unless ``rerandomizer`` is None."""
    c = add_plain(dot([enc_w], [x]), mask)
    if rerandomizer is None:
        return ciphertext_from_bytes(enc_w.public_key, ciphertext_bytes(c, unsafe_allow_stale=True))
    return ciphertext_from_bytes(enc_w.public_key, ciphertext_bytes(rerandomizer(c)))


# --- 1a. the guessing attack by recomputation -------------------------------------------


def stripped(keys: PaillierKeys, c: Ciphertext) -> Ciphertext:
    """``c · g^{−Dec(c)}``: the randomness part alone (the key holder can compute it)."""
    return add_plain(c, -keys.decrypt(c))


def comparison_attack(
    keys: PaillierKeys, guesses: dict[int, Ciphertext], answer: Ciphertext
) -> int:
    """The curious platform: strip the (masked) plaintext, compare with each guess's."""
    seen = stripped(keys, answer)
    for guess, candidate in guesses.items():
        if candidate == seen:
            return guess
    return random.randrange(2)  # no match: the answer's randomness is unpredictable


def guesses_for(keys: PaillierKeys, enc_w: Ciphertext) -> dict[int, Ciphertext]:
    """What the platform expects for each value of the feature: ``Enc(w)^x̂``, stripped."""
    return {guess: stripped(keys, dot([enc_w], [guess])) for guess in (0, 1)}


@pytest.mark.parametrize("masked", [False, True])
def test_guessing_attack_succeeds_without_rerandomization(
    keys: PaillierKeys, djn_pool: RandomnessPool, masked: bool
) -> None:
    enc_w = encrypt(keys.public, 7_340_032, djn_pool)  # a weight, Enc under the platform key
    guesses = guesses_for(keys, enc_w)
    wins = 0
    for _ in range(TRIALS // 4):
        x = secrets.randbelow(2)
        mask = secrets.randbelow(keys.public.n) if masked else 0
        wins += comparison_attack(keys, guesses, provider_answer(enc_w, x, mask, None)) == x
    assert wins == TRIALS // 4  # every single feature recovered, masks notwithstanding


def test_stale_answer_cannot_be_sent_by_default(keys: PaillierKeys, djn_pool: Any) -> None:
    enc_w = encrypt(keys.public, 5, djn_pool)
    with pytest.raises(StaleCiphertext):
        ciphertext_bytes(add_plain(dot([enc_w], [1]), 3))


@pytest.mark.parametrize("pool_name", ["full_pool", "djn_pool"])
def test_guessing_attack_fails_with_rerandomization(
    keys: PaillierKeys, pool_name: str, request: pytest.FixtureRequest
) -> None:
    pool: RandomnessPool = request.getfixturevalue(pool_name)
    enc_w = encrypt(keys.public, 7_340_032, pool)
    guesses = guesses_for(keys, enc_w)
    wins = 0
    for _ in range(TRIALS):
        x = secrets.randbelow(2)
        answer = provider_answer(
            enc_w, x, secrets.randbelow(keys.public.n), lambda c: rerandomize(c, pool)
        )
        wins += comparison_attack(keys, guesses, answer) == x
    assert CHANCE_LOW <= wins / TRIALS <= CHANCE_HIGH


# --- 1b. the key holder's character attack: breaks plain DJN, not Veil's pools ------------


def characters(keys: PaillierKeys, value: int) -> tuple[int, int]:
    """Legendre symbols of ``value`` mod p and mod q (only the key holder can compute them).

    For any ciphertext ``c = (1 + m·n)·s^n``: ``c ≡ s^n (mod p)`` and ``n`` is odd, so
    ``(c|p) = (s|p)``: the characters of the randomness, whatever the plaintext or mask.
    """
    p, q = keys._p, keys._q
    return int(gmpy2.legendre(value % p, p)), int(gmpy2.legendre(value % q, q))


def character_attack(keys: PaillierKeys, r_chars: tuple[int, int], answer: Ciphertext) -> int:
    """Guess ``x`` from an answer ``Enc(w; r)^x · g^mask · ρ``, assuming ``ρ = h^{n·a}``.

    For ``h = −y²``, every ``h^a`` has characters in ``S = {(1, 1), ((−1|p), (−1|q))}``;
    the answer's characters are ``χ(r)^x · χ(h^a)``.  Keep the guesses consistent with S.
    """
    p, q = keys._p, keys._q
    minus_one = (int(gmpy2.legendre(p - 1, p)), int(gmpy2.legendre(q - 1, q)))
    allowed = {(1, 1), minus_one}
    seen = characters(keys, answer.value)
    consistent = [
        guess
        for guess in (0, 1)
        if (seen[0] * r_chars[0] ** guess, seen[1] * r_chars[1] ** guess) in allowed
    ]
    return consistent[0] if len(consistent) == 1 else random.randrange(2)


def weight_with_chosen_randomness(keys: PaillierKeys, w: int) -> tuple[Ciphertext, tuple[int, int]]:
    """The platform encrypts a weight with an ``r`` whose characters lie outside S."""
    n, n2 = keys.public.n, keys.public.nsquare
    p, q = keys._p, keys._q
    minus_one = (int(gmpy2.legendre(p - 1, p)), int(gmpy2.legendre(q - 1, q)))
    while True:
        r = secrets.randbelow(n - 2) + 2
        chars = characters(keys, r)
        if chars not in {(1, 1), minus_one}:
            c = (1 + w * n) * pow(r, n, n2) % n2
            return ciphertext_from_int(keys.public, c), chars


def plain_djn(keys: PaillierKeys) -> Callable[[Ciphertext], Ciphertext]:
    """Textbook DJN re-randomization (not what Veil ships): ρ = (−y²)^{n·a}, a < 2^256."""
    n, n2 = keys.public.n, keys.public.nsquare
    y = secrets.randbelow(n - 2) + 2
    big_h = gmpy2.powmod(-(y * y) % n, n, n2)

    def rerandomize_djn(c: Ciphertext) -> Ciphertext:
        rho = gmpy2.powmod(big_h, secrets.randbits(256), n2)
        return rerandomize(c, cast(RandomnessPool, _FixedRho(keys, rho)))

    return rerandomize_djn


class _FixedRho:
    """Hands out one given randomizer (lets the test plug textbook DJN into the API)."""

    def __init__(self, keys: PaillierKeys, rho: int) -> None:
        self.public_key = keys.public
        self._rho = gmpy2.mpz(rho)

    def take(self) -> Any:
        return self._rho


def test_character_attack_breaks_plain_djn(keys: PaillierKeys) -> None:
    enc_w, r_chars = weight_with_chosen_randomness(keys, 7_340_032)
    djn = plain_djn(keys)
    wins = 0
    for _ in range(TRIALS // 2):
        x = secrets.randbelow(2)
        answer = provider_answer(enc_w, x, secrets.randbelow(keys.public.n), djn)
        wins += character_attack(keys, r_chars, answer) == x
    assert wins == TRIALS // 2  # every feature recovered from re-randomized, masked answers


@pytest.mark.parametrize("pool_name", ["full_pool", "djn_pool"])
def test_character_attack_fails_against_veil_pools(
    keys: PaillierKeys, pool_name: str, request: pytest.FixtureRequest
) -> None:
    pool: RandomnessPool = request.getfixturevalue(pool_name)
    enc_w, r_chars = weight_with_chosen_randomness(keys, 7_340_032)
    wins = 0
    for _ in range(TRIALS):
        x = secrets.randbelow(2)
        answer = provider_answer(
            enc_w, x, secrets.randbelow(keys.public.n), lambda c: rerandomize(c, pool)
        )
        wins += character_attack(keys, r_chars, answer) == x
    assert CHANCE_LOW <= wins / TRIALS <= CHANCE_HIGH


# --- 2. a single masked contribution is uniform ------------------------------------------


def test_single_masked_contribution_reveals_nothing(
    keys: PaillierKeys, djn_pool: RandomnessPool, providers: dict[str, MaskKey]
) -> None:
    n = keys.public.n
    roster = publics(providers)
    seen: dict[int, list[int]] = {0: [], 1: []}
    for trial in range(TRIALS):
        v = secrets.randbelow(2)
        mask = my_mask(
            providers["hf"], "hf", roster, request_id=f"req-{trial}", context="ok", modulus=n
        )
        answer = rerandomize(add_plain(encrypt(keys.public, v, djn_pool), mask), djn_pool)
        seen[v].append(keys.decrypt(answer))  # what the curious platform sees
    classifiers: dict[str, Callable[[int], int]] = {
        "top bit": lambda m: int(m > n // 2),
        "parity": lambda m: m & 1,
        "mod 3": lambda m: int(m % 3 == 1),
        "below n/4": lambda m: int(m < n // 4),
    }
    total = len(seen[0]) + len(seen[1])
    for name, guess in classifiers.items():
        correct = sum(guess(m) == v for v in (0, 1) for m in seen[v])
        assert CHANCE_LOW <= correct / total <= CHANCE_HIGH, name
    top = {v: [m >> (n.bit_length() - 8) for m in seen[v]] for v in (0, 1)}
    mean = {v: sum(top[v]) / max(1, len(top[v])) for v in (0, 1)}
    assert abs(mean[0] - mean[1]) < 40  # top byte ~ uniform either way (σ of a mean ≈ 7)


# --- 5. the documented collusion limit -----------------------------------------------------


def test_platform_with_all_but_one_provider_recovers_the_last(
    keys: PaillierKeys, djn_pool: RandomnessPool, providers: dict[str, MaskKey]
) -> None:
    n = keys.public.n
    roster = publics(providers)
    target, colluders = "hf", ["court", "tax"]
    for trial in range(5):
        value = secrets.randbelow(10**6)
        rid = f"collude-{trial}"
        mask = my_mask(providers[target], target, roster, request_id=rid, context="sum", modulus=n)
        answer = rerandomize(add_plain(encrypt(keys.public, value, djn_pool), mask), djn_pool)
        seen = keys.decrypt(answer)
        # Each colluder knows its pairwise mask with the target, hence the target's mask.
        rebuilt = 0
        for j in colluders:
            m = pairwise_mask(
                providers[j], j, roster[target], target, request_id=rid, context="sum", modulus=n
            )
            rebuilt += m if target < j else -m
        assert (seen - rebuilt) % n == value  # LEAKAGE.md: this coalition learns the value


def test_platform_with_all_but_two_learns_only_their_sum(
    keys: PaillierKeys, providers: dict[str, MaskKey]
) -> None:
    n = keys.public.n
    roster = publics(providers)
    rid, values = "collude-sum", {"court": 11, "hf": 22, "tax": 33}
    contributions = {
        name: mask_contribution(
            values[name],
            my_mask(providers[name], name, roster, request_id=rid, context="s", modulus=n),
            n,
        )
        for name in providers
    }
    # Colluder "tax" cancels its own share; the two honest contributions stay masked by m_court,hf.
    honest_sum = (contributions["court"] + contributions["hf"]) % n
    m_court_tax = pairwise_mask(
        providers["tax"], "tax", roster["court"], "court", request_id=rid, context="s", modulus=n
    )
    m_hf_tax = pairwise_mask(
        providers["tax"], "tax", roster["hf"], "hf", request_id=rid, context="s", modulus=n
    )
    assert (honest_sum - m_court_tax - m_hf_tax) % n == 33  # court + hf, and nothing finer
    only_court = (contributions["court"] - m_court_tax) % n
    assert only_court != values["court"]  # still masked by the court–hf pair mask


# --- 3. mask-key substitution ---------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodePaths]:
    return init_dev_pki(
        tmp_path_factory.mktemp("pki"),
        [("provider", "tax"), ("provider", "hf"), ("platform", "plat")],
    )


def test_substituted_mask_key_is_rejected(pki: dict[str, NodePaths], tmp_path: Path) -> None:
    ca = pki["tax"].ca.read_bytes()
    tax = PeerIdentity("provider", "tax")
    genuine_key = MaskKey.generate()
    genuine = sign_mask_key(genuine_key, pki["tax"].key, pki["tax"].cert.read_bytes())
    assert verify_mask_key(genuine, ca, tax) == genuine_key.public_bytes()

    platform_key = MaskKey.generate()
    own = platform_key.public_bytes()
    # (a) swap the key, keep the provider's certificate and signature
    swapped = SignedMaskKey(own, genuine.signature, genuine.cert_pem)
    # (b) sign it with the platform's own (valid) TLS identity
    by_platform = sign_mask_key(platform_key, pki["plat"].key, pki["plat"].cert.read_bytes())
    # (c) a certificate for veil://provider/tax from a CA the providers do not trust
    rogue = init_dev_pki(tmp_path / "rogue", [("provider", "tax")])["tax"]
    by_rogue_ca = sign_mask_key(platform_key, rogue.key, rogue.cert.read_bytes())
    # (d) another provider's genuine signed key presented as tax's
    hf_key = sign_mask_key(MaskKey.generate(), pki["hf"].key, pki["hf"].cert.read_bytes())
    for forged, check in [
        (swapped, "signature"),
        (by_platform, "identity"),
        (by_rogue_ca, "issuer"),
        (hf_key, "identity"),
    ]:
        with pytest.raises(InvalidMaskKey) as err:
            verify_mask_key(forged, ca, tax)
        assert err.value.details["check"] == check


def test_a_remembered_roster_is_never_a_way_around_its_checks(
    pki: dict[str, NodePaths],
) -> None:
    """``ProviderMaskKeys.peers`` remembers a roster it accepted (by its exact bytes and
    the provider's own key): a roster that differs in any byte is checked afresh, and a
    rotated own key turns the remembered roster stale."""
    from provider_node.mask_keys import ProviderMaskKeys, StaleMaskKey

    ca = pki["tax"].ca.read_bytes()

    def node(name: str) -> ProviderMaskKeys:
        key = MaskKey.generate()
        signed = sign_mask_key(key, pki[name].key, pki[name].cert.read_bytes())
        return ProviderMaskKeys(name, name, key, signed, ca)

    tax, hf = node("tax"), node("hf")
    roster = [tax.signed_message(), hf.signed_message()]
    assert tax.peers(roster) == {"hf": hf.key.public_bytes()}
    assert tax.peers(roster) == {"hf": hf.key.public_bytes()}  # remembered
    platform_key = MaskKey.generate()
    forged = hf.signed_message()
    forged.public_key = platform_key.public_bytes()  # the platform swaps hf's key in
    with pytest.raises(InvalidMaskKey):
        tax.peers([tax.signed_message(), forged])
    rotated = node("tax")
    tax.key, tax.signed = rotated.key, rotated.signed  # tax rotated its mask key
    with pytest.raises(StaleMaskKey):
        tax.peers(roster)


def test_a_remembered_roster_expires_with_its_oldest_key_check(
    pki: dict[str, NodePaths], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roster first accepted late in its peer's verification window is trusted only
    until that verification's ``VERIFIED_TTL_S`` runs out, not for a window of its own."""
    import provider_node.mask_keys as mask_keys

    clock = [1000.0]
    checks: list[str] = []
    real = mask_keys.verify_mask_key

    def counted(signed: Any, ca_pem: bytes, identity: PeerIdentity) -> bytes:
        checks.append(identity.name)
        return real(signed, ca_pem, identity)

    monkeypatch.setattr(mask_keys.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(mask_keys, "verify_mask_key", counted)
    ca = pki["tax"].ca.read_bytes()
    made = {}
    for name in ("tax", "hf"):
        key = MaskKey.generate()
        signed = sign_mask_key(key, pki[name].key, pki[name].cert.read_bytes())
        made[name] = mask_keys.ProviderMaskKeys(name, name, key, signed, ca)
    tax, hf = made["tax"], made["hf"]
    tax.verify(hf.signed_message())  # hf's key checked at t = 1000
    clock[0] += mask_keys.VERIFIED_TTL_S - 50
    roster = [tax.signed_message(), hf.signed_message()]
    tax.peers(roster)  # accepted from the cached check
    clock[0] += 40
    tax.peers(roster)
    assert checks == ["hf"]
    clock[0] += 20  # past the TTL of hf's check, though not of the roster's acceptance
    tax.peers(roster)
    assert checks == ["hf", "hf"]


def test_substitution_would_have_stripped_the_mask(keys: PaillierKeys) -> None:
    """Why (3) matters: a platform whose key replaced the peer's computes the mask itself."""
    n = keys.public.n
    victim, platform_as_peer = MaskKey.generate(), MaskKey.generate()
    roster = {"hf": victim.public_bytes(), "tax": platform_as_peer.public_bytes()}
    mask = my_mask(victim, "hf", roster, request_id="r", context="c", modulus=n)
    contribution = mask_contribution(42, mask, n)
    m = pairwise_mask(
        platform_as_peer, "tax", victim.public_bytes(), "hf", request_id="r", context="c", modulus=n
    )
    assert (contribution - m) % n == 42


# --- 4. malformed ciphertexts ----------------------------------------------------------------


def test_malformed_ciphertexts_are_rejected(keys: PaillierKeys) -> None:
    pk = keys.public
    n2 = pk.nsquare
    size = pk.ciphertext_size
    cases = {
        "out_of_range": [n2, n2 + 1, 2 ** (8 * size) - 1],
        "zero": [0],
        "not_coprime": [keys._p, keys._q * 12345, pk.n, pk.n * 7],
    }
    for reason, values in cases.items():
        for value in values:
            for parse in (
                lambda v: ciphertext_from_bytes(pk, v.to_bytes(size, "big")),
                lambda v: ciphertext_from_int(pk, v),
                lambda v: Ciphertext(pk, v),
            ):
                with pytest.raises(MalformedCiphertext) as err:
                    parse(value)
                assert err.value.details["reason"] == reason
                assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    for data in (b"", b"\x01" * (size - 1), b"\x01" * (size + 1)):
        with pytest.raises(MalformedCiphertext, match="bytes") as err:
            ciphertext_from_bytes(pk, data)
        assert err.value.details["reason"] == "wrong_length"
    with pytest.raises(MalformedCiphertext):
        ciphertext_from_int(pk, -5)
    with pytest.raises(MalformedCiphertext):
        ciphertext_from_int(pk, True)
