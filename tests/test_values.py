"""Wire values round-trip exactly (decimals as strings, dates as ISO text)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from veil.values import from_record, from_value, to_record, to_value

values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**12), max_value=10**12
    ),
    st.dates(),
    st.text(max_size=40),
)


@given(values)
def test_value_round_trip(value: object) -> None:
    encoded = to_value(value)  # type: ignore[arg-type]
    assert encoded is not None
    assert from_value(encoded) == value


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), values, max_size=8))
def test_record_round_trip(row: dict[str, object]) -> None:
    record = to_record("ds", row)  # type: ignore[arg-type]
    assert from_record(record) == row


def test_missing_values_are_absent() -> None:
    record = to_record("ds", {"a": None, "b": 1})
    assert set(record.fields) == {"b"}


def test_decimal_keeps_its_digits() -> None:
    assert to_value(Decimal("1234.50")).decimal == "1234.50"  # type: ignore[union-attr]
    assert from_value(to_value(dt.date(2022, 6, 30))) == dt.date(2022, 6, 30)  # type: ignore[arg-type]
