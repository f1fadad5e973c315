"""Providers' signed answers (veil/attestation.py) and the platform's check of a masked
contribution against them (``AnswerKeys.check_contribution``): one attestation covers
every contribution of a provider call; each is bound to its request, its enterprise and
its ciphertexts, and nothing else passes."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platform_node import verification_fanout
from platform_node.verification_fanout import AnswerKeys, Asked
from veil.attestation import (
    Contribution,
    sign_answer,
    sign_contributions,
    verify_answer,
    verify_contributions,
)
from veil.composite import ciphertexts_digest
from veil.errors import BadSignature, InvalidToken, PermissionDenied, WrongTokenType
from veil.tokens import KeySet, SigningKey, _jws

KEY = SigningKey.generate()
KEYS = KeySet.of(KEY)
USCC = "91110000100000000A"
CIPHERTEXTS = [b"\x01" * 512, b"\x02" * 512]


def contribution(
    rid: str, uscc: str = USCC, ciphertexts: list[bytes] = CIPHERTEXTS
) -> Contribution:
    return Contribution(rid, uscc, "c" * 64, ciphertexts_digest(ciphertexts))


def asked(rid: str, uscc: str = USCC) -> Asked:
    return Asked(rid, uscc, "demo-bank", "g-1", "grant.jws", "loan_origination", "L-1", "c" * 64)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.text("abcdef0123456789", min_size=16, max_size=64), min_size=1, max_size=8, unique=True
    )
)
def test_every_answer_of_a_call_round_trips(rids: list[str]) -> None:
    token = sign_contributions(KEY, unit="tax", answers=[contribution(r) for r in rids])
    answers = verify_contributions(token, KEYS, unit="tax")
    assert list(answers) == rids
    for rid in rids:
        assert answers[rid] == {
            "jti": rid,
            "sub": USCC,
            "claims_sha256": "c" * 64,
            "ciphertexts_sha256": ciphertexts_digest(CIPHERTEXTS),
        }


def test_another_issuer_key_or_kind_is_refused() -> None:
    token = sign_contributions(KEY, unit="tax", answers=[contribution("r" * 16)])
    with pytest.raises(InvalidToken, match="not 'utilities'"):
        verify_contributions(token, KEYS, unit="utilities")
    other = SigningKey.generate(kid=KEY.kid)  # same kid, another key
    with pytest.raises(BadSignature):
        verify_contributions(token, KeySet.of(other), unit="tax")
    single = sign_answer(
        KEY, unit="tax", uscc=USCC, request_id="r" * 16, claims_sha256="c" * 64, result="true"
    )
    with pytest.raises(WrongTokenType):
        verify_contributions(single, KEYS, unit="tax")
    with pytest.raises(WrongTokenType):
        verify_answer(token, KEYS, unit="tax")
    with pytest.raises(ValueError):
        sign_contributions(KEY, unit="tax", answers=[])
    with pytest.raises(ValueError):  # a single answer is never "masked" any more
        sign_answer(
            KEY, unit="tax", uscc=USCC, request_id="r" * 16, claims_sha256="", result="masked"
        )


def forged(answers: Any) -> str:
    """A validly signed contributions token whose ``answers`` the signer chose freely."""
    claims = {"iss": "tax", "result": "masked", "answers": answers, "iat": 1}
    return _jws.sign(KEY, "veil-provider-contributions+jwt", claims)


@pytest.mark.parametrize(
    "answers",
    [
        [],
        "r",
        [{"jti": "r", "sub": USCC, "claims_sha256": "c"}],  # a member missing
        [{"jti": "r", "sub": USCC, "claims_sha256": "c", "ciphertexts_sha256": 1}],
        [{"jti": "r", "sub": USCC, "claims_sha256": "c", "ciphertexts_sha256": "d", "x": "y"}],
        [{"jti": "r", "sub": USCC, "claims_sha256": "c", "ciphertexts_sha256": "d"}] * 2,
    ],
)
def test_a_malformed_or_repeated_answer_is_refused(answers: Any) -> None:
    with pytest.raises(InvalidToken):
        verify_contributions(forged(answers), KEYS, unit="tax")


def answer_keys() -> AnswerKeys:
    keys = AnswerKeys(registry=None)  # type: ignore[arg-type]  # keys already fetched
    keys._keys["tax"] = KEYS
    return keys


def test_the_platform_checks_request_enterprise_and_ciphertexts() -> None:
    keys = answer_keys()
    token = sign_contributions(
        KEY, unit="tax", answers=[contribution("a" * 16), contribution("b" * 16, "9" * 18)]
    )

    def check(rid: str, who: Asked, ciphertexts: list[bytes] = CIPHERTEXTS) -> None:
        asyncio.run(keys.check_contribution("tax", token, who, rid, ciphertexts))

    check("a" * 16, asked("a" * 16))
    check("b" * 16, asked("b" * 16, "9" * 18))
    with pytest.raises(PermissionDenied, match="no answer to this request"):
        check("c" * 16, asked("c" * 16))
    with pytest.raises(PermissionDenied, match="another enterprise"):
        check("b" * 16, asked("b" * 16))
    with pytest.raises(PermissionDenied, match="does not cover"):
        check("a" * 16, asked("a" * 16), [CIPHERTEXTS[1], CIPHERTEXTS[0]])


def test_a_call_is_checked_once_and_the_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = answer_keys()
    verified = []

    def counting(token: str, ks: KeySet, *, unit: str) -> dict[str, dict[str, str]]:
        verified.append(token)
        return verify_contributions(token, ks, unit=unit)

    monkeypatch.setattr(verification_fanout, "verify_contributions", counting)
    rids = [f"{i:016d}" for i in range(5)]
    token = sign_contributions(KEY, unit="tax", answers=[contribution(r) for r in rids])
    for rid in rids:
        asyncio.run(keys.check_contribution("tax", token, asked(rid), rid, CIPHERTEXTS))
    assert verified == [token]
    monkeypatch.setattr(verification_fanout, "CONTRIBUTIONS_KEPT", 3)
    for i in range(6):
        other = sign_contributions(KEY, unit="tax", answers=[contribution(f"x{i:015d}")])
        asyncio.run(
            keys.check_contribution("tax", other, asked(f"x{i:015d}"), f"x{i:015d}", CIPHERTEXTS)
        )
    assert len(keys._contributions) == 3


def test_a_tampered_answer_list_breaks_the_signature() -> None:
    token = sign_contributions(KEY, unit="tax", answers=[contribution("a" * 16)])
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["answers"][0]["sub"] = "9" * 18
    edited = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignature):
        verify_contributions(f"{header}.{edited}.{signature}", KEYS, unit="tax")
