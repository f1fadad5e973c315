"""Checks across providers under encryption (veil/composite.py), with real Paillier keys
and real X25519 masks: correctness against the plaintext combination, and what a curious
platform — which holds the private key — can read from every message it receives."""

from __future__ import annotations

import itertools
import random
import uuid
from decimal import Decimal

import pytest

from platform_node.verification_fanout import check_ciphertext_count
from veil.claims import Truth, t_all, t_any, t_at_least
from veil.composite import (
    SLOT_BITS,
    ZERO_TEST_PRIME,
    Combined,
    MalformedContribution,
    Protocol,
    decide,
    masked_ciphertexts,
    plain_contribution,
)
from veil.crypto import (
    MaskKey,
    PaillierKeys,
    RandomnessPool,
    ciphertext_from_bytes,
    my_mask,
)

T, F, N = Truth.TRUE, Truth.FALSE, Truth.NO_RECORD
UNITS = ("housing_fund", "real_estate", "samr", "social_insurance", "tax", "utilities")


@pytest.fixture(scope="module")
def keys() -> PaillierKeys:
    return PaillierKeys.generate(2048)


@pytest.fixture(scope="module")
def mask_keys() -> dict[str, MaskKey]:
    return {u: MaskKey.generate() for u in UNITS}


@pytest.fixture(scope="module")
def pool(keys: PaillierKeys) -> RandomnessPool:
    return RandomnessPool(keys.public, size=16, short_exponent=True)


def run_protocol(
    protocol: Protocol,
    keys: PaillierKeys,
    mask_keys: dict[str, MaskKey],
    pool: RandomnessPool,
    parts: dict[str, list[Truth]] | None = None,
    sums: dict[str, tuple[Decimal, int]] | None = None,
    total: int = 0,
) -> tuple[str, dict[str, list[bytes]]]:
    """Every provider's answer, as the platform receives it."""
    units = sorted(parts or sums or {})
    publics = {u: mask_keys[u].public_bytes() for u in units}
    rid = uuid.uuid4().hex
    n = keys.public.n
    out = {}
    for unit in units:
        if protocol is Protocol.SUM:
            assert sums is not None
            partial, missing = sums[unit]
            values = plain_contribution(protocol, n, partial_sum=partial, missing=missing)
        else:
            assert parts is not None
            values = plain_contribution(protocol, n, truths=parts[unit], total=total)
        peers = {u: k for u, k in publics.items() if u != unit}

        def mask_for(ctx: str, unit: str = unit, peers: dict[str, bytes] = peers) -> int:
            return my_mask(mask_keys[unit], unit, peers, request_id=rid, context=ctx, modulus=n)

        out[unit] = masked_ciphertexts(
            protocol, values, public_key=keys.public, mask_for=mask_for, pool=pool
        )
    return rid, out


def combine(protocol: Protocol, keys: PaillierKeys, answers: dict[str, list[bytes]], **kw: object):  # type: ignore[no-untyped-def]
    combined = Combined(keys, protocol, [answers[u] for u in sorted(answers)]).read()
    return decide(protocol, combined, **kw)  # type: ignore[arg-type]


def random_parts(rng: random.Random, units: tuple[str, ...]) -> dict[str, list[Truth]]:
    return {u: [rng.choice([T, T, T, F, N]) for _ in range(rng.randint(1, 3))] for u in units}


def test_all_any_count_equal_the_plaintext_combination(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    rng = random.Random(4)
    for trial in range(24):
        units = UNITS[: 2 + trial % 5]
        parts = random_parts(rng, units)
        flat = [t for u in sorted(parts) for t in parts[u]]
        m = len(flat)
        for protocol, expected in (
            (Protocol.ALL, t_all(flat)),
            (Protocol.ANY, t_any(flat)),
        ):
            _, answers = run_protocol(protocol, keys, mask_keys, pool, parts=parts)
            assert combine(protocol, keys, answers) == (expected, {}), (protocol, parts)
            # the platform's reading mod p equals the full decryption of the product
            combined = Combined(keys, protocol, [answers[u] for u in sorted(answers)])
            assert combined.read() == keys.decrypt(combined.product())
        k = rng.randint(1, m)
        _, answers = run_protocol(Protocol.COUNT, keys, mask_keys, pool, parts=parts, total=m)
        result, revealed = combine(Protocol.COUNT, keys, answers, k=k, total=m)
        assert result is t_at_least(k, flat.count(T), flat.count(N))
        assert revealed == {"true": str(flat.count(T)), "no_record": str(flat.count(N))}


def test_sum_equals_the_plaintext_sum(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    sums = {
        "tax": (Decimal("1219576.19"), 0),
        "housing_fund": (Decimal("39600"), 0),
        "samr": (Decimal("-4.2100"), 0),
    }
    total = sum(v for v, _ in sums.values())
    _, answers = run_protocol(Protocol.SUM, keys, mask_keys, pool, sums=sums)
    for op, threshold, expected in (
        ("ge", total, T),
        ("ge", total + Decimal("0.0001"), F),
        ("lt", total, F),
        ("le", total, T),
    ):
        result, revealed = combine(Protocol.SUM, keys, answers, op=op, threshold=threshold)
        assert result is expected
        assert Decimal(revealed["sum"]) == total
    sums["housing_fund"] = (Decimal(0), 1)  # no record: no_record, and the sum is hidden
    _, answers = run_protocol(Protocol.SUM, keys, mask_keys, pool, sums=sums)
    assert combine(Protocol.SUM, keys, answers, op="ge", threshold=Decimal(1)) == (N, {})
    combined = Combined(keys, Protocol.SUM, [answers[u] for u in sorted(answers)])
    assert combined.read() is None  # uniform junk, not a partial sum
    junk = keys.decrypt_centred(combined.product())
    assert abs(junk) > 2**1000


def test_every_ciphertext_is_fresh_and_well_formed(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    parts = {"tax": [T], "utilities": [T]}
    _, first = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=parts)
    _, second = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=parts)
    for unit in parts:
        for a, b in zip(first[unit], second[unit], strict=True):
            assert a != b and len(a) == keys.public.ciphertext_size
            ciphertext_from_bytes(keys.public, a)


# --- the curious platform ----------------------------------------------------------------


def view(keys: PaillierKeys, answers: dict[str, list[bytes]]) -> dict[str, list[int]]:
    """Everything the platform can compute from what it received: each ciphertext
    decrypted with its own private key."""
    return {
        u: [keys.decrypt(ciphertext_from_bytes(keys.public, c)) for c in cts]
        for u, cts in answers.items()
    }


def explain_all(
    seen: dict[str, list[int]], alternative: dict[str, list[Truth]], n: int
) -> dict[str, int]:
    """Values under which ``alternative`` produces exactly ``seen`` in the ``all``
    protocol (the platform's view of a *false* answer), or raise; returns the masks.

    x_i = (a_i + P·s_i) + 2^W·(b_i + P·s'_i) + M_i with a_i = r_i·D_i + r'_i·U_i and
    b_i = r''_i·D_i mod P, Σ M_i ≡ 0 mod n.  Pick every multiplier freely except one
    failing provider's, solve that one so that each slot's total agrees mod P, spread
    what remains of each slot's total over the smudging s, and set the masks to the
    differences.  Every multiplier found is uniform on [1, P), every smudge within
    [0, 2^128): the view is as consistent with the alternative as with the truth.
    """
    big_p = ZERO_TEST_PRIME
    units = sorted(seen)
    d = {u: sum(1 for t in alternative[u] if t is F) for u in units}
    u_ = {u: sum(1 for t in alternative[u] if t is N) for u in units}
    pivot = next(u for u in units if d[u])
    rng = random.Random(1)
    total = sum(seen[u][0] for u in units) % n
    assert total < 2 ** (2 * SLOT_BITS)  # the masks cancel: a small total
    lo, hi = total & ((1 << SLOT_BITS) - 1), total >> SLOT_BITS

    def solve(slot_total: int, coeff: dict[str, int], extra: dict[str, int]) -> dict[str, int]:
        """Slot values ``coeff·r + extra mod P`` plus smudges summing to ``slot_total``."""
        r = {u: rng.randrange(1, big_p) for u in units}
        others = sum((r[u] * coeff[u] + extra[u]) % big_p for u in units if u != pivot)
        r[pivot] = (slot_total - others - extra[pivot]) * pow(coeff[pivot], -1, big_p) % big_p
        assert r[pivot] != 0
        values = {u: (r[u] * coeff[u] + extra[u]) % big_p for u in units}
        quotient, rest = divmod(slot_total - sum(values.values()), big_p)
        assert rest == 0
        share, spare = divmod(quotient, len(units))
        smudge = {u: share + (i < spare) for i, u in enumerate(units)}
        assert all(0 <= v < 2**128 for v in smudge.values())
        return {u: values[u] + big_p * smudge[u] for u in units}

    r2 = {u: rng.randrange(1, big_p) for u in units}
    first = solve(lo, d, {u: r2[u] * u_[u] for u in units})
    second = solve(hi, d, {u: 0 for u in units})
    masks = {u: (seen[u][0] - first[u] - (second[u] << SLOT_BITS)) % n for u in units}
    assert sum(masks.values()) % n == 0
    return masks


def test_curious_platform_view_does_not_determine_any_providers_answer(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    """'No arrears anywhere' across six providers, answered false because the tax bureau
    says so.  The platform's whole view is equally consistent with any other assignment
    in which some provider fails — e.g. only the utilities company, or every provider —
    so it cannot tell which provider said what."""
    n = keys.public.n
    actual = {u: [T] for u in UNITS} | {"tax": [F]}
    _, answers = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=actual)
    assert combine(Protocol.ALL, keys, answers)[0] is F
    seen = view(keys, answers)
    # nothing small leaks from any single provider: each value is spread over Z_n
    for values in seen.values():
        assert all(2**256 < v < n - 2**256 for v in values)
    alternatives = [
        {u: [T] for u in UNITS} | {"utilities": [F]},
        {u: [F] for u in UNITS},
        {u: [T] for u in UNITS} | {"samr": [F], "real_estate": [N]},
    ]
    for alternative in alternatives:
        explain_all(seen, alternative, n)


def test_view_distribution_is_the_same_for_different_assignments(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    """A statistical distinguisher (the top bit of the tax bureau's decrypted value, and
    whether it is zero) has no edge between 'tax fails' and 'utilities fails'."""
    n = keys.public.n
    top = {"tax fails": 0, "utilities fails": 0}
    units = ("tax", "utilities", "samr")
    trials = 60
    for name, failing in (("tax fails", "tax"), ("utilities fails", "utilities")):
        parts = {u: [T] for u in units} | {failing: [F]}
        for _ in range(trials):
            _, answers = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=parts)
            x = view(keys, {"tax": answers["tax"]})["tax"]
            assert x[0] != 0
            top[name] += x[0] > n // 2
    assert abs(top["tax fails"] - top["utilities fails"]) < trials * 0.35


def test_slot_quotients_do_not_count_the_failing_providers(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    """Beyond each slot mod P, the platform reads its quotient by P: the smudging plus
    the carries of the slot's residues, whose number grows with the providers that fail.
    Without smudging one failing provider always gives quotient 0 and six failing almost
    never do; with it both are uniform: here the fraction of quotients ≡ 0 mod 8 stays
    near 1/8 whichever providers fail."""
    zeros = {}
    trials = 40
    for failing in (("tax",), UNITS):
        parts = {u: [T] for u in UNITS} | {u: [F] for u in failing}
        count = 0
        for _ in range(trials):
            _, answers = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=parts)
            total = Combined(keys, Protocol.ALL, [answers[u] for u in UNITS]).read()
            assert total is not None
            for slot in (total & ((1 << SLOT_BITS) - 1), total >> SLOT_BITS):
                count += (slot // ZERO_TEST_PRIME) % 8 == 0
        zeros[len(failing)] = count / (2 * trials)
    assert zeros[1] < 0.35 and zeros[6] < 0.35, zeros


def test_contributions_whose_masks_do_not_cancel_are_refused(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    """A provider answering with masks for another request (or any garbage that is a
    valid ciphertext): the product reads as a uniform residue, out of bound, and the check
    is refused — not answered false, as a uniform 'first slot' would otherwise read."""
    parts = {u: [T] for u in UNITS}
    for protocol in (Protocol.ALL, Protocol.ANY, Protocol.COUNT):
        _, answers = run_protocol(protocol, keys, mask_keys, pool, parts=parts, total=6)
        _, other = run_protocol(protocol, keys, mask_keys, pool, parts=parts, total=6)
        answers["tax"] = other["tax"]
        with pytest.raises(MalformedContribution) as info:
            combine(protocol, keys, answers, k=1, total=6)
        assert info.value.details == {"reason": "masks_did_not_cancel"}
        assert info.value.code.name == "UNAVAILABLE"


def test_count_reveals_counts_but_not_which_provider(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    """at_least reveals how many conditions hold: two assignments with the same counts
    give views the masks explain equally (x_i = c_i + M_i, Σ M_i = 0)."""
    n = keys.public.n
    a = {"tax": [T], "utilities": [F], "samr": [T]}
    b = {"tax": [F], "utilities": [T], "samr": [T]}
    _, answers = run_protocol(Protocol.COUNT, keys, mask_keys, pool, parts=a, total=3)
    seen = view(keys, answers)
    contribution = {u: sum(1 for t in b[u] if t is T) for u in b}
    masks = {u: (seen[u][0] - contribution[u]) % n for u in b}
    assert sum(masks.values()) % n == 0  # b explains the view as well as a does


@pytest.mark.parametrize("protocol", [Protocol.ALL, Protocol.ANY])
def test_exhaustive_small_assignments(
    protocol: Protocol, keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    for combo in itertools.product([T, F, N], repeat=3):
        parts = {u: [t] for u, t in zip(("samr", "tax", "utilities"), combo, strict=True)}
        _, answers = run_protocol(protocol, keys, mask_keys, pool, parts=parts)
        expected = t_all(combo) if protocol is Protocol.ALL else t_any(combo)
        assert combine(protocol, keys, answers)[0] is expected


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda blob, n: blob[:-1], "wrong_length"),  # a byte short
        (lambda blob, n: (n * n).to_bytes(len(blob), "big"), "out_of_range"),  # ≥ n²
        (lambda blob, n: n.to_bytes(len(blob), "big"), "not_coprime"),  # a multiple of n
    ],
)
def test_a_malformed_ciphertext_is_rejected_naming_its_provider(
    keys: PaillierKeys,
    mask_keys: dict[str, MaskKey],
    pool: RandomnessPool,
    mangle: object,
    reason: str,
) -> None:
    """Never a partial answer: one provider's malformed ciphertext fails the whole check
    (UNAVAILABLE naming that provider), before anything is combined or decrypted."""
    parts = {u: [T] for u in UNITS}
    _, answers = run_protocol(Protocol.ALL, keys, mask_keys, pool, parts=parts)
    units = sorted(answers)
    n = keys.public.n
    answers["samr"] = [mangle(answers["samr"][0], n)]  # type: ignore[operator]
    combined = Combined(keys, Protocol.ALL, [answers[u] for u in units], units)
    with pytest.raises(MalformedContribution) as info:
        combined.read()
    assert info.value.code.name == "UNAVAILABLE"
    assert "'samr'" in info.value.message and info.value.details == {
        "provider": "samr",
        "reason": reason,
    }


def test_contributions_combining_to_an_impossible_count_are_refused(
    keys: PaillierKeys, mask_keys: dict[str, MaskKey], pool: RandomnessPool
) -> None:
    parts = {"tax": [T, N], "samr": [T], "utilities": [F]}
    _, answers = run_protocol(Protocol.COUNT, keys, mask_keys, pool, parts=parts, total=4)
    assert combine(Protocol.COUNT, keys, answers, k=2, total=4)[0] is T
    # providers answering for more conditions than the check has (5 > 4): impossible
    _, inflated = run_protocol(
        Protocol.COUNT, keys, mask_keys, pool, parts={**parts, "tax": [N, N, N, N]}, total=4
    )
    with pytest.raises(MalformedContribution) as info:
        combine(Protocol.COUNT, keys, inflated, k=2, total=4)
    assert info.value.code.name == "UNAVAILABLE" and "impossible count" in info.value.message


def test_a_contribution_with_the_wrong_number_of_ciphertexts_names_its_provider() -> None:
    """A provider on an older release (two ciphertexts for all/any) is refused by name,
    UNAVAILABLE, never combined."""
    check_ciphertext_count("tax", Protocol.ALL, 1)
    with pytest.raises(MalformedContribution) as info:
        check_ciphertext_count("tax", Protocol.ALL, 2)
    assert info.value.code.name == "UNAVAILABLE"
    assert "'tax'" in info.value.message and "2 ciphertexts" in info.value.message
    assert info.value.details == {"provider": "tax", "reason": "ciphertext_count"}
