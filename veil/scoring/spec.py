"""The model format ``veil-model/1``: what a credit model is, checked against the catalog.

A model is a logistic regression (or a scorecard, which is the same maths with binned,
usually WOE-encoded features) over catalog fields, each feature owned by exactly one
provider unit — the one holding its field.  The platform keeps the document in its model
registry; training (joint modelling) writes it, ``veil model import`` reads it.

    {
      "format": "veil-model/1",
      "model_id": "sme-default",          # [a-z0-9][a-z0-9-]{0,63}
      "version": 3,                        # optional: the registry assigns the next one
      "kind": "logistic_regression",       # or "scorecard"
      "description": "…",
      "intercept": -2.95,
      "features": [FEATURE, …],
      "output": {…},                       # optional, see veil.scoring.scale
      "on_provider_unavailable": "fail",   # or "impute_missing" (see below)
      "required_providers": ["tax"],       # never imputed, even with impute_missing
      "card": {"title", "training_window": {"start", "end"}, "training_data",
               "metrics": {"auc": 0.8, …}, "trained_by", "notes"}
    }

A FEATURE reads one field of its provider's dataset for the enterprise:

    {"name": "tax_grade", "provider": "tax", "field": "tax_grade",
     "aggregate": "latest",              # how rows become one value (below)
     "divide_by": "samr_total_assets",   # optional: a ratio with a field of the same row
     "transform": {"prefix": 1, "log": true, "clip": [0, 2]},   # optional, in this order
     "encoding": ENCODING,
     "missing": {"impute": 0.0} | {"weight": 0.25}}

Aggregates: datasets of cardinality *one* use ``value`` (the field of the one row) or
``exists``; *many* use ``latest`` (the field of the last row in the unit's own row order,
e.g. the latest annual report), ``sum``, ``max``, ``min``, ``mean`` (over non-null values),
``count`` (rows) or ``exists`` (1 if any row, else 0).

Encodings, each turning the value into the feature's *contribution* to the logit:

* ``{"type": "raw", "weight": w, "center": c, "scale": s}`` — ``w · (x − c) / s``;
* ``{"type": "binned", "edges": [e0 < e1 < …], "weights": [w0, …, wk]}`` — bin ``i`` is
  ``[e(i−1), e(i))`` with open ends: ``(−∞, e0)`` is bin 0, ``[e(k−1), ∞)`` is bin k;
* ``{"type": "woe", "edges": […] | "categories": […], "woe": […], "coefficient": b,
  "other_woe": 0}`` — ``b · WOE(bin)`` (a scorecard); categories for enum fields;
* ``{"type": "one_hot", "categories": [...], "weights": [...], "other": w}``.

**Missing values** (documented policy, never a crash).  A value is *missing* when the
provider holds no row of the dataset for the enterprise (an enterprise unknown to that
provider), the field is NULL, a ratio's denominator is NULL or 0, or ``log`` meets a
value ≤ 0.  ``count`` and ``exists`` are never missing (no rows → 0).  Every other
feature must say what a missing value contributes: ``{"impute": v}`` (``v`` goes through
the encoding as if observed) or ``{"weight": w}`` (the contribution itself: the "missing
bin" of a scorecard).  The provider applies this itself, so the platform does not learn
that the enterprise was unknown to the provider.

**Provider drop-out.**  If a provider fails during a request, the masks of the others no
longer cancel.  With ``"on_provider_unavailable": "fail"`` (the default) the request ends
UNAVAILABLE naming the provider.  With ``"impute_missing"`` the platform re-runs with the
remaining providers and adds, for every feature of the missing provider, its *missing*
contribution; the signed score then lists the provider under ``providers_missing``.
Providers in ``required_providers`` are never imputed.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from enum import StrEnum
from functools import cached_property
from typing import Any

from veil.catalog import Cardinality, Catalog, FieldType, load_catalog
from veil.errors import InvalidArgument
from veil.scoring.scale import ScoreScale

FORMAT = "veil-model/1"
MODEL_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
FEATURE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FEATURES = 512
MAX_BINS = 64
MAX_ABS_WEIGHT = 1e6
KINDS = ("logistic_regression", "scorecard")
UNAVAILABLE_POLICIES = ("fail", "impute_missing")
_NUMERIC = frozenset({FieldType.INTEGER, FieldType.DECIMAL, FieldType.BOOLEAN})
_CATEGORICAL = frozenset({FieldType.ENUM, FieldType.CODE, FieldType.BOOLEAN})
_CARD_KEYS = frozenset(
    {"title", "training_window", "training_data", "metrics", "trained_by", "notes", "population"}
)


class Aggregate(StrEnum):
    VALUE = "value"
    LATEST = "latest"
    SUM = "sum"
    MAX = "max"
    MIN = "min"
    MEAN = "mean"
    COUNT = "count"
    EXISTS = "exists"


_FOR_ONE = frozenset({Aggregate.VALUE, Aggregate.EXISTS})
_FOR_MANY = frozenset(Aggregate) - {Aggregate.VALUE}
NEVER_MISSING = frozenset({Aggregate.COUNT, Aggregate.EXISTS})
_OF_ROW = frozenset({Aggregate.VALUE, Aggregate.LATEST})


@dataclass(frozen=True)
class Transform:
    """Applied after aggregation and the ratio: ``prefix`` (categorical: the first n
    characters, e.g. the GB/T 4754 section of an industry code), then ``log`` (natural),
    then ``clip`` to ``[lo, hi]``."""

    prefix: int | None = None
    log: bool = False
    clip: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if self.log:
            out["log"] = True
        if self.clip is not None:
            out["clip"] = list(self.clip)
        return out


@dataclass(frozen=True)
class FeatureSpec:
    """Which value a feature reads, and how (everything except its weights)."""

    name: str
    provider: str
    field: str
    dataset: str
    aggregate: Aggregate
    divide_by: str | None = None
    transform: Transform = dataclass_field(default_factory=Transform)
    categorical: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        """Catalog fields the provider reads for this feature (what a grant must cover)."""
        return (self.field, self.divide_by) if self.divide_by else (self.field,)

    @property
    def never_missing(self) -> bool:
        return self.aggregate in NEVER_MISSING

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "provider": self.provider,
            "field": self.field,
            "aggregate": self.aggregate.value,
        }
        if self.divide_by:
            out["divide_by"] = self.divide_by
        transform = self.transform.to_json()
        if transform:
            out["transform"] = transform
        return out


def table_index(
    name: str, edges: Sequence[float], categories: Sequence[str], value: float | str
) -> int:
    """The table entry of an observed value: ``categories.index(value)`` (else the last
    entry, "other"), or the bin ``bisect_right(edges, value)`` of a number."""
    if categories:
        text = value if isinstance(value, str) else _category_text(value)
        try:
            return list(categories).index(text)
        except ValueError:
            return len(categories)  # "other"
    if isinstance(value, str):
        raise InvalidArgument(f"feature {name}: {value!r} is not a number")
    return bisect.bisect_right(edges, value)


@dataclass(frozen=True)
class CompiledFeature:
    """A feature as contributions to the logit: what gets encrypted for the provider.

    ``linear``: ``contribution = slope · x`` (the encoding's constant ``−w·c/s`` is
    ``offset``, folded into the model's intercept at the platform).
    Otherwise a *table*: numeric values fall in ``len(edges) + 1`` bins, categorical
    values pick ``categories[i]`` and anything else the last entry ("other"); the
    contribution is ``table[index]``.  A missing value contributes ``missing``.
    """

    spec: FeatureSpec
    linear: bool
    slope: float = 0.0
    offset: float = 0.0
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    table: tuple[float, ...] = ()
    missing: float = 0.0

    def index(self, value: float | str) -> int:
        """The table entry for an observed value."""
        return table_index(self.spec.name, self.edges, self.categories, value)

    def contribution(self, value: float | str | None) -> float:
        if value is None:
            return self.missing
        if self.linear:
            if isinstance(value, str):
                raise InvalidArgument(f"feature {self.spec.name}: {value!r} is not a number")
            return self.slope * value
        return self.table[self.index(value)]

    def public_part(self) -> dict[str, Any]:
        """What the provider is told in the clear: the value to compute and the shape of
        the table (bin edges, categories), never a weight or a WOE."""
        out = self.spec.definition()
        out["linear"] = self.linear
        if not self.linear:
            out["edges"] = list(self.edges)
            out["categories"] = list(self.categories)
            out["table_size"] = len(self.table)
        return out

    def weights(self) -> list[float]:
        """The secret numbers in the order the provider receives them encrypted:
        linear ``[slope, missing]``; table ``[table…, missing]``."""
        if self.linear:
            return [self.slope, self.missing]
        return [*self.table, self.missing]


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    version: int | None
    kind: str
    intercept: float
    features: tuple[CompiledFeature, ...]
    scale: ScoreScale
    on_provider_unavailable: str
    required_providers: tuple[str, ...]
    description: str
    card: Mapping[str, Any]
    document: Mapping[str, Any]  # the validated document as given (without version)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({f.spec.provider for f in self.features}))

    def features_of(self, provider: str) -> tuple[CompiledFeature, ...]:
        return tuple(f for f in self.features if f.spec.provider == provider)

    def fields_of(self, provider: str) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for f in self.features_of(provider):
            for fid in f.spec.fields:
                out[fid] = None
        return tuple(sorted(out))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(sorted({fid for f in self.features for fid in f.spec.fields}))

    @property
    def base_logit(self) -> float:
        """Intercept plus the constant parts of linear encodings (kept at the platform)."""
        return self.intercept + math.fsum(f.offset for f in self.features if f.linear)

    def may_impute(self, provider: str) -> bool:
        return (
            self.on_provider_unavailable == "impute_missing"
            and provider not in self.required_providers
        )

    def missing_contribution(self, provider: str) -> float:
        return math.fsum(f.missing for f in self.features_of(provider))

    def with_version(self, version: int) -> ModelSpec:
        return ModelSpec(
            model_id=self.model_id,
            version=version,
            kind=self.kind,
            intercept=self.intercept,
            features=self.features,
            scale=self.scale,
            on_provider_unavailable=self.on_provider_unavailable,
            required_providers=self.required_providers,
            description=self.description,
            card=self.card,
            document=self.document,
        )

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.document)
        if self.version is not None:
            doc["version"] = self.version
        return doc

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- parsing ----------------------------------------------------------------------------


def _fail(where: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"model {where}: {problem}")


def _obj(
    value: Any, where: str, allowed: frozenset[str], required: Sequence[str] = ()
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(f"{where}.{unknown[0]}", "unknown key")
    for key in required:
        if key not in value:
            raise _fail(f"{where}.{key}", "missing")
    return dict(value)


def _num(value: Any, where: str, *, bound: float = MAX_ABS_WEIGHT) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, "must be a finite number")
    if abs(value) > bound:
        raise _fail(where, f"must be within ±{bound:g}")
    return float(value)


def _nums(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(where, "must be a non-empty list of numbers")
    if len(value) > MAX_BINS:
        raise _fail(where, f"has more than {MAX_BINS} entries")
    return tuple(_num(v, f"{where}[{i}]", bound=1e15) for i, v in enumerate(value))


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(where, "must be a non-empty list of strings")
    if len(value) > MAX_BINS:
        raise _fail(where, f"has more than {MAX_BINS} entries")
    if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
        raise _fail(where, "must be distinct non-empty strings")
    return tuple(value)


def _str(value: Any, where: str, *, max_len: int = 4000) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise _fail(where, f"must be a string of at most {max_len} characters")
    return value


def _category_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _transform(raw: Any, where: str, ftype: FieldType, categorical: bool) -> Transform:
    if raw is None:
        return Transform()
    t = _obj(raw, where, frozenset({"prefix", "log", "clip"}))
    prefix = t.get("prefix")
    if prefix is not None:
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= 18:
            raise _fail(f"{where}.prefix", "must be an integer 1..18")
        if not categorical or ftype not in (FieldType.CODE, FieldType.ENUM):
            raise _fail(f"{where}.prefix", "applies to categorical code/enum fields only")
    log = t.get("log", False)
    if not isinstance(log, bool):
        raise _fail(f"{where}.log", "must be true or false")
    clip = t.get("clip")
    bounds: tuple[float, float] | None = None
    if clip is not None:
        if not isinstance(clip, list) or len(clip) != 2:
            raise _fail(f"{where}.clip", "must be [lo, hi]")
        lo = _num(clip[0], f"{where}.clip[0]", bound=1e15)
        hi = _num(clip[1], f"{where}.clip[1]", bound=1e15)
        if lo >= hi:
            raise _fail(f"{where}.clip", "lo must be below hi")
        bounds = (lo, hi)
    if categorical and (log or bounds):
        raise _fail(where, "log and clip apply to numeric values only")
    return Transform(prefix=prefix, log=log, clip=bounds)


def _encoding(raw: Any, where: str, spec: FeatureSpec) -> CompiledFeature:
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise _fail(where, "must be an object with a type")
    kind = raw["type"]
    if kind == "raw":
        e = _obj(raw, where, frozenset({"type", "weight", "center", "scale"}), ["weight"])
        weight = _num(e["weight"], f"{where}.weight")
        center = _num(e.get("center", 0.0), f"{where}.center", bound=1e15)
        scale = _num(e.get("scale", 1.0), f"{where}.scale", bound=1e15)
        if scale <= 0:
            raise _fail(f"{where}.scale", "must be positive")
        return CompiledFeature(
            spec, linear=True, slope=weight / scale, offset=-weight * center / scale
        )
    if kind == "binned":
        e = _obj(raw, where, frozenset({"type", "edges", "weights"}), ["edges", "weights"])
        edges = _edges(e["edges"], f"{where}.edges")
        weights = tuple(
            _num(w, f"{where}.weights") for w in _nums(e["weights"], f"{where}.weights")
        )
        if len(weights) != len(edges) + 1:
            raise _fail(f"{where}.weights", f"needs {len(edges) + 1} entries (edges + 1)")
        return CompiledFeature(spec, linear=False, edges=edges, table=weights)
    if kind == "woe":
        keys = frozenset({"type", "edges", "categories", "woe", "coefficient", "other_woe"})
        e = _obj(raw, where, keys, ["woe", "coefficient"])
        coef = _num(e["coefficient"], f"{where}.coefficient")
        woe = tuple(_num(w, f"{where}.woe") for w in _nums(e["woe"], f"{where}.woe"))
        if spec.categorical:
            if "edges" in e or "categories" not in e:
                raise _fail(where, "a categorical field's WOE needs categories, not edges")
            cats = _strs(e["categories"], f"{where}.categories")
            if len(woe) != len(cats):
                raise _fail(f"{where}.woe", "needs one entry per category")
            other = _num(e.get("other_woe", 0.0), f"{where}.other_woe")
            table = tuple(coef * w for w in (*woe, other))
            return CompiledFeature(spec, linear=False, categories=cats, table=table)
        if "categories" in e or "edges" not in e:
            raise _fail(where, "a numeric field's WOE needs edges, not categories")
        if "other_woe" in e:
            raise _fail(f"{where}.other_woe", "applies to categories only")
        edges = _edges(e["edges"], f"{where}.edges")
        if len(woe) != len(edges) + 1:
            raise _fail(f"{where}.woe", f"needs {len(edges) + 1} entries (edges + 1)")
        return CompiledFeature(spec, linear=False, edges=edges, table=tuple(coef * w for w in woe))
    if kind == "one_hot":
        keys = frozenset({"type", "categories", "weights", "other"})
        e = _obj(raw, where, keys, ["categories", "weights"])
        if not spec.categorical:
            raise _fail(where, "one_hot applies to categorical (enum, code, boolean) values")
        cats = _strs(e["categories"], f"{where}.categories")
        weights = tuple(
            _num(w, f"{where}.weights") for w in _nums(e["weights"], f"{where}.weights")
        )
        if len(weights) != len(cats):
            raise _fail(f"{where}.weights", "needs one entry per category")
        other = _num(e.get("other", 0.0), f"{where}.other")
        return CompiledFeature(spec, linear=False, categories=cats, table=(*weights, other))
    raise _fail(f"{where}.type", f"{str(kind)[:40]!r} is not raw, binned, woe or one_hot")


def _edges(raw: Any, where: str) -> tuple[float, ...]:
    edges = _nums(raw, where)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise _fail(where, "must be strictly increasing")
    return edges


def _missing(raw: Any, where: str, compiled: CompiledFeature) -> CompiledFeature:
    spec = compiled.spec
    if spec.never_missing:
        if raw is not None:
            raise _fail(where, f"{spec.aggregate.value} is never missing; drop 'missing'")
        return compiled
    if raw is None:
        raise _fail(where, "is required: say what a missing value contributes")
    m = _obj(raw, where, frozenset({"impute", "weight"}))
    if len(m) != 1:
        raise _fail(where, "must be exactly one of {impute: value} or {weight: contribution}")
    if "weight" in m:
        missing = _num(m["weight"], f"{where}.weight")
    else:
        value = m["impute"]
        if spec.categorical:
            if not isinstance(value, str):
                raise _fail(f"{where}.impute", "must be a category (string)")
            missing = compiled.contribution(value)
        else:
            # As if observed; a linear encoding's constant part stays in base_logit.
            missing = compiled.contribution(_num(value, f"{where}.impute", bound=1e15))
    return CompiledFeature(
        spec,
        linear=compiled.linear,
        slope=compiled.slope,
        offset=compiled.offset,
        edges=compiled.edges,
        categories=compiled.categories,
        table=compiled.table,
        missing=missing,
    )


def _feature(raw: Any, where: str, catalog: Catalog) -> CompiledFeature:
    keys = frozenset(
        {"name", "provider", "field", "aggregate", "divide_by", "transform", "encoding", "missing"}
    )
    f = _obj(raw, where, keys, ["name", "provider", "field", "encoding"])
    name = f["name"]
    if not isinstance(name, str) or not FEATURE_NAME_RE.fullmatch(name):
        raise _fail(f"{where}.name", "must match [a-z][a-z0-9_]{0,63}")
    where = f"feature {name}"
    provider = f["provider"]
    if not isinstance(provider, str) or provider not in catalog.providers():
        raise _fail(f"{where}.provider", f"{str(provider)[:40]!r} is not a provider unit")
    try:
        fld = catalog.field(str(f["field"]))
    except InvalidArgument:
        raise _fail(f"{where}.field", f"{str(f['field'])[:64]!r} is not a catalog field") from None
    if fld.provider != provider:
        raise _fail(
            f"{where}.field",
            f"{fld.id} is held by provider {fld.provider!r}, not {provider!r}: "
            "each feature is owned by the provider of its field",
        )
    dataset = catalog.dataset(fld.dataset_id)
    default = Aggregate.VALUE if dataset.cardinality == Cardinality.ONE else None
    try:
        aggregate = Aggregate(str(f.get("aggregate", default)))
    except ValueError:
        raise _fail(
            f"{where}.aggregate",
            f"is required for dataset {dataset.id} (many rows): one of "
            + ", ".join(a.value for a in _FOR_MANY),
        ) from None
    allowed = _FOR_ONE if dataset.cardinality == Cardinality.ONE else _FOR_MANY
    if aggregate not in allowed:
        raise _fail(
            f"{where}.aggregate",
            f"{aggregate.value} does not apply to dataset {dataset.id} "
            f"({dataset.cardinality.value} row(s) per enterprise)",
        )
    encoding_raw = f["encoding"]
    enc_type = encoding_raw.get("type") if isinstance(encoding_raw, Mapping) else None
    categorical = enc_type == "one_hot" or (
        enc_type == "woe" and isinstance(encoding_raw, Mapping) and "categories" in encoding_raw
    )
    if aggregate in NEVER_MISSING:
        if categorical:
            raise _fail(f"{where}.encoding", f"{aggregate.value} gives a number")
    else:
        if not fld.model_feature:
            raise _fail(f"{where}.field", f"{fld.id} is not a model feature in the catalog")
        types = _CATEGORICAL if categorical else _NUMERIC
        if fld.type not in types:
            raise _fail(
                f"{where}.field",
                f"{fld.id} is {fld.type.value}; a {'categorical' if categorical else 'numeric'} "
                "encoding needs " + ", ".join(sorted(t.value for t in types)),
            )
        if categorical and aggregate not in _OF_ROW:
            raise _fail(f"{where}.aggregate", "a categorical value must be value or latest")
        if aggregate in (Aggregate.SUM, Aggregate.MEAN, Aggregate.MAX, Aggregate.MIN) and (
            fld.type == FieldType.BOOLEAN
        ):
            raise _fail(f"{where}.aggregate", f"{aggregate.value} needs an integer or decimal")
    divide_by = f.get("divide_by")
    if divide_by is not None:
        try:
            den = catalog.field(str(divide_by))
        except InvalidArgument:
            raise _fail(f"{where}.divide_by", "is not a catalog field") from None
        if den.dataset_id != fld.dataset_id or den.type not in (
            FieldType.INTEGER,
            FieldType.DECIMAL,
        ):
            raise _fail(f"{where}.divide_by", "must be a number of the same dataset (row)")
        if aggregate not in _OF_ROW or categorical:
            raise _fail(
                f"{where}.divide_by", "a ratio needs value or latest and a numeric encoding"
            )
        if den.id == fld.id:
            raise _fail(f"{where}.divide_by", "must differ from field")
    spec = FeatureSpec(
        name=name,
        provider=provider,
        field=fld.id,
        dataset=dataset.id,
        aggregate=aggregate,
        divide_by=den.id if divide_by is not None else None,
        categorical=categorical,
        transform=_transform(f.get("transform"), f"{where}.transform", fld.type, categorical),
    )
    compiled = _encoding(encoding_raw, f"{where}.encoding", spec)
    return _missing(f.get("missing"), f"{where}.missing", compiled)


def _card(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    card = _obj(raw, "card", _CARD_KEYS)
    for key in ("title", "training_data", "trained_by", "notes", "population"):
        if key in card:
            _str(card[key], f"card.{key}")
    if "training_window" in card:
        w = _obj(card["training_window"], "card.training_window", frozenset({"start", "end"}))
        for key, value in w.items():
            if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise _fail(f"card.training_window.{key}", "must be a date YYYY-MM-DD")
    if "metrics" in card:
        metrics = card["metrics"]
        if not isinstance(metrics, Mapping) or len(metrics) > 32:
            raise _fail("card.metrics", "must be an object of at most 32 numbers")
        for key, value in metrics.items():
            if not isinstance(key, str) or not FEATURE_NAME_RE.fullmatch(key):
                raise _fail("card.metrics", f"{str(key)[:32]!r} is not a metric name")
            _num(value, f"card.metrics.{key}", bound=1e12)
    return card


def parse_model(raw: Any, catalog: Catalog | None = None) -> ModelSpec:
    """Validate a ``veil-model/1`` document; InvalidArgument names the first flaw."""
    catalog = catalog or load_catalog()
    keys = frozenset(
        {"format", "model_id", "version", "kind", "description", "intercept", "features"}
        | {"output", "on_provider_unavailable", "required_providers", "card"}
    )
    doc = _obj(raw, "document", keys, ["format", "model_id", "kind", "intercept", "features"])
    if doc["format"] != FORMAT:
        raise _fail("format", f"must be {FORMAT!r}")
    model_id = doc["model_id"]
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        raise _fail("model_id", "must match [a-z0-9][a-z0-9-]{0,63}")
    version = doc.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31
    ):
        raise _fail("version", "must be a positive integer")
    if doc["kind"] not in KINDS:
        raise _fail("kind", f"must be one of {', '.join(KINDS)}")
    intercept = _num(doc["intercept"], "intercept")
    features_raw = doc["features"]
    if not isinstance(features_raw, list) or not features_raw:
        raise _fail("features", "must be a non-empty list")
    if len(features_raw) > MAX_FEATURES:
        raise _fail("features", f"has more than {MAX_FEATURES} features")
    features = tuple(_feature(f, f"features[{i}]", catalog) for i, f in enumerate(features_raw))
    names = [f.spec.name for f in features]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise _fail("features", f"feature name {dup!r} is used twice")
    policy = doc.get("on_provider_unavailable", "fail")
    if policy not in UNAVAILABLE_POLICIES:
        raise _fail("on_provider_unavailable", f"must be one of {', '.join(UNAVAILABLE_POLICIES)}")
    providers = {f.spec.provider for f in features}
    required = doc.get("required_providers", [])
    if not isinstance(required, list) or not all(r in providers for r in required):
        raise _fail("required_providers", "must list providers of the model's features")
    description = _str(doc.get("description", ""), "description")
    scale = ScoreScale.from_json(doc.get("output"))
    card = _card(doc.get("card"))
    document = {k: v for k, v in doc.items() if k != "version"}
    document["output"] = scale.to_json()
    return ModelSpec(
        model_id=model_id,
        version=version,
        kind=doc["kind"],
        intercept=intercept,
        features=features,
        scale=scale,
        on_provider_unavailable=policy,
        required_providers=tuple(sorted(set(required))),
        description=description,
        card=card,
        document=json.loads(canonical_json(document)),
    )
