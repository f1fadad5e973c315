"""Coarse thresholds: every bound of a verification claim is snapped to a published grid.

A yes/no answer to "x ≥ t?" is one bit about x; asked with chosen t again and again it is
a binary search that pins x down.  The platform therefore rewrites each claim before it
is asked (:func:`snap`) so that every numeric, date and month condition is a union of
*grid cells* ``[k·g, (k+1)·g)`` of the field's grid step ``g`` (per unit, published by
``VerificationService.GetVerificationPolicy``).  Its answer then depends on ``⌊x/g⌋``
only, and no sequence of questions — whatever the budget — locates x closer than one
cell.

Rewriting rules (``g`` the step; *integer-like* domains are integers, dates as day
numbers and months as month numbers, whose values are whole steps of 1):

1. Each condition is first written as a half-open interval ``lower ≤ x < upper``:
   ``ge t`` → lower t; ``gt t`` → lower t + 1 (integer-like) or t (decimal, where the
   single point t has no weight); ``le t`` → upper t + 1 (integer-like) or t (decimal);
   ``lt t`` → upper t; ``between [a, b]`` → [a, b + 1) or [a, b); ``range`` as given;
   ``within v ± tol`` (or ``± relative·|v|``) → ``between [v − tol, v + tol]``.
2. Each bound is rounded to the nearest multiple of g (halves away from zero).  Only a
   lower bound → ``ge``; only an upper bound → ``lt``; both → ``range``.  An interval
   that rounds to nothing is refused: the question is finer than the grid.
3. ``eq v`` asks for the cell holding v: ``range [g·⌊v/g⌋, g·⌊v/g⌋ + g)``, left as
   ``eq v`` when g is 1 on an integer-like domain (the cell is v itself); ``ne v`` is
   ``not`` of that.
4. A ``sum`` threshold follows rule 2 with the summed fields' unit; band enums are
   already coarse and other types are exact-match questions, left unchanged.

The rewritten claim is what the providers evaluate, what the budget and the answer
cache are keyed on (its SHA-256) and what the signed result names, so the bank always
sees which question was actually answered.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from veil.catalog import UNITS, Catalog, Field, FieldType
from veil.claims import (
    NUMERIC,
    All,
    AnyOf,
    AtLeast,
    Atom,
    Claim,
    Exists,
    Not,
    Scalar,
    Sum,
)
from veil.errors import InvalidArgument

__all__ = ["DEFAULT_STEPS", "Grid", "snap"]

DATE_KEY = "date"
"""Grid key for date fields (step in days)."""
YEARMONTH_KEY = "yearmonth"
"""Grid key for month fields ``YYYY-MM`` (step in months)."""

DEFAULT_STEPS: Mapping[str, Decimal] = {
    "CNY": Decimal(10_000),  # 1 万元
    "CNY_10k": Decimal(1),
    "m2": Decimal(1),
    "m3": Decimal(10),
    "kWh": Decimal(100),
    "person": Decimal(1),
    "month": Decimal(1),
    "count": Decimal(1),
    "ratio": Decimal("0.01"),
    "score": Decimal(1),
    "": Decimal(1),  # unitless numbers (report years)
    DATE_KEY: Decimal(1),
    YEARMONTH_KEY: Decimal(1),
}


@dataclass(frozen=True)
class Grid:
    """Grid steps by unit (and :data:`DATE_KEY`, :data:`YEARMONTH_KEY`)."""

    steps: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_STEPS))

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str = "verification.grid") -> Grid:
        """``[verification.grid]`` overrides, e.g. ``CNY = 50000``, ``m2 = "0.5"``."""
        steps = dict(DEFAULT_STEPS)
        for key, value in raw.items():
            if key not in UNITS and key not in (DATE_KEY, YEARMONTH_KEY):
                raise InvalidArgument(f"{where}.{key}: not a catalog unit, date or yearmonth")
            try:
                step = Decimal(str(value))
            except ArithmeticError:
                step = Decimal(0)
            if isinstance(value, bool) or not step.is_finite() or step <= 0:
                raise InvalidArgument(f"{where}.{key}: must be a positive number")
            if key in (DATE_KEY, YEARMONTH_KEY) and step != step.to_integral_value():
                raise InvalidArgument(f"{where}.{key}: must be a whole number of days/months")
            steps[key] = step
        return cls(steps)

    def step_for(self, field: Field) -> Decimal | None:
        """The step of ``field``, or ``None`` for types that are not snapped."""
        if field.type in NUMERIC:
            return self.steps.get(field.unit, Decimal(1))
        if field.type is FieldType.DATE:
            return self.steps[DATE_KEY]
        if field.type is FieldType.MONTH:
            return self.steps[YEARMONTH_KEY]
        return None

    def to_json(self) -> dict[str, str]:
        return {k: format(v.normalize(), "f") for k, v in sorted(self.steps.items())}


# --- ordinals: every snapped domain as Decimal numbers ------------------------------------


def _to_ordinal(field: Field, value: Scalar) -> Decimal:
    if field.type is FieldType.DATE:
        assert isinstance(value, dt.date)
        return Decimal(value.toordinal())
    if field.type is FieldType.MONTH:
        assert isinstance(value, str)
        year, month = value.split("-")
        return Decimal(int(year) * 12 + int(month) - 1)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _from_ordinal(field: Field, value: Decimal) -> Scalar:
    if field.type is FieldType.DATE:
        return dt.date.fromordinal(int(value))
    if field.type is FieldType.MONTH:
        year, month = divmod(int(value), 12)
        return f"{year:04d}-{month + 1:02d}"
    if field.type is FieldType.INTEGER:
        return int(value)
    return value


def _integer_like(field: Field) -> bool:
    return field.type in (FieldType.INTEGER, FieldType.DATE, FieldType.MONTH)


def _nearest(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_HALF_UP) * step


def _cell(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_FLOOR) * step


def _interval(atom: Atom, field: Field) -> tuple[Decimal | None, Decimal | None] | None:
    """Rule 1: the half-open interval of an ordered condition (None: not an interval)."""
    one = Decimal(1) if _integer_like(field) else Decimal(0)
    op = atom.op

    def o(value: Scalar | None) -> Decimal:
        assert value is not None
        return _to_ordinal(field, value)

    if op == "ge":
        return o(atom.value), None
    if op == "gt":
        return o(atom.value) + one, None
    if op == "le":
        return None, o(atom.value) + one
    if op == "lt":
        return None, o(atom.value)
    if op == "between":
        low = o(atom.low) if atom.low is not None else None
        high = o(atom.high) + one if atom.high is not None else None
        return low, high
    if op == "range":
        return (
            o(atom.low) if atom.low is not None else None,
            o(atom.high) if atom.high is not None else None,
        )
    if op == "within":
        center = o(atom.value)
        tol = atom.tolerance if atom.tolerance is not None else abs(center) * (atom.relative or 0)
        low, high = center - tol, center + tol
        if _integer_like(field):
            low = low.to_integral_value(ROUND_FLOOR) + (0 if low == low.to_integral_value() else 1)
            high = high.to_integral_value(ROUND_FLOOR) + 1
        return low, high
    return None


def _snap_atom(atom: Atom, field: Field, step: Decimal, where: str) -> Claim:
    if atom.op in ("eq", "ne"):
        if _integer_like(field) and step == 1:
            return atom
        assert atom.value is not None
        start = _cell(_to_ordinal(field, atom.value), step)
        cell = Atom(
            field.id,
            "range",
            low=_from_ordinal(field, start),
            high=_from_ordinal(field, start + step),
            unit=atom.unit,
        )
        return cell if atom.op == "eq" else Not(cell)
    bounds = _interval(atom, field)
    if bounds is None:
        return atom
    low = None if bounds[0] is None else _nearest(bounds[0], step)
    high = None if bounds[1] is None else _nearest(bounds[1], step)
    if low is not None and high is not None and low >= high:
        raise InvalidArgument(
            f"claim {where or '(root)'}: the interval asked on {field.id!r} is narrower than "
            f"the verification grid step {format(step.normalize(), 'f')} "
            f"{_step_unit(field)}; ask a wider question"
        )
    if high is None:
        assert low is not None
        return Atom(field.id, "ge", value=_from_ordinal(field, low), unit=atom.unit)
    if low is None:
        return Atom(field.id, "lt", value=_from_ordinal(field, high), unit=atom.unit)
    return Atom(
        field.id,
        "range",
        low=_from_ordinal(field, low),
        high=_from_ordinal(field, high),
        unit=atom.unit,
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _step_unit(field: Field) -> str:
    if field.type is FieldType.DATE:
        return "days"
    if field.type is FieldType.MONTH:
        return "months"
    return field.unit


def snap(claim: Claim, grid: Grid, catalog: Catalog, where: str = "") -> Claim:
    """``claim`` with every bound on the grid (the module docstring's rules)."""
    if isinstance(claim, Atom):
        field = catalog.field(claim.field)
        step = grid.step_for(field)
        return claim if step is None else _snap_atom(claim, field, step, where)
    if isinstance(claim, All):
        return All(
            tuple(
                snap(c, grid, catalog, _at(where, f"all[{i}]")) for i, c in enumerate(claim.items)
            )
        )
    if isinstance(claim, AnyOf):
        return AnyOf(
            tuple(
                snap(c, grid, catalog, _at(where, f"any[{i}]")) for i, c in enumerate(claim.items)
            )
        )
    if isinstance(claim, AtLeast):
        return AtLeast(
            claim.k,
            tuple(
                snap(c, grid, catalog, _at(where, f"of[{i}]")) for i, c in enumerate(claim.items)
            ),
        )
    if isinstance(claim, Not):
        return Not(snap(claim.item, grid, catalog, _at(where, "not")))
    if isinstance(claim, Exists):
        if claim.where is None:
            return claim
        return Exists(claim.dataset, snap(claim.where, grid, catalog, _at(where, "where")))
    step = grid.steps.get(claim.unit, Decimal(1))
    integer = all(catalog.field(f).type is FieldType.INTEGER for f in claim.fields)
    one = Decimal(1) if integer else Decimal(0)
    if claim.op in ("ge", "lt"):
        op, bound = claim.op, claim.value
    elif claim.op == "gt":
        op, bound = "ge", claim.value + one
    else:  # le
        op, bound = "lt", claim.value + one
    return Sum(claim.fields, op, _nearest(bound, step), claim.unit)
