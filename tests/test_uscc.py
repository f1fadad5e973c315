"""Unified social credit codes: GB 32100-2015 check character and GB 11714 check digit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import InvalidUSCC
from veil.uscc import (
    ALPHABET,
    DEPARTMENTS,
    PROVINCE_PREFIXES,
    is_valid_uscc,
    make_uscc,
    normalize_uscc,
    org_code_check_digit,
    uscc_check_char,
    validate_uscc,
)

# Codes published by real organisations (business licences and public registers), checked
# independently of this implementation: both check characters must agree with the issuer.
PUBLISHED = [
    "91350100M000100Y43",
    "91110105771583283D",
    "91110000802100433B",
    "91110108740084270C",
    "112302070019030687",  # 机构编制 / 机关
    "91110108735106340Y",
    "911101077776591113",
    "51610700305332460K",  # 民政 / 社会团体
    "91440300359143307G",
    "11610923MB2900168E",
    "1134082855783407XL",  # organisation code check digit X
    "91341000MA2N0ABGXX",
    "91110228397176695A",
    "51100000500019541K",
    "92510100MA61WJ3204",  # 个体工商户
    "52610500MJU60350X1",  # 民办非企业单位
    "1142092201131905X1",
    "51140200MJ1693047P",
    "913101135696449862",
    "91460600MA5RC30P9Y",
    "121526004609138637",  # 事业单位
    "52440111MJK9980480",
    "91440300708461136T",
    "91110108551385082Q",
    "914403001922038216",
    "9144030071526726XG",
]


@pytest.mark.parametrize("code", PUBLISHED)
def test_published_codes_are_valid(code: str) -> None:
    validate_uscc(code)
    assert is_valid_uscc(code)


def test_check_digit_examples() -> None:
    assert org_code_check_digit("M000100Y") == "4"
    assert org_code_check_digit("D2143569") == "X"  # GB 11714 worked example
    assert uscc_check_char("91350100M000100Y4") == "3"


def _rebuild(first16: str) -> str:
    """Complete 16 characters with correct check digit and check character."""
    first17 = first16 + org_code_check_digit(first16[8:16])
    return first17 + uscc_check_char(first17)


@pytest.mark.parametrize(
    ("code", "check"),
    [
        ("91350100M000100Y4", "length must be 18, got 17"),
        ("91350100M000100Y433", "length must be 18, got 19"),
        ("", "length must be 18, got 0"),
        ("9135010OM000100Y43", "character at position 8"),
        ("91350100M000100I43", "character at position 16"),
        ("91350100m000100Y43", "character at position 9"),
        (_rebuild("B1350100M000100Y"), "registration department 'B'"),
        (_rebuild("94350100M000100Y"), "organisation type '4'"),
        (_rebuild("Y2350100M000100Y"), "organisation type '2'"),
        (_rebuild("N4350100M000100Y"), "organisation type '4'"),
        (_rebuild("91000000M000100Y"), "region code '000000'"),
        (_rebuild("91990000M000100Y"), "region code '990000'"),
        ("91350100M000100Y53", "organisation code check digit (position 17)"),
        ("91350100M000100Y4A", "check character (position 18)"),
    ],
)
def test_invalid_codes_name_the_failing_check(code: str, check: str) -> None:
    with pytest.raises(InvalidUSCC) as exc:
        validate_uscc(code)
    assert check in exc.value.message
    assert not is_valid_uscc(code)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidUSCC, match="must be a string"):
        validate_uscc(123456789012345678)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dept", "org_type"),
    [("N", "1"), ("N", "2"), ("N", "3"), ("N", "9"), ("Y", "1"), ("A", "1"), ("9", "3")],
)
def test_letter_prefixed_departments_are_valid(dept: str, org_type: str) -> None:
    code = make_uscc(dept, org_type, "230402", "MA1B2C3D")
    assert code[:2] == dept + org_type
    validate_uscc(code)


def test_every_department_lists_its_types() -> None:
    assert set(DEPARTMENTS) >= set("123456789ANY")
    assert DEPARTMENTS["9"].org_types == {"1": "企业", "2": "个体工商户", "3": "农民专业合作社"}
    assert DEPARTMENTS["Y"].org_types == {"1": "其他"}


def test_make_uscc_refuses_bad_parts() -> None:
    with pytest.raises(InvalidUSCC, match="8 USCC characters"):
        make_uscc("9", "1", "350100", "M000I00Y")
    with pytest.raises(InvalidUSCC, match="organisation type"):
        make_uscc("9", "9", "350100", "M000100Y")
    with pytest.raises(InvalidUSCC, match="region code"):
        make_uscc("9", "1", "35010", "M000100Y")


def test_normalize() -> None:
    assert normalize_uscc(" 91350100m000100y43\n") == "91350100M000100Y43"


_DEPT_TYPES = [(d, t) for d, dep in DEPARTMENTS.items() for t in dep.org_types]
_PREFIXES = sorted(PROVINCE_PREFIXES)


@st.composite
def usccs(draw: st.DrawFn) -> str:
    dept, org_type = draw(st.sampled_from(_DEPT_TYPES))
    region = draw(st.sampled_from(_PREFIXES)) + draw(st.from_regex(r"\A[0-9]{4}\Z"))
    body = draw(st.text(alphabet=ALPHABET, min_size=8, max_size=8))
    return make_uscc(dept, org_type, region, body)


@settings(max_examples=300, deadline=None)
@given(usccs())
def test_round_trip(code: str) -> None:
    validate_uscc(code)


@settings(max_examples=300, deadline=None)
@given(usccs(), st.integers(0, 17), st.sampled_from(ALPHABET))
def test_any_single_substitution_is_detected(code: str, pos: int, ch: str) -> None:
    if code[pos] == ch:
        ch = ALPHABET[(ALPHABET.index(ch) + 1) % len(ALPHABET)]
    changed = code[:pos] + ch + code[pos + 1 :]
    with pytest.raises(InvalidUSCC):
        validate_uscc(changed)


def test_check_character_alone_catches_every_substitution() -> None:
    """Exhaustively: for a fixed code, every substitution changes the MOD 31 sum."""
    code = "91350100M000100Y43"
    for pos in range(17):
        for ch in ALPHABET:
            if ch != code[pos]:
                changed = code[:pos] + ch + code[pos + 1 : 17]
                assert uscc_check_char(changed) != code[17]
