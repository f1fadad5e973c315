"""Per-unit schema mappings: catalog dataset/field ids -> the unit's own tables and columns.

A real data-providing unit will not rename its tables for us: the tax bureau keeps
``sb_*``/``zs_*`` tables keyed by ``nsrsbh`` (纳税人识别号), the social-insurance system keeps
``aab998`` columns, and so on.  A mapping file (TOML, one per unit, shipped in
``veil/catalog/mappings/<unit>.toml``) tells the store where each catalog field lives::

    unit = "tax"
    description = "..."

    [datasets.tax_payments]          # a catalog dataset id of this unit
    table = "sb_jsxx"                # the unit's table (one table per dataset)
    key = "nsrsbh"                   # column holding the enterprise's USCC
    name = "nsrmc"                   # optional: column holding the enterprise name
    row_id = "xh"                    # optional, cardinality "many" only: surrogate key column
    order_by = "djrq"                # optional, "many" only: column ordering an enterprise's rows

    [datasets.tax_payments.columns]  # every field of the dataset, field id -> column
    tax_consecutive_normal_months = "lxzcjsys"
    tax_vat_due_last_year = { column = "zzs_ynse", transform = "scale", factor = 100 }
    tax_last_normal_payment_date = { column = "zhzcjsrq", transform = "date", format = "%Y%m%d" }

Three transform kinds, each a plain two-way function between the stored value and the
catalog value (``None`` stays ``None``):

``scale`` (``factor``, integer or decimal fields)
    The column holds the integer ``round(value × factor)``: money kept in 分 (factor 100)
    or in 元 where the catalog speaks 万元 (factor 10000).  Reading divides by ``factor``.
``enum`` (``codes``, enum or boolean fields)
    The column holds the unit's own codes; ``codes`` maps each code to a catalog value
    (``{ "01" = "A" }``, ``{ "Y" = true, "N" = false }``).  Every catalog value must have
    exactly one code.
``date`` (``format``, date or month fields)
    The column holds text in a ``strftime`` format, such as ``"%Y%m%d"`` or ``"%Y%m"``.

Without a transform a column has the natural SQL type of the field's catalog type.
:func:`load_mapping` validates the file against the catalog and raises
:class:`~veil.errors.ConfigError` naming the file and the offending key.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from veil.catalog import Cardinality, Catalog, Field, FieldType, load_catalog
from veil.errors import ConfigError, FailedPrecondition

__all__ = [
    "IDENTITY_NAME",
    "IDENTITY_USCC",
    "ColumnMap",
    "Mapping",
    "TableMap",
    "Transform",
    "load_mapping",
    "mapping_path",
    "parse_mapping",
]

IDENTITY_USCC = "uscc"
"""Row key holding the enterprise's USCC (the catalog's shared key id)."""
IDENTITY_NAME = "enterprise_name"
"""Row key holding the enterprise name, where the dataset's identity lists it."""

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRANSFORMS = {
    "scale": {FieldType.INTEGER, FieldType.DECIMAL},
    "enum": {FieldType.ENUM, FieldType.BOOLEAN},
    "date": {FieldType.DATE, FieldType.MONTH},
}


@dataclass(frozen=True)
class Transform:
    """A stored-value <-> catalog-value conversion (see the module docstring)."""

    kind: str
    factor: float = 1.0
    codes: tuple[tuple[str, Any], ...] = ()
    format: str = ""

    def to_catalog(self, stored: Any, ftype: FieldType, where: str) -> Any:
        if stored is None:
            return None
        if self.kind == "scale":
            value = stored / self.factor
            return round(value) if ftype is FieldType.INTEGER else float(value)
        if self.kind == "enum":
            for code, value in self.codes:
                if code == str(stored):
                    return value
            raise FailedPrecondition(f"{where} holds code {stored!r}, which the mapping lacks")
        parsed = dt.datetime.strptime(str(stored), self.format).date()
        return parsed.strftime("%Y-%m") if ftype is FieldType.MONTH else parsed

    def to_stored(self, value: Any, ftype: FieldType) -> Any:
        if value is None:
            return None
        if self.kind == "scale":
            return round(float(value) * self.factor)
        if self.kind == "enum":
            for code, v in self.codes:
                if v == value:
                    return code
            raise ValueError(f"value {value!r} has no code in the mapping")
        if ftype is FieldType.MONTH and isinstance(value, str):
            value = dt.date.fromisoformat(value + "-01")
        return value.strftime(self.format)


@dataclass(frozen=True)
class ColumnMap:
    """Where one catalog field lives: column name, catalog type and optional transform."""

    field_id: str
    column: str
    type: FieldType
    transform: Transform | None = None


@dataclass(frozen=True)
class TableMap:
    """Where one catalog dataset lives in the unit's database."""

    dataset_id: str
    table: str
    key: str
    cardinality: Cardinality
    columns: dict[str, ColumnMap]
    name: str | None = None
    row_id: str | None = None
    order_by: str | None = None


@dataclass(frozen=True)
class Mapping:
    """A unit's full mapping: dataset id -> :class:`TableMap`."""

    unit: str
    source: str
    description: str
    tables: dict[str, TableMap] = field(default_factory=dict)

    def table_for(self, dataset_id: str) -> TableMap:
        return self.tables[dataset_id]


def mapping_path(unit: str) -> Path:
    """The packaged mapping file of a provider unit."""
    return Path(str(resources.files("veil.catalog").joinpath("mappings", f"{unit}.toml")))


def load_mapping(path_or_unit: str | Path, catalog: Catalog | None = None) -> Mapping:
    """Load and validate a mapping: a file path, or a unit id for the packaged file."""
    text = str(path_or_unit)
    path = Path(text)
    if not text.endswith(".toml") and "/" not in text and "\\" not in text:
        path = mapping_path(text)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "mapping file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "-", f"not valid TOML ({exc})") from None
    return parse_mapping(doc, str(path), catalog or load_catalog())


def _ident(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ConfigError(
            source, key, f"must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), got {value!r}"
        )
    return value


def _transform(source: str, key: str, spec: AbcMapping[str, Any], fld: Field) -> Transform:
    kind = spec.get("transform")
    allowed = {"column", "transform", "factor", "codes", "format"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(source, f"{key}.{unknown[0]}", "unknown key")
    if kind not in _TRANSFORMS:
        raise ConfigError(
            source, f"{key}.transform", f"must be one of {', '.join(_TRANSFORMS)}, got {kind!r}"
        )
    if fld.type not in _TRANSFORMS[kind]:
        raise ConfigError(
            source, f"{key}.transform", f"{kind!r} does not apply to a {fld.type} field"
        )
    if kind == "scale":
        factor = spec.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise ConfigError(source, f"{key}.factor", "must be a positive number")
        return Transform("scale", factor=float(factor))
    if kind == "date":
        fmt = spec.get("format")
        if not isinstance(fmt, str) or "%" not in fmt:
            raise ConfigError(source, f"{key}.format", "must be a strftime format such as %Y%m%d")
        return Transform("date", format=fmt)
    codes = spec.get("codes")
    if not isinstance(codes, AbcMapping) or not codes:
        raise ConfigError(source, f"{key}.codes", "must be a table of code = value")
    expected: list[Any] = [True, False] if fld.type is FieldType.BOOLEAN else list(fld.values)
    values = list(codes.values())
    for code, value in codes.items():
        if value not in expected or type(value) is not type(expected[0]):
            raise ConfigError(
                source, f"{key}.codes.{code}", f"{value!r} is not a catalog value of {fld.id}"
            )
    missing = [v for v in expected if values.count(v) != 1]
    if missing:
        raise ConfigError(source, f"{key}.codes", f"needs exactly one code for each of {missing!r}")
    return Transform("enum", codes=tuple((str(c), v) for c, v in codes.items()))


def parse_mapping(doc: AbcMapping[str, Any], source: str, catalog: Catalog) -> Mapping:
    """Validate a parsed mapping document against ``catalog``."""
    unknown = sorted(set(doc) - {"unit", "description", "datasets"})
    if unknown:
        raise ConfigError(source, unknown[0], "unknown key")
    unit = doc.get("unit")
    if unit not in catalog.providers():
        raise ConfigError(
            source, "unit", f"{unit!r} is not a provider unit ({', '.join(catalog.providers())})"
        )
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(source, "description", "must be a string")
    datasets = doc.get("datasets")
    if not isinstance(datasets, AbcMapping) or not datasets:
        raise ConfigError(source, "datasets", "must be a table of dataset tables")
    tables: dict[str, TableMap] = {}
    table_names: dict[str, str] = {}
    for ds_id, spec in datasets.items():
        where = f"datasets.{ds_id}"
        if ds_id not in {d.id for d in catalog.datasets}:
            raise ConfigError(source, where, "unknown catalog dataset")
        ds = catalog.dataset(ds_id)
        if ds.provider != unit:
            raise ConfigError(
                source, where, f"dataset belongs to provider {ds.provider!r}, not {unit!r}"
            )
        if not isinstance(spec, AbcMapping):
            raise ConfigError(source, where, "must be a table")
        extra = sorted(set(spec) - {"table", "key", "name", "row_id", "order_by", "columns"})
        if extra:
            raise ConfigError(source, f"{where}.{extra[0]}", "unknown key")
        table = _ident(source, f"{where}.table", spec.get("table"))
        if table in table_names:
            raise ConfigError(
                source, f"{where}.table", f"table {table!r} is already used by {table_names[table]}"
            )
        table_names[table] = ds_id
        key = _ident(source, f"{where}.key", spec.get("key"))
        used = {key: "key"}

        def claim_col(col: str, what: str, where_key: str, used: dict[str, str] = used) -> str:
            if col in used:
                raise ConfigError(source, where_key, f"column {col!r} is already the {used[col]}")
            used[col] = what
            return col

        name = None
        if "name" in spec:
            name = claim_col(_ident(source, f"{where}.name", spec["name"]), "name", f"{where}.name")
        many = ds.cardinality is Cardinality.MANY
        row_id = None
        for opt in ("row_id", "order_by"):
            if opt in spec and not many:
                raise ConfigError(
                    source, f"{where}.{opt}", "only datasets of cardinality 'many' have it"
                )
        if many:
            row_id = claim_col(
                _ident(source, f"{where}.row_id", spec.get("row_id", "id")),
                "row id",
                f"{where}.row_id",
            )
        raw_cols = spec.get("columns")
        if not isinstance(raw_cols, AbcMapping):
            raise ConfigError(source, f"{where}.columns", "must be a table of field = column")
        columns: dict[str, ColumnMap] = {}
        for fid, cspec in raw_cols.items():
            ckey = f"{where}.columns.{fid}"
            if fid not in ds.field_ids:
                raise ConfigError(source, ckey, f"not a field of catalog dataset {ds_id}")
            fld = catalog.field(fid)
            if isinstance(cspec, str):
                col, transform = _ident(source, ckey, cspec), None
            elif isinstance(cspec, AbcMapping):
                col = _ident(source, f"{ckey}.column", cspec.get("column"))
                transform = _transform(source, ckey, cspec, fld) if "transform" in cspec else None
                if transform is None and set(cspec) != {"column"}:
                    raise ConfigError(source, ckey, "options given without a transform")
            else:
                raise ConfigError(source, ckey, "must be a column name or an inline table")
            columns[fid] = ColumnMap(fid, claim_col(col, fid, ckey), fld.type, transform)
        missing = [f for f in ds.field_ids if f not in columns]
        if missing:
            raise ConfigError(source, f"{where}.columns", f"missing fields: {', '.join(missing)}")
        order_by = None
        if "order_by" in spec:
            order_by = _ident(source, f"{where}.order_by", spec["order_by"])
            if order_by not in used:
                raise ConfigError(source, f"{where}.order_by", "must be one of the table's columns")
        tables[ds_id] = TableMap(
            dataset_id=ds_id,
            table=table,
            key=key,
            cardinality=ds.cardinality,
            columns=columns,
            name=name,
            row_id=row_id,
            order_by=order_by,
        )
    return Mapping(unit=unit, source=source, description=description, tables=tables)
