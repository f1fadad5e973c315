"""The verification claim language (数据核验): typed yes/no questions over catalog fields.

A bank verifies what an enterprise declared ("VAT paid last year ≥ 1,000,000 CNY", "no
tax arrears", "owns the property with certificate 津(2021)…第7446068号, about 1,728 m²")
without seeing the records.  A claim is a small tree, written as JSON (the one wire and
hashing form: :func:`canonical_json` is what ``claims_sha256`` covers)::

    {"field": "tax_in_arrears", "op": "eq", "value": false}
    {"field": "tax_vat_paid_last_year", "op": "ge", "value": "1000000", "unit": "CNY"}
    {"field": "hf_consecutive_normal_months", "op": "between", "low": 6, "high": 24,
     "unit": "month"}
    {"field": "re_area", "op": "within", "value": "1728", "relative": "0.01", "unit": "m2"}
    {"field": "tax_grade", "op": "in", "values": ["A", "B"]}
    {"exists": "re_properties", "where": {"all": [<atoms on re_properties fields>]}}
    {"all": [...]}   {"any": [...]}   {"not": {...}}   {"at_least": 3, "of": [...]}
    {"sum": ["tax_vat_paid_last_year", "hf_total_contribution_last_year"],
     "op": "ge", "value": "1000000", "unit": "CNY"}

Operators: ``eq``/``ne`` (every type), ``ge``/``gt``/``le``/``lt``/``between`` (inclusive)
and ``range`` (``low ≤ x < high``, either bound optional) on integers, decimals, dates,
months and banded enums (ordered by band), ``within`` (``|x − value| ≤ tolerance``, or
``≤ relative·|value|``) on integers and decimals, ``in`` on every non-numeric type.

Validation against the catalog happens before anything is sent (:func:`parse_claim`): the
field exists, allows verification (``verifiable``), the operator fits its type, values
have the field's type, a numeric value states the field's unit (``CNY`` and ``CNY_10k``
differ by 10⁴: a unit is never guessed), an atom on a dataset holding many rows per
enterprise sits inside ``exists`` over that dataset, and the tree is not empty and within
:data:`MAX_DEPTH` / :data:`MAX_NODES`.  Every failure is :class:`InvalidArgument` naming
the problem and where in the claim it is (``all[1].field``).

Evaluation is three-valued (Kleene): ``true``, ``false`` or ``no_record`` — the provider
holds no row (or no value) for the enterprise.  No record is never reported as false:
``all`` is false if any part is false, else no_record if any part is, else true; ``any``
dually; ``not`` swaps true and false; ``at_least k`` is true with ≥ k parts true, false
when fewer than k parts can still be true; ``exists`` is no_record when the enterprise has
no row in the dataset at all, true when some row satisfies ``where``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeAlias

from veil.catalog import Cardinality, Catalog, Field, FieldType
from veil.errors import InvalidArgument

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_BYTES",
    "MAX_NODES",
    "All",
    "AnyOf",
    "AtLeast",
    "Atom",
    "Claim",
    "ClaimCache",
    "Exists",
    "Not",
    "Sum",
    "Truth",
    "canonical_json",
    "claim_fields",
    "claim_from_json",
    "claim_providers",
    "claim_sha256",
    "claim_to_json",
    "evaluate",
    "parse_claim",
    "t_all",
    "t_any",
    "t_at_least",
    "t_not",
]

MAX_DEPTH = 6
"""Deepest nesting of combinators (an atom alone has depth 1)."""
MAX_NODES = 64
"""Most nodes (atoms and combinators) in one claim."""
MAX_VALUES = 32
"""Most values in one ``in`` list."""
MAX_SUM_TERMS = 16
MAX_TEXT = 256
MAX_JSON_BYTES = 16 * 1024

Scalar: TypeAlias = bool | int | Decimal | str | dt.date
"""A claim value: bool, int (integer), Decimal (decimal), str (string, code, enum, month
as ``YYYY-MM``), ``datetime.date`` (date)."""

COMPARISONS = frozenset({"eq", "ne", "ge", "gt", "le", "lt"})
ORDER_OPS = frozenset({"ge", "gt", "le", "lt", "between", "range"})
NUMERIC = frozenset({FieldType.INTEGER, FieldType.DECIMAL})
ORDERED = NUMERIC | {FieldType.DATE, FieldType.MONTH}
_MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_ATOM_KEYS = frozenset(
    {"field", "op", "value", "values", "low", "high", "tolerance", "relative", "unit"}
)


class Truth(StrEnum):
    """A verification answer."""

    TRUE = "true"
    FALSE = "false"
    NO_RECORD = "no_record"


def t_not(value: Truth) -> Truth:
    if value is Truth.NO_RECORD:
        return value
    return Truth.FALSE if value is Truth.TRUE else Truth.TRUE


def t_all(values: Iterable[Truth]) -> Truth:
    seen = set(values)
    if Truth.FALSE in seen:
        return Truth.FALSE
    return Truth.NO_RECORD if Truth.NO_RECORD in seen else Truth.TRUE


def t_any(values: Iterable[Truth]) -> Truth:
    seen = set(values)
    if Truth.TRUE in seen:
        return Truth.TRUE
    return Truth.NO_RECORD if Truth.NO_RECORD in seen else Truth.FALSE


def t_at_least(k: int, true: int, no_record: int) -> Truth:
    """``at_least k`` from the number of parts that are true and that have no record."""
    if true >= k:
        return Truth.TRUE
    return Truth.NO_RECORD if true + no_record >= k else Truth.FALSE


# --- the tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """One condition on one field.  Which of ``value``/``values``/``low``/``high``/
    ``tolerance``/``relative`` are set depends on ``op`` (see the module docstring)."""

    field: str
    op: str
    value: Scalar | None = None
    values: tuple[Scalar, ...] = ()
    low: Scalar | None = None
    high: Scalar | None = None
    tolerance: Decimal | None = None
    relative: Decimal | None = None
    unit: str = ""


@dataclass(frozen=True)
class Exists:
    """Some row of ``dataset`` (of this enterprise) satisfies ``where`` (``None``: any row)."""

    dataset: str
    where: Claim | None = None


@dataclass(frozen=True)
class All:
    items: tuple[Claim, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Claim, ...]


@dataclass(frozen=True)
class Not:
    item: Claim


@dataclass(frozen=True)
class AtLeast:
    k: int
    items: tuple[Claim, ...]


@dataclass(frozen=True)
class Sum:
    """``Σ fields  op  value``: numeric fields of one-row-per-enterprise datasets, one unit."""

    fields: tuple[str, ...]
    op: str
    value: Decimal
    unit: str


Claim: TypeAlias = Atom | Exists | All | AnyOf | Not | AtLeast | Sum


# --- parsing and validation ---------------------------------------------------------------


class _Parser:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.nodes = 0

    def fail(self, where: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"claim {where or '(root)'}: {problem}")

    def node(self, obj: Any, where: str, depth: int, dataset: str | None) -> Claim:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(where, f"a claim may hold at most {MAX_NODES} conditions")
        if depth > MAX_DEPTH:
            raise self.fail(where, f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(obj, dict) or not obj:
            raise self.fail(where, "must be a non-empty JSON object")
        if "field" in obj or ("op" in obj and "sum" not in obj):
            return self.atom(obj, where, dataset)
        kinds = [k for k in ("all", "any", "not", "at_least", "exists", "sum") if k in obj]
        if len(kinds) != 1:
            raise self.fail(
                where, "must be an atom (field, op) or one of all, any, not, at_least, exists, sum"
            )
        kind = kinds[0]
        if kind in ("all", "any"):
            self.keys(obj, {kind}, where)
            items = self.items(obj[kind], f"{where}.{kind}" if where else kind, depth, dataset)
            return All(items) if kind == "all" else AnyOf(items)
        if kind == "not":
            self.keys(obj, {"not"}, where)
            return Not(self.node(obj["not"], _join(where, "not"), depth + 1, dataset))
        if kind == "at_least":
            self.keys(obj, {"at_least", "of"}, where)
            items = self.items(obj.get("of"), _join(where, "of"), depth, dataset)
            k = obj["at_least"]
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(items):
                raise self.fail(
                    _join(where, "at_least"), f"must be an integer from 1 to {len(items)}"
                )
            return AtLeast(k, items)
        if kind == "exists":
            if dataset is not None:
                raise self.fail(where, "exists cannot be nested inside exists")
            self.keys(obj, {"exists", "where"}, where)
            ds_id = obj["exists"]
            if not isinstance(ds_id, str):
                raise self.fail(_join(where, "exists"), "must be a catalog dataset id")
            try:
                ds = self.catalog.dataset(ds_id)
            except InvalidArgument as exc:
                raise self.fail(_join(where, "exists"), exc.message) from None
            if not any(f.verifiable for f in ds.fields):
                raise self.fail(_join(where, "exists"), f"dataset {ds_id!r} allows no verification")
            if "where" not in obj or obj["where"] is None:
                return Exists(ds_id)
            raw = obj["where"]
            if isinstance(raw, list):
                raw = {"all": raw}
            return Exists(ds_id, self.node(raw, _join(where, "where"), depth + 1, ds_id))
        if dataset is not None:
            raise self.fail(where, "sum cannot be used inside exists")
        return self.sum(obj, where)

    def keys(self, obj: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r}")

    def items(self, raw: Any, where: str, depth: int, dataset: str | None) -> tuple[Claim, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail(where, "must be a non-empty list of claims")
        return tuple(
            self.node(item, f"{where}[{i}]", depth + 1, dataset) for i, item in enumerate(raw)
        )

    def field(self, raw: Any, where: str, dataset: str | None) -> Field:
        if not isinstance(raw, str):
            raise self.fail(where, "field must be a catalog field id")
        try:
            field = self.catalog.field(raw)
        except InvalidArgument as exc:
            raise self.fail(where, exc.message) from None
        if not field.verifiable:
            raise self.fail(
                where,
                f"field {raw!r} does not allow verification (verifiable = false in the catalog)",
            )
        if dataset is not None and field.dataset_id != dataset:
            raise self.fail(
                where, f"field {raw!r} is not in dataset {dataset!r} that exists ranges over"
            )
        if (
            dataset is None
            and self.catalog.dataset(field.dataset_id).cardinality is Cardinality.MANY
        ):
            raise self.fail(
                where,
                f"field {raw!r} is in dataset {field.dataset_id!r}, which holds many rows per "
                f'enterprise: say which row, with {{"exists": "{field.dataset_id}", "where": …}}',
            )
        return field

    def unit(self, obj: Mapping[str, Any], field: Field, where: str) -> str:
        given = obj.get("unit", "")
        if not isinstance(given, str):
            raise self.fail(_join(where, "unit"), "must be a string")
        numeric = field.type in NUMERIC
        if numeric and field.unit and given != field.unit:
            raise self.fail(
                _join(where, "unit"),
                f"field {field.id!r} is in {field.unit}; the claim must say unit "
                f"{field.unit!r}" + (f", not {given!r}" if given else ""),
            )
        if given and given != field.unit:
            raise self.fail(
                _join(where, "unit"), f"field {field.id!r} has unit {field.unit or 'none'!r}"
            )
        return field.unit if numeric else ""

    def atom(self, obj: Mapping[str, Any], where: str, dataset: str | None) -> Atom:
        self.keys(obj, _ATOM_KEYS, where)
        field = self.field(obj.get("field"), _join(where, "field"), dataset)
        op = obj.get("op")
        ftype = field.type
        banded = ftype is FieldType.ENUM and field.bands is not None
        allowed = set(COMPARISONS) | {"in"}
        if ftype in ORDERED or banded:
            allowed |= {"between", "range"}
        if ftype in NUMERIC:
            allowed = (allowed - {"in"}) | {"within"}
        if ftype not in ORDERED and not banded:
            allowed -= {"ge", "gt", "le", "lt"}
        if op not in allowed:
            raise self.fail(
                _join(where, "op"),
                f"{str(op)[:20]!r} does not apply to {ftype} field {field.id!r} "
                f"(allowed: {', '.join(sorted(allowed))})",
            )
        unit = self.unit(obj, field, where)
        needed = {
            "in": {"values"},
            "between": {"low", "high"},
            "range": set(),
            "within": {"value"},
        }.get(op, {"value"})
        optional = {"range": {"low", "high"}, "within": {"tolerance", "relative"}}.get(op, set())
        present = {k for k in _ATOM_KEYS - {"field", "op", "unit"} if k in obj}
        missing = sorted(needed - present)
        if missing:
            raise self.fail(where, f"op {op!r} needs {', '.join(missing)}")
        extra = sorted(present - needed - optional)
        if extra:
            raise self.fail(where, f"op {op!r} does not take {', '.join(extra)}")
        value = lambda key: self.value(obj[key], field, _join(where, key))  # noqa: E731
        if op == "in":
            raw = obj["values"]
            if not isinstance(raw, list) or not raw or len(raw) > MAX_VALUES:
                raise self.fail(
                    _join(where, "values"), f"must be a list of 1 to {MAX_VALUES} values"
                )
            values = tuple(
                self.value(v, field, f"{_join(where, 'values')}[{i}]") for i, v in enumerate(raw)
            )
            if len(set(values)) != len(values):
                raise self.fail(_join(where, "values"), "lists a value twice")
            return Atom(field.id, op, values=values, unit=unit)
        if op in ("between", "range"):
            low = value("low") if obj.get("low") is not None else None
            high = value("high") if obj.get("high") is not None else None
            if low is None and high is None:
                raise self.fail(where, f"op {op!r} needs low or high")
            if low is not None and high is not None and _order(field, low) > _order(field, high):
                raise self.fail(where, "low is above high")
            return Atom(field.id, op, low=low, high=high, unit=unit)
        if op == "within":
            tol, rel = obj.get("tolerance"), obj.get("relative")
            if (tol is None) == (rel is None):
                raise self.fail(where, "within needs exactly one of tolerance, relative")
            amount = _decimal(tol if tol is not None else rel, _join(where, "tolerance"))
            if amount < 0 or (rel is not None and amount >= 1):
                raise self.fail(
                    where, "tolerance must be ≥ 0; relative must be in [0, 1) (0.01 is ±1 %)"
                )
            return Atom(
                field.id,
                op,
                value=value("value"),
                tolerance=amount if tol is not None else None,
                relative=amount if rel is not None else None,
                unit=unit,
            )
        return Atom(field.id, op, value=value("value"), unit=unit)

    def value(self, raw: Any, field: Field, where: str) -> Scalar:
        ftype = field.type
        if ftype is FieldType.BOOLEAN:
            if not isinstance(raw, bool):
                raise self.fail(where, f"{field.id!r} is boolean: true or false")
            return raw
        if ftype is FieldType.INTEGER:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise self.fail(where, f"{field.id!r} is an integer")
            try:
                return int(raw)
            except ValueError:
                raise self.fail(
                    where, f"{field.id!r} is an integer, got {str(raw)[:20]!r}"
                ) from None
        if ftype is FieldType.DECIMAL:
            return _decimal(raw, where)
        if not isinstance(raw, str):
            raise self.fail(where, f"{field.id!r} is a {ftype}: give a string")
        if not raw or len(raw) > MAX_TEXT or not raw.isprintable():
            raise self.fail(where, f"must be 1 to {MAX_TEXT} printable characters")
        if ftype is FieldType.DATE:
            try:
                return dt.date.fromisoformat(raw) if len(raw) == 10 else _bad_date()
            except ValueError:
                raise self.fail(where, f"{field.id!r} is a date: YYYY-MM-DD") from None
        if ftype is FieldType.MONTH and not _MONTH_RE.fullmatch(raw):
            raise self.fail(where, f"{field.id!r} is a month: YYYY-MM")
        if ftype is FieldType.ENUM and raw not in field.values:
            raise self.fail(
                where, f"{raw[:40]!r} is not a value of {field.id!r} ({', '.join(field.values)})"
            )
        return raw

    def sum(self, obj: Mapping[str, Any], where: str) -> Sum:
        self.keys(obj, {"sum", "op", "value", "unit"}, where)
        raw = obj["sum"]
        if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_SUM_TERMS:
            raise self.fail(_join(where, "sum"), f"must list 2 to {MAX_SUM_TERMS} field ids")
        if len(set(map(str, raw))) != len(raw):
            raise self.fail(_join(where, "sum"), "lists a field twice")
        fields = [self.field(f, f"{_join(where, 'sum')}[{i}]", None) for i, f in enumerate(raw)]
        for f in fields:
            if f.type not in NUMERIC:
                raise self.fail(_join(where, "sum"), f"field {f.id!r} is not numeric")
        units = {f.unit for f in fields}
        if len(units) != 1:
            raise self.fail(
                _join(where, "sum"), f"fields have different units ({', '.join(sorted(units))})"
            )
        unit = units.pop()
        if obj.get("unit", "") != unit:
            raise self.fail(_join(where, "unit"), f"the summed fields are in {unit!r}")
        op = obj.get("op")
        if op not in ("ge", "gt", "le", "lt"):
            raise self.fail(_join(where, "op"), "a sum is compared with ge, gt, le or lt")
        if "value" not in obj:
            raise self.fail(where, "sum needs value")
        self.nodes += len(fields)
        return Sum(
            tuple(f.id for f in fields), op, _decimal(obj["value"], _join(where, "value")), unit
        )


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _bad_date() -> dt.date:
    raise ValueError


def _decimal(raw: Any, where: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise InvalidArgument(f"claim {where}: must be a number (a decimal string is exact)")
    try:
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except InvalidOperation:
        raise InvalidArgument(f"claim {where}: {str(raw)[:30]!r} is not a number") from None
    if not value.is_finite() or abs(value) >= Decimal(10) ** 18:
        raise InvalidArgument(f"claim {where}: must be a finite number below 10^18")
    return value


def parse_claim(obj: Any, catalog: Catalog) -> Claim:
    """Build and validate a claim from its JSON object form (see the module docstring)."""
    return _Parser(catalog).node(obj, "", 1, None)


def claim_from_json(text: str | bytes, catalog: Catalog) -> Claim:
    """Parse claim JSON text (at most :data:`MAX_JSON_BYTES`) and validate it."""
    data = text.encode() if isinstance(text, str) else text
    if not data.strip():
        raise InvalidArgument("claim is empty")
    if len(data) > MAX_JSON_BYTES:
        raise InvalidArgument(f"claim is longer than {MAX_JSON_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"claim is not valid JSON: {str(exc)[:80]}") from None
    return parse_claim(obj, catalog)


class ClaimCache:
    """:func:`claim_from_json` remembered by text, for one catalog.

    A service sees the same claim text again and again (each condition of a composite
    check at its provider, a bank's standard questions with the grid's thresholds);
    parsing and validating one costs tens of microseconds.  Claims are immutable (frozen
    dataclasses of tuples and scalars), so one parsed claim can be shared.  Refusals are
    not remembered; past ``size`` texts the cache starts over.
    """

    def __init__(self, catalog: Catalog, size: int = 1024) -> None:
        if size < 1:
            raise InvalidArgument("a claim cache holds at least one claim")
        self.catalog = catalog
        self.size = size
        self._parsed: dict[str | bytes, Claim] = {}

    def parse(self, text: str | bytes) -> Claim:
        """The claim of ``text``, as :func:`claim_from_json` returns or raises it."""
        claim = self._parsed.get(text)
        if claim is None:
            claim = claim_from_json(text, self.catalog)
            if len(self._parsed) >= self.size:
                self._parsed.clear()
            self._parsed[text] = claim
        return claim


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# --- JSON form, canonical bytes, hash -------------------------------------------------------


def _scalar_json(value: Scalar) -> Any:
    if isinstance(value, Decimal):
        return "0" if value == 0 else format(value.normalize(), "f")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def claim_to_json(claim: Claim) -> dict[str, Any]:
    """The JSON object form of ``claim`` (decimals as canonical strings, dates ISO)."""
    if isinstance(claim, Atom):
        out: dict[str, Any] = {"field": claim.field, "op": claim.op}
        for key in ("value", "low", "high"):
            value = getattr(claim, key)
            if value is not None:
                out[key] = _scalar_json(value)
        if claim.values:
            out["values"] = [_scalar_json(v) for v in claim.values]
        if claim.tolerance is not None:
            out["tolerance"] = _scalar_json(claim.tolerance)
        if claim.relative is not None:
            out["relative"] = _scalar_json(claim.relative)
        if claim.unit:
            out["unit"] = claim.unit
        return out
    if isinstance(claim, Exists):
        out = {"exists": claim.dataset}
        if claim.where is not None:
            out["where"] = claim_to_json(claim.where)
        return out
    if isinstance(claim, All):
        return {"all": [claim_to_json(c) for c in claim.items]}
    if isinstance(claim, AnyOf):
        return {"any": [claim_to_json(c) for c in claim.items]}
    if isinstance(claim, Not):
        return {"not": claim_to_json(claim.item)}
    if isinstance(claim, AtLeast):
        return {"at_least": claim.k, "of": [claim_to_json(c) for c in claim.items]}
    return {
        "sum": list(claim.fields),
        "op": claim.op,
        "value": _scalar_json(claim.value),
        "unit": claim.unit,
    }


def canonical_json(claim: Claim) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the bytes that are hashed and signed."""
    return json.dumps(
        claim_to_json(claim), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def claim_sha256(claim: Claim) -> str:
    return hashlib.sha256(canonical_json(claim).encode("utf-8")).hexdigest()


# --- structure ----------------------------------------------------------------------------


def children(claim: Claim) -> tuple[Claim, ...]:
    if isinstance(claim, All | AnyOf | AtLeast):
        return claim.items
    if isinstance(claim, Not):
        return (claim.item,)
    if isinstance(claim, Exists) and claim.where is not None:
        return (claim.where,)
    return ()


def claim_fields(claim: Claim, catalog: Catalog) -> list[str]:
    """Every catalog field the claim reads, sorted.  An ``exists`` without ``where``
    reads the first verifiable field of its dataset (to see whether any row exists)."""
    if isinstance(claim, Atom):
        return [claim.field]
    if isinstance(claim, Sum):
        return sorted(claim.fields)
    out: set[str] = set()
    for child in children(claim):
        out.update(claim_fields(child, catalog))
    if isinstance(claim, Exists) and claim.where is None:
        out.add(next(f.id for f in catalog.dataset(claim.dataset).fields if f.verifiable))
    return sorted(out)


def claim_providers(claim: Claim, catalog: Catalog) -> set[str]:
    """The provider units holding the fields the claim reads."""
    return {catalog.field(f).provider for f in claim_fields(claim, catalog)}


# --- evaluation -------------------------------------------------------------------------------

Rows: TypeAlias = Mapping[str, Sequence[Mapping[str, Any]]]
"""dataset id -> this enterprise's rows (field id -> catalog value), as
:meth:`veil.store.ProviderStore.fetch` returns them."""


def _order(field: Field, value: Any) -> Any:
    """A comparable key: numbers as Decimal, band labels by band index."""
    if field.type is FieldType.ENUM:
        return field.values.index(value)
    if field.type in NUMERIC:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    return value


def _atom_truth(atom: Atom, field: Field, raw: Any) -> Truth:
    if raw is None:
        return Truth.NO_RECORD
    if isinstance(raw, dt.datetime):
        raw = raw.date()
    x = _order(field, raw)

    def key(v: Any) -> Any:
        return _order(field, v)

    op = atom.op
    if op == "eq":
        ok = x == key(atom.value)
    elif op == "ne":
        ok = x != key(atom.value)
    elif op == "ge":
        ok = x >= key(atom.value)
    elif op == "gt":
        ok = x > key(atom.value)
    elif op == "le":
        ok = x <= key(atom.value)
    elif op == "lt":
        ok = x < key(atom.value)
    elif op == "in":
        ok = x in {key(v) for v in atom.values}
    elif op == "between":
        ok = (atom.low is None or x >= key(atom.low)) and (atom.high is None or x <= key(atom.high))
    elif op == "range":
        ok = (atom.low is None or x >= key(atom.low)) and (atom.high is None or x < key(atom.high))
    else:  # within
        center = key(atom.value)
        bound = atom.tolerance if atom.tolerance is not None else abs(center) * (atom.relative or 0)
        ok = abs(x - center) <= bound
    return Truth.TRUE if ok else Truth.FALSE


def evaluate(claim: Claim, rows: Rows, catalog: Catalog) -> Truth:
    """The plaintext answer of ``claim`` on one enterprise's ``rows`` (Kleene logic)."""
    return _eval(claim, rows, None, catalog)


def _single(rows: Rows, dataset: str) -> Mapping[str, Any] | None:
    found = rows.get(dataset) or ()
    return found[0] if found else None


def _eval(claim: Claim, rows: Rows, row: Mapping[str, Any] | None, catalog: Catalog) -> Truth:
    if isinstance(claim, Atom):
        field = catalog.field(claim.field)
        current = row if row is not None else _single(rows, field.dataset_id)
        if current is None:
            return Truth.NO_RECORD
        return _atom_truth(claim, field, current.get(claim.field))
    if isinstance(claim, All):
        return t_all(_eval(c, rows, row, catalog) for c in claim.items)
    if isinstance(claim, AnyOf):
        return t_any(_eval(c, rows, row, catalog) for c in claim.items)
    if isinstance(claim, Not):
        return t_not(_eval(claim.item, rows, row, catalog))
    if isinstance(claim, AtLeast):
        answers = [_eval(c, rows, row, catalog) for c in claim.items]
        return t_at_least(claim.k, answers.count(Truth.TRUE), answers.count(Truth.NO_RECORD))
    if isinstance(claim, Exists):
        found = rows.get(claim.dataset) or ()
        if not found:
            return Truth.NO_RECORD
        if claim.where is None:
            return Truth.TRUE
        return t_any(_eval(claim.where, rows, r, catalog) for r in found)
    total = sum_value(claim, rows, catalog)
    if total is None:
        return Truth.NO_RECORD
    return compare(total, claim.op, claim.value)


def numeric_value(field_id: str, rows: Rows, catalog: Catalog) -> Decimal | None:
    """The value of a numeric field of a one-row dataset, or ``None`` (no record)."""
    current = _single(rows, catalog.field(field_id).dataset_id)
    raw = current.get(field_id) if current is not None else None
    return None if raw is None else Decimal(str(raw))


def sum_value(claim: Sum, rows: Rows, catalog: Catalog) -> Decimal | None:
    """Σ of the summed fields, or ``None`` when any of them has no record."""
    total = Decimal(0)
    for field_id in claim.fields:
        value = numeric_value(field_id, rows, catalog)
        if value is None:
            return None
        total += value
    return total


def compare(x: Decimal, op: str, value: Decimal) -> Truth:
    ok = {"ge": x >= value, "gt": x > value, "le": x <= value, "lt": x < value}[op]
    return Truth.TRUE if ok else Truth.FALSE
