"""Typed values on the wire: Python values <-> ``veil.v1.Value``.

Decimals travel as canonical strings so that a provider's stored amount reaches the
platform without binary floating point rounding; dates as ISO 8601 text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from veil.errors import InvalidArgument
from veil.v1 import common_pb2

PyValue = str | int | Decimal | bool | dt.date | float | None


def to_value(value: PyValue) -> common_pb2.Value | None:
    """Encode one Python value; ``None`` (missing) has no encoding and returns None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return common_pb2.Value(boolean=value)
    if isinstance(value, int):
        return common_pb2.Value(integer=value)
    if isinstance(value, Decimal):
        return common_pb2.Value(decimal=format(value, "f"))
    if isinstance(value, float):
        return common_pb2.Value(decimal=format(Decimal(repr(value)), "f"))
    if isinstance(value, dt.datetime):
        return common_pb2.Value(date=value.date().isoformat())
    if isinstance(value, dt.date):
        return common_pb2.Value(date=value.isoformat())
    if isinstance(value, str):
        return common_pb2.Value(text=value)
    raise InvalidArgument(f"cannot encode a value of type {type(value).__name__}")


def from_value(value: common_pb2.Value) -> PyValue:
    """Decode one wire value into its Python value."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "decimal":
        return Decimal(value.decimal)
    if kind == "date":
        text = value.date
        return dt.date.fromisoformat(text) if len(text) == 10 else text
    result: PyValue = getattr(value, kind)
    return result


def to_record(dataset_id: str, row: Mapping[str, PyValue]) -> common_pb2.Record:
    record = common_pb2.Record(dataset_id=dataset_id)
    for key, raw in row.items():
        encoded = to_value(raw)
        if encoded is not None:
            record.fields[key].CopyFrom(encoded)
    return record


def from_record(record: common_pb2.Record) -> dict[str, PyValue]:
    return {key: from_value(v) for key, v in record.fields.items()}


def display(value: Any) -> str:
    """Human-readable text of a decoded value, for CLI tables."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
