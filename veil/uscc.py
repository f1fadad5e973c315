"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

A code has 18 characters from the 31-character alphabet ``0-9 A-H J-N P-R T-U W-Y``
(no I, O, Z, S, V)::

    position  1      registration department (登记管理部门代码), e.g. 9 = 工商 (SAMR)
    position  2      organisation type (机构类别代码), valid values depend on position 1
    positions 3-8    region division code of the registering authority (GB/T 2260)
    positions 9-17   organisation code (组织机构代码, GB 11714): 8 body chars + check digit
    position  18     check character (GB 32100, ISO 7064 style MOD 31)

Two independent checks protect a code:

* **GB 11714 check digit** (position 17).  Body characters take the GB 11714 values
  ``0-9 -> 0-9`` and ``A-Z -> 10-35`` (the full Latin alphabet, so ``J`` is 19 here);
  with weights ``3, 7, 9, 10, 5, 8, 4, 2`` the check value is ``C9 = 11 - (Σ mod 11)``,
  written ``X`` for 10 and ``0`` for 11.
* **GB 32100 check character** (position 18).  The first 17 characters take their index
  in the 31-character alphabet; the weight of position *i* (0-based) is ``3**i mod 31``
  (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28); the check value is
  ``C18 = 31 - (Σ mod 31)`` with 31 written as ``0``.  Since 31 is prime and every weight
  is non-zero modulo 31, any single-character substitution changes Σ mod 31 and is
  always detected.

The region check is structural: six digits whose first two name a provincial-level
division (or ``10``, used by national-level registration authorities such as SAMR
itself, e.g. ``100000``).  Membership of the full GB/T 2260 table is not required: the
table changes every year and a code stays valid for life after its region is renamed.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.errors import InvalidUSCC

__all__ = [
    "ALPHABET",
    "DEPARTMENTS",
    "ORG_CODE_WEIGHTS",
    "PROVINCE_PREFIXES",
    "USCC_WEIGHTS",
    "Department",
    "is_valid_uscc",
    "make_uscc",
    "normalize_uscc",
    "org_code_check_digit",
    "uscc_check_char",
    "validate_uscc",
]

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters a USCC may contain, in GB 32100 code-value order."""

USCC_VALUES: dict[str, int] = {c: i for i, c in enumerate(ALPHABET)}
USCC_WEIGHTS: tuple[int, ...] = tuple(pow(3, i, 31) for i in range(17))

ORG_CODE_VALUES: dict[str, int] = {
    **{str(d): d for d in range(10)},
    **{chr(ord("A") + i): 10 + i for i in range(26)},
}
ORG_CODE_WEIGHTS: tuple[int, ...] = (3, 7, 9, 10, 5, 8, 4, 2)

PROVINCE_PREFIXES: frozenset[str] = frozenset(
    [
        "10",
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    ]
)
"""First two digits of a GB/T 2260 code: 31 provinces, 71/81/82 (Taiwan, Hong Kong,
Macao) and 10 for national-level registration authorities."""


@dataclass(frozen=True)
class Department:
    """A registration department (position 1) and the organisation types it issues."""

    code: str
    name_zh: str
    name_en: str
    org_types: dict[str, str]


def _dept(code: str, zh: str, en: str, types: str) -> Department:
    pairs = (item.split(":", 1) for item in types.split(","))
    return Department(code, zh, en, {k: v for k, v in pairs})


DEPARTMENTS: dict[str, Department] = {
    d.code: d
    for d in (
        _dept("1", "机构编制", "institutional staffing", "1:机关,2:事业单位,3:群众团体,9:其他"),
        _dept("2", "外交", "foreign affairs", "1:外国常驻新闻机构,9:其他"),
        _dept(
            "3",
            "司法行政",
            "justice administration",
            "1:律师执业机构,2:公证处,3:基层法律服务所,4:司法鉴定机构,5:仲裁委员会,9:其他",
        ),
        _dept("4", "文化", "culture", "1:外国在华文化中心,9:其他"),
        _dept("5", "民政", "civil affairs", "1:社会团体,2:民办非企业单位,3:基金会,9:其他"),
        _dept(
            "6",
            "旅游",
            "tourism",
            "1:外国旅游部门常驻代表机构,2:港澳台地区旅游部门常驻内地（大陆）代表机构,9:其他",
        ),
        _dept("7", "宗教", "religious affairs", "1:宗教活动场所,2:宗教院校,9:其他"),
        _dept("8", "工会", "trade unions", "1:基层工会,9:其他"),
        _dept("9", "工商", "market regulation", "1:企业,2:个体工商户,3:农民专业合作社"),
        _dept("A", "中央军委改革和编制办公室", "military staffing", "1:军队事业单位,9:其他"),
        _dept(
            "N",
            "农业",
            "agriculture",
            "1:组级集体经济组织,2:村级集体经济组织,3:乡镇级集体经济组织,9:其他",
        ),
        _dept("Y", "其他", "other", "1:其他"),
    )
}


def org_code_check_digit(body8: str) -> str:
    """GB 11714 check digit of an 8-character organisation-code body."""
    if len(body8) != 8:
        raise InvalidUSCC(f"organisation code body must have 8 characters, got {len(body8)}")
    total = 0
    for ch, weight in zip(body8, ORG_CODE_WEIGHTS, strict=True):
        value = ORG_CODE_VALUES.get(ch)
        if value is None:
            raise InvalidUSCC(f"organisation code body has invalid character {ch!r}")
        total += value * weight
    c9 = 11 - total % 11
    return "X" if c9 == 10 else "0" if c9 == 11 else str(c9)


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character of the first 17 characters of a USCC."""
    if len(first17) != 17:
        raise InvalidUSCC(f"need the first 17 characters, got {len(first17)}")
    total = 0
    for ch, weight in zip(first17, USCC_WEIGHTS, strict=True):
        value = USCC_VALUES.get(ch)
        if value is None:
            raise InvalidUSCC(f"invalid character {ch!r}")
        total += value * weight
    return ALPHABET[(31 - total % 31) % 31]


def normalize_uscc(code: str) -> str:
    """Strip surrounding whitespace and upper-case (what a form field would do)."""
    return code.strip().upper()


def validate_uscc(code: str) -> None:
    """Raise :class:`~veil.errors.InvalidUSCC` naming the first check ``code`` fails.

    The checks run in order: type, length, characters, registration department,
    organisation type, region code, organisation code check digit, USCC check character.
    """
    if not isinstance(code, str):
        raise InvalidUSCC(f"USCC must be a string, got {type(code).__name__}")
    if len(code) != 18:
        raise InvalidUSCC(f"USCC length must be 18, got {len(code)}")
    for i, ch in enumerate(code, start=1):
        if ch not in USCC_VALUES:
            raise InvalidUSCC(
                f"USCC character at position {i} is {ch!r}, not one of 0-9 A-H J-N P-R T-U W-Y"
            )
    dept = DEPARTMENTS.get(code[0])
    if dept is None:
        raise InvalidUSCC(f"USCC registration department {code[0]!r} (position 1) is not defined")
    if code[1] not in dept.org_types:
        raise InvalidUSCC(
            f"USCC organisation type {code[1]!r} (position 2) is not valid for registration "
            f"department {dept.code} ({dept.name_zh}); expected one of "
            f"{', '.join(sorted(dept.org_types))}"
        )
    region = code[2:8]
    if not region.isdigit() or region[:2] not in PROVINCE_PREFIXES:
        raise InvalidUSCC(
            f"USCC region code {region!r} (positions 3-8) is not a GB/T 2260 division code"
        )
    expected9 = org_code_check_digit(code[8:16])
    if code[16] != expected9:
        raise InvalidUSCC(
            f"USCC organisation code check digit (position 17) is {code[16]!r}, "
            f"GB 11714 requires {expected9!r}"
        )
    expected18 = uscc_check_char(code[:17])
    if code[17] != expected18:
        raise InvalidUSCC(
            f"USCC check character (position 18) is {code[17]!r}, GB 32100 requires {expected18!r}"
        )


def is_valid_uscc(code: str) -> bool:
    """True when :func:`validate_uscc` accepts ``code``."""
    try:
        validate_uscc(code)
    except InvalidUSCC:
        return False
    return True


def make_uscc(dept: str, org_type: str, region: str, org_body8: str) -> str:
    """Assemble a valid USCC from its parts, computing both check characters.

    ``org_body8`` is the 8-character organisation-code body from the USCC alphabet.
    Raises :class:`~veil.errors.InvalidUSCC` when a part is not valid.
    """
    if len(dept) != 1 or len(org_type) != 1:
        raise InvalidUSCC("registration department and organisation type are one character each")
    if len(region) != 6 or not region.isdigit():
        raise InvalidUSCC(f"USCC region code {region!r} must be six digits (GB/T 2260)")
    if len(org_body8) != 8 or any(ch not in USCC_VALUES for ch in org_body8):
        raise InvalidUSCC(f"organisation code body {org_body8!r} must be 8 USCC characters")
    first17 = f"{dept}{org_type}{region}{org_body8}{org_code_check_digit(org_body8)}"
    code = first17 + uscc_check_char(first17)
    validate_uscc(code)
    return code
