"""The annex data catalog: every category, sub-item (dataset) and field of 附件：信用信息共享清单.

The catalog is data (``annex.toml``, next to this module), not code, so that the list the State
Council published can be checked line by line against the file. This module only loads it,
validates it strictly and answers look-ups. Why strict: every node decides what may leave a
provider from a field's :class:`Classification`; a typo in the file must stop the process at
start-up rather than silently widen what is shared.

Classification rule (the TOML header states it in full):

* data verification (数据核验) -> ``verification_only``: values never leave the provider;
* no enterprise authorization -> ``public`` (standardised public credit report);
* authorization needed -> ``authorized_detail``, or ``verification_only`` for commercial secrets
  on authorized interface calls (exact financial/tax amounts, itemised payment records).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from itertools import pairwise
from typing import Any, NoReturn, TypeVar

from veil.errors import ConfigError, InvalidArgument

__all__ = [
    "Bands",
    "Cardinality",
    "Catalog",
    "Category",
    "Classification",
    "Dataset",
    "Field",
    "FieldType",
    "KeyField",
    "Level",
    "PublicSubset",
    "SharingMode",
    "load_catalog",
    "parse_catalog",
]

_SOURCE = "veil/catalog/annex.toml"


class SharingMode(StrEnum):
    """The three sharing modes of annex note 2."""

    PHYSICAL_AGGREGATION = "physical_aggregation"  # 物理归集: the platform stores the data
    INTERFACE_CALL = "interface_call"  # 接口调用: called per enterprise
    DATA_VERIFICATION = "data_verification"  # 数据核验: the provider answers yes/no only


class Classification(StrEnum):
    """What may leave the provider: the value openly, the value under authorization, or neither."""

    PUBLIC = "public"
    AUTHORIZED_DETAIL = "authorized_detail"
    VERIFICATION_ONLY = "verification_only"


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    DATE = "date"
    MONTH = "month"
    ENUM = "enum"
    CODE = "code"  # identifiers: USCC, certificate and case numbers, standard codes


class Level(StrEnum):
    NATIONAL = "national"
    LOCAL = "local"
    NATIONAL_OR_LOCAL = "national_or_local"  # the annex's 国家或地方层面


class Cardinality(StrEnum):
    ONE = "one"  # at most one row per enterprise
    MANY = "many"


UNITS = frozenset(
    {"", "CNY", "CNY_10k", "person", "month", "count", "ratio", "score", "m2", "m3", "kWh"}
)
_FEATURE_TYPES = frozenset(
    {FieldType.INTEGER, FieldType.DECIMAL, FieldType.BOOLEAN, FieldType.ENUM}
)


def allowed_classifications(mode: SharingMode, authorization: bool) -> frozenset[Classification]:
    """Classifications the rule permits for a field with this effective mode and authorization."""
    if mode is SharingMode.DATA_VERIFICATION:
        return frozenset({Classification.VERIFICATION_ONLY})
    if not authorization:
        return frozenset({Classification.PUBLIC})
    if mode is SharingMode.PHYSICAL_AGGREGATION:
        return frozenset({Classification.AUTHORIZED_DETAIL})
    return frozenset({Classification.AUTHORIZED_DETAIL, Classification.VERIFICATION_ONLY})


@dataclass(frozen=True)
class KeyField:
    """A shared identity field (``uscc``, ``enterprise_name``); datasets refer to it by id."""

    id: str
    name_zh: str
    name_en: str
    type: FieldType


@dataclass(frozen=True)
class Bands:
    """Coded bands: ``labels[i]`` covers ``[lower_bounds[i], lower_bounds[i + 1])``.

    Bands exist because the annex shares social-insurance headcount and contribution only
    as 分档 (bands), never as exact values.
    """

    id: str
    name_en: str
    unit: str
    labels: tuple[str, ...]
    lower_bounds: tuple[int, ...]

    def label_for(self, value: float) -> str:
        """The band holding ``value`` (values below the first bound fall in the first band)."""
        label = self.labels[0]
        for lab, low in zip(self.labels, self.lower_bounds, strict=True):
            if value >= low:
                label = lab
        return label

    def bounds(self, label: str) -> tuple[int, int | None]:
        """Inclusive lower and exclusive upper bound of ``label`` (``None``: open-ended)."""
        if label not in self.labels:
            raise InvalidArgument(f"unknown band {label!r} of {self.id}")
        i = self.labels.index(label)
        upper = self.lower_bounds[i + 1] if i + 1 < len(self.lower_bounds) else None
        return self.lower_bounds[i], upper


@dataclass(frozen=True)
class PublicSubset:
    """Rows of an otherwise non-public dataset that are shared publicly (the A-grade taxpayers)."""

    field: str
    values: tuple[str, ...]
    mode: SharingMode
    level: Level


@dataclass(frozen=True)
class Category:
    id: str
    number: int
    name_zh: str
    name_en: str
    responsible_unit: str
    provider: str
    dataset_ids: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    """One annex sub-item (row of the annex table) and its fields, in annex order.

    ``key`` names the shared key field rows are joined on (always ``uscc``); ``identity`` maps
    shared key ids to this row's annex wording of them (e.g. ``("enterprise_name", "企业名称")``).
    Records carry identity values under the shared key ids, never under per-dataset field ids.
    """

    id: str
    category_id: str
    provider: str
    name_zh: str
    name_en: str
    cardinality: Cardinality
    mode: SharingMode
    authorization: bool
    level: Level
    sharing_zh: str
    responsible_unit: str
    completion: str
    key: str
    identity: tuple[tuple[str, str], ...]
    public_subset: PublicSubset | None
    note: str
    fields: tuple[Field, ...]

    @property
    def field_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.fields)


@dataclass(frozen=True)
class Field:
    """One annex field; ``mode`` and ``authorization`` are effective (field override or dataset)."""

    id: str
    dataset_id: str
    provider: str
    name_zh: str
    name_en: str
    type: FieldType
    unit: str
    classification: Classification
    mode: SharingMode
    authorization: bool
    verifiable: bool
    model_feature: bool
    values: tuple[str, ...] = ()
    values_zh: tuple[str, ...] = ()
    bands: str | None = None
    standard: str | None = None
    annex_item: str | None = None
    note: str = ""

    @property
    def dataset(self) -> str:
        """Alias of ``dataset_id`` (an id, not the :class:`Dataset`), kept for existing callers."""
        return self.dataset_id


class Catalog:
    """The validated catalog with look-ups by id; build it with :func:`load_catalog`."""

    def __init__(
        self,
        categories: tuple[Category, ...],
        datasets: tuple[Dataset, ...],
        fields: tuple[Field, ...],
        keys: Mapping[str, KeyField],
        bands: Mapping[str, Bands],
    ) -> None:
        self.categories = categories
        self.datasets = datasets
        self.fields = fields
        self.keys = dict(keys)
        self.bands = dict(bands)
        self._categories = {c.id: c for c in categories}
        self._datasets = {d.id: d for d in datasets}
        self._fields = {f.id: f for f in fields}

    def field(self, field_id: str) -> Field:
        try:
            return self._fields[field_id]
        except KeyError:
            raise InvalidArgument(f"unknown catalog field {field_id!r}") from None

    def dataset(self, dataset_id: str) -> Dataset:
        try:
            return self._datasets[dataset_id]
        except KeyError:
            raise InvalidArgument(f"unknown catalog dataset {dataset_id!r}") from None

    def category(self, category_id: str) -> Category:
        try:
            return self._categories[category_id]
        except KeyError:
            raise InvalidArgument(f"unknown catalog category {category_id!r}") from None

    def fields_of(self, dataset_id: str) -> list[Field]:
        return list(self.dataset(dataset_id).fields)

    def dataset_of(self, field_id: str) -> Dataset:
        return self._datasets[self.field(field_id).dataset_id]

    def enterprise_name_field(self, dataset_id: str) -> str:
        """The record key holding the enterprise name in ``dataset_id`` rows (a shared key id)."""
        dataset = self.dataset(dataset_id)
        if "enterprise_name" not in dict(dataset.identity):
            raise InvalidArgument(f"dataset {dataset_id!r} does not carry the enterprise name")
        return "enterprise_name"

    def provider_of(self, field_id: str) -> str:
        return self.field(field_id).provider

    def providers(self) -> list[str]:
        """Provider unit ids in annex order."""
        return list(dict.fromkeys(c.provider for c in self.categories))

    def _check_provider(self, provider: str) -> None:
        if provider not in self.providers():
            raise InvalidArgument(f"unknown provider unit {provider!r}")

    def datasets_for_provider(self, provider: str) -> list[Dataset]:
        self._check_provider(provider)
        return [d for d in self.datasets if d.provider == provider]

    def fields_for_provider(self, provider: str) -> list[Field]:
        self._check_provider(provider)
        return [f for f in self.fields if f.provider == provider]

    def public_fields(self) -> list[Field]:
        return [f for f in self.fields if f.classification is Classification.PUBLIC]


# --- parsing and validation -------------------------------------------------------------------

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)
_MISSING: Any = object()


class _Table:
    """One TOML table, read strictly: wrong types, unknown keys and missing keys are errors."""

    def __init__(self, data: Any, where: str, source: str, allowed: frozenset[str]) -> None:
        self.where, self.source = where, source
        if not isinstance(data, dict):
            self.fail("", "must be a table")
        unknown = sorted(set(data) - allowed)
        if unknown:
            self.fail(unknown[0], "unknown key")
        self.data: dict[str, Any] = data

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self.source, f"{self.where}.{key}" if key else self.where, problem)

    def get(self, key: str, kind: type[_T], default: Any = _MISSING) -> _T:
        if key not in self.data:
            if default is _MISSING:
                self.fail(key, "missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(key, f"must be {kind.__name__}, got {type(value).__name__}")
        if kind is str and not value and key in {"id", "name_zh", "name_en"}:
            self.fail(key, "must not be empty")
        return value

    def strs(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [])
        if not all(isinstance(x, str) and x for x in items):
            self.fail(key, "must be a list of non-empty strings")
        if len(set(items)) != len(items):
            self.fail(key, "has duplicates")
        return tuple(items)

    def enum(self, key: str, kind: type[_E], default: Any = _MISSING) -> _E:
        value = self.get(key, str, default)  # a default is already a member of ``kind``
        try:
            return kind(value)
        except ValueError:
            self.fail(key, f"{value!r} is not one of {', '.join(m.value for m in kind)}")


_CATEGORY_KEYS = frozenset({"id", "number", "name_zh", "name_en", "responsible_unit", "provider"})
_DATASET_KEYS = frozenset(
    {"id", "category", "name_zh", "name_en", "cardinality", "mode", "authorization", "level"}
    | {"sharing_zh", "responsible_unit", "completion", "key", "identity", "public_subset", "note"}
)
_FIELD_KEYS = frozenset(
    {"id", "dataset", "name_zh", "name_en", "type", "unit", "classification", "verifiable"}
    | {"model_feature", "values", "values_zh", "bands", "standard", "annex_item", "mode"}
    | {"authorization", "note"}
)


def parse_catalog(data: Mapping[str, Any], source: str = "<catalog>") -> Catalog:
    """Validate a parsed TOML document and build the catalog; ``ConfigError`` names any flaw."""
    top = _Table(
        dict(data),
        "catalog",
        source,
        frozenset({"schema_version", "keys", "bands", "categories", "datasets", "fields"}),
    )
    if top.get("schema_version", int) != 1:
        top.fail("schema_version", "unsupported (expected 1)")
    seen: set[str] = set()

    def claim(table: _Table, ident: str) -> str:
        """All ids share one namespace, so a field id can never be mistaken for a dataset id."""
        if ident != ident.lower() or not ident.replace("_", "").isalnum() or not ident.isascii():
            table.fail("id", f"{ident!r} is not snake_case")
        if ident in seen:
            table.fail("id", f"duplicate id {ident!r}")
        seen.add(ident)
        return ident

    keys: dict[str, KeyField] = {}
    for kid, raw in top.get("keys", dict).items():
        t = _Table(raw, f"keys.{kid}", source, frozenset({"name_zh", "name_en", "type"}))
        keys[claim(t, kid)] = KeyField(
            kid, t.get("name_zh", str), t.get("name_en", str), t.enum("type", FieldType)
        )

    bands: dict[str, Bands] = {}
    for bid, raw in top.get("bands", dict, {}).items():
        t = _Table(
            raw, f"bands.{bid}", source, frozenset({"name_en", "unit", "labels", "lower_bounds"})
        )
        labels, lows = t.strs("labels"), tuple(t.get("lower_bounds", list))
        ints = all(isinstance(x, int) and not isinstance(x, bool) for x in lows)
        if not labels or not ints or len(lows) != len(labels):
            t.fail("lower_bounds", "must be integers, one per label")
        if any(b <= a for a, b in pairwise(lows)):
            t.fail("lower_bounds", "must be strictly increasing")
        bands[claim(t, bid)] = Bands(bid, t.get("name_en", str), t.get("unit", str), labels, lows)

    categories: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(top.get("categories", list)):
        t = _Table(raw, f"categories[{i}]", source, _CATEGORY_KEYS)
        cid = claim(t, t.get("id", str))
        if t.get("number", int) != i + 1:
            t.fail("number", f"must be {i + 1} (categories are numbered in order)")
        categories[cid] = {k: t.get(k, int if k == "number" else str) for k in _CATEGORY_KEYS}
        categories[cid]["dataset_ids"] = []

    datasets: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(top.get("datasets", list)):
        t = _Table(raw, f"datasets[{i}]", source, _DATASET_KEYS)
        did = claim(t, t.get("id", str))
        cat = categories.get(t.get("category", str)) or t.fail("category", "unknown category")
        key = t.get("key", str)
        if key not in keys:
            t.fail("key", f"unknown key field {key!r}")
        identity = t.get("identity", dict)
        for k, v in identity.items():
            if k not in keys or not isinstance(v, str) or not v:
                t.fail("identity", f"{k!r} must be a key field mapped to its annex wording")
        cat["dataset_ids"].append(did)
        datasets[did] = {
            "id": did,
            "category_id": cat["id"],
            "provider": cat["provider"],
            "name_zh": t.get("name_zh", str),
            "name_en": t.get("name_en", str),
            "cardinality": t.enum("cardinality", Cardinality),
            "mode": t.enum("mode", SharingMode),
            "authorization": t.get("authorization", bool),
            "level": t.enum("level", Level),
            "sharing_zh": t.get("sharing_zh", str),
            "responsible_unit": t.get("responsible_unit", str),
            "completion": t.get("completion", str),
            "key": key,
            "identity": tuple(identity.items()),
            "public_subset": t.get("public_subset", dict, None),
            "note": t.get("note", str, ""),
            "fields": [],
            "_table": t,
        }

    fields: list[Field] = []
    for i, raw in enumerate(top.get("fields", list)):
        t = _Table(raw, f"fields[{i}]", source, _FIELD_KEYS)
        claim(t, t.get("id", str))
        fields.append(_parse_field(t, datasets, bands))
        datasets[fields[-1].dataset_id]["fields"].append(fields[-1])

    built: list[Dataset] = []
    for d in datasets.values():
        t = d.pop("_table")
        if not d["fields"]:
            t.fail("id", "dataset has no fields")
        d["fields"] = tuple(d["fields"])
        d["public_subset"] = _parse_subset(d["public_subset"], t, d["fields"])
        built.append(Dataset(**d))
    cats: list[Category] = []
    for c in categories.values():
        if not c["dataset_ids"]:
            raise ConfigError(source, f"categories.{c['id']}", "category has no datasets")
        cats.append(Category(**{**c, "dataset_ids": tuple(c["dataset_ids"])}))
    return Catalog(tuple(cats), tuple(built), tuple(fields), keys, bands)


def _parse_field(
    t: _Table, datasets: Mapping[str, dict[str, Any]], bands: Mapping[str, Bands]
) -> Field:
    ds = datasets.get(t.get("dataset", str)) or t.fail("dataset", "unknown dataset")
    ftype = t.enum("type", FieldType)
    unit = t.get("unit", str)
    if unit not in UNITS:
        t.fail("unit", f"{unit!r} is not one of {sorted(UNITS)}")
    values, values_zh = t.strs("values"), t.strs("values_zh")
    if (ftype is FieldType.ENUM) != bool(values):
        t.fail("values", "enum fields, and only they, list values")
    if values_zh and len(values_zh) != len(values):
        t.fail("values_zh", "must match values one to one")
    band_id = t.get("bands", str, None)
    if band_id is not None and (band_id not in bands or bands[band_id].labels != values):
        t.fail("bands", f"{band_id!r} must name a [bands] table whose labels are the values")
    mode = t.enum("mode", SharingMode, ds["mode"])
    authorization = t.get("authorization", bool, ds["authorization"])
    cls = t.enum("classification", Classification)
    allowed = allowed_classifications(mode, authorization)
    if cls not in allowed:
        t.fail(
            "classification",
            f"{cls} contradicts {mode} with authorization={authorization}; "
            f"allowed: {', '.join(sorted(allowed))}",
        )
    verifiable = t.get("verifiable", bool)
    if verifiable and cls is Classification.PUBLIC:
        t.fail("verifiable", "public values are open; there is nothing to verify in secret")
    standard = t.get("standard", str, None)
    model_feature = t.get("model_feature", bool)
    if model_feature and ftype not in _FEATURE_TYPES and not (ftype is FieldType.CODE and standard):
        t.fail("model_feature", f"a {ftype} field is not a model feature")
    return Field(
        id=t.get("id", str),
        dataset_id=ds["id"],
        provider=ds["provider"],
        name_zh=t.get("name_zh", str),
        name_en=t.get("name_en", str),
        type=ftype,
        unit=unit,
        classification=cls,
        mode=mode,
        authorization=authorization,
        verifiable=verifiable,
        model_feature=model_feature,
        values=values,
        values_zh=values_zh,
        bands=band_id,
        standard=standard,
        annex_item=t.get("annex_item", str, None),
        note=t.get("note", str, ""),
    )


def _parse_subset(
    raw: dict[str, Any] | None, owner: _Table, fields: tuple[Field, ...]
) -> PublicSubset | None:
    if raw is None:
        return None
    t = _Table(
        raw,
        f"{owner.where}.public_subset",
        owner.source,
        frozenset({"field", "values", "mode", "level"}),
    )
    fid = t.get("field", str)
    field = next((f for f in fields if f.id == fid), None)
    if field is None:
        t.fail("field", f"{fid!r} is not a field of this dataset")
    values = t.strs("values")
    if not values or not set(values) <= set(field.values):
        t.fail("values", f"must be values of {fid}")
    return PublicSubset(fid, values, t.enum("mode", SharingMode), t.enum("level", Level))


@cache
def load_catalog() -> Catalog:
    """The packaged annex catalog, parsed and validated once per process."""
    text = resources.files(__name__).joinpath("annex.toml").read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_SOURCE, "catalog", f"not valid TOML: {exc}") from exc
    return parse_catalog(data, _SOURCE)
