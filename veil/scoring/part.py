"""A provider's part of a model: what it is told in the clear, and the fixed-point scales.

The platform sends each provider the definitions of *its* features (which field, which
aggregate, bin edges or categories, the table sizes) and, separately, the weights
encrypted under the platform's key.  The provider learns which of its fields the model
uses and how they are binned — it must, to compute them — but no weight, WOE or
intercept, and nothing about other providers' features beyond their unit names (it
needs those to know whose masks must cancel).

Fixed point (stated precision, see ``veil.crypto.fixedpoint``):

* slopes of linear features: ``SLOPE = 60`` fractional bits;
* values of linear features: ``VALUE = 40`` fractional bits (the provider's exponent);
* table entries, missing contributions and the sum: ``SUM = 100`` bits (= 60 + 40).

The logit's error is at most ``Σ_linear (|w|·2^-41 + |x|·2^-61) + (k + 1)·2^-101`` —
below 1e-11 for every model the format admits with |w| ≤ 1e6 and values the clip keeps
modest; a 2048-bit modulus leaves ~1900 bits of headroom for the sum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from veil.catalog import Cardinality, Catalog, load_catalog
from veil.crypto.fixedpoint import FixedPoint
from veil.errors import InvalidArgument
from veil.scoring.spec import (
    MAX_BINS,
    UNAVAILABLE_POLICIES,
    Aggregate,
    FeatureSpec,
    ModelSpec,
    Transform,
    table_index,
)

SLOPE = FixedPoint(60)
VALUE = FixedPoint(40)
SUM = SLOPE.times(VALUE)
PART_FORMAT = "veil-model-part/1"


@dataclass(frozen=True)
class PartFeature:
    spec: FeatureSpec
    linear: bool
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    table_size: int = 0

    def index(self, value: float | str) -> int:
        return table_index(self.spec.name, self.edges, self.categories, value)

    @property
    def ciphertexts(self) -> int:
        """How many encrypted numbers the provider receives for this feature."""
        return 2 if self.linear else self.table_size + 1


@dataclass(frozen=True)
class ModelPart:
    model_id: str
    version: int
    sha256: str
    provider: str
    providers: tuple[str, ...]
    on_provider_unavailable: str
    required_providers: tuple[str, ...]
    features: tuple[PartFeature, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(sorted({fid for f in self.features for fid in f.spec.fields}))

    def may_run_without(self, absent: Sequence[str]) -> bool:
        """Whether the model card allows a request without the providers ``absent``."""
        if not absent:
            return True
        if self.on_provider_unavailable != "impute_missing":
            return False
        return not set(absent) & set(self.required_providers)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": PART_FORMAT,
                "model_id": self.model_id,
                "version": self.version,
                "sha256": self.sha256,
                "provider": self.provider,
                "providers": list(self.providers),
                "on_provider_unavailable": self.on_provider_unavailable,
                "required_providers": list(self.required_providers),
                "slope_frac_bits": SLOPE.frac_bits,
                "value_frac_bits": VALUE.frac_bits,
                "features": [_feature_json(f) for f in self.features],
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def _feature_json(f: PartFeature) -> dict[str, Any]:
    out = f.spec.definition()
    out["linear"] = f.linear
    out["categorical"] = f.spec.categorical
    if not f.linear:
        out["edges"] = list(f.edges)
        out["categories"] = list(f.categories)
        out["table_size"] = f.table_size
    return out


def model_part(spec: ModelSpec, provider: str) -> ModelPart:
    if spec.version is None:
        raise InvalidArgument("a model part needs a versioned model")
    features = tuple(
        PartFeature(
            spec=f.spec,
            linear=f.linear,
            edges=f.edges,
            categories=f.categories,
            table_size=len(f.table),
        )
        for f in spec.features_of(provider)
    )
    if not features:
        raise InvalidArgument(f"model {spec.model_id} has no feature of provider {provider!r}")
    return ModelPart(
        model_id=spec.model_id,
        version=spec.version,
        sha256=spec.sha256,
        provider=provider,
        providers=spec.providers,
        on_provider_unavailable=spec.on_provider_unavailable,
        required_providers=spec.required_providers,
        features=features,
    )


def encrypted_numbers(spec: ModelSpec, provider: str) -> list[tuple[str, list[int]]]:
    """Per feature of ``provider``, the fixed-point integers to encrypt, in wire order:
    linear ``[slope·2^60, missing·2^100]``; table ``[t_i·2^100 …, missing·2^100]``."""
    out = []
    for f in spec.features_of(provider):
        if f.linear:
            ints = [SLOPE.to_int(f.slope), SUM.to_int(f.missing)]
        else:
            ints = [SUM.to_int(t) for t in (*f.table, f.missing)]
        out.append((f.spec.name, ints))
    return out


def _fail(problem: str) -> InvalidArgument:
    return InvalidArgument(f"model part: {problem}")


def parse_part(text: str, *, provider: str, catalog: Catalog | None = None) -> ModelPart:
    """Validate a part received from the platform (the provider's own check)."""
    catalog = catalog or load_catalog()
    try:
        raw = json.loads(text)
    except ValueError:
        raise _fail("not JSON") from None
    if not isinstance(raw, Mapping) or raw.get("format") != PART_FORMAT:
        raise _fail(f"format must be {PART_FORMAT}")
    if raw.get("provider") != provider:
        raise _fail(f"is for provider {str(raw.get('provider'))[:40]!r}, not {provider!r}")
    if raw.get("slope_frac_bits") != SLOPE.frac_bits or raw.get("value_frac_bits") != (
        VALUE.frac_bits
    ):
        raise _fail("unsupported fixed-point scales")
    providers = raw.get("providers")
    if (
        not isinstance(providers, list)
        or provider not in providers
        or not all(isinstance(p, str) and p in catalog.providers() for p in providers)
    ):
        raise _fail("providers must list provider units, this one included")
    policy = raw.get("on_provider_unavailable")
    if policy not in UNAVAILABLE_POLICIES:
        raise _fail("on_provider_unavailable is not a known policy")
    required = raw.get("required_providers", [])
    if not isinstance(required, list) or not set(required) <= set(providers):
        raise _fail("required_providers must be among providers")
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail("version must be a positive integer")
    feats = raw.get("features")
    if not isinstance(feats, list) or not feats or len(feats) > 512:
        raise _fail("features must be a non-empty list")
    features = tuple(_parse_feature(f, provider, catalog) for f in feats)
    return ModelPart(
        model_id=str(raw.get("model_id", "")),
        version=version,
        sha256=str(raw.get("sha256", "")),
        provider=provider,
        providers=tuple(sorted(providers)),
        on_provider_unavailable=policy,
        required_providers=tuple(sorted(required)),
        features=features,
    )


def _parse_feature(raw: Any, provider: str, catalog: Catalog) -> PartFeature:
    if not isinstance(raw, Mapping):
        raise _fail("each feature must be an object")
    name = str(raw.get("name", ""))[:64]
    try:
        fld = catalog.field(str(raw.get("field")))
        aggregate = Aggregate(str(raw.get("aggregate")))
    except (InvalidArgument, ValueError):
        raise _fail(f"feature {name}: unknown field or aggregate") from None
    if fld.provider != provider:
        raise _fail(f"feature {name}: field {fld.id} is not held by {provider}")
    dataset = catalog.dataset(fld.dataset_id)
    if aggregate == Aggregate.VALUE and dataset.cardinality != Cardinality.ONE:
        raise _fail(f"feature {name}: value needs a one-row dataset")
    divide_by = raw.get("divide_by")
    if divide_by is not None and catalog.field(str(divide_by)).dataset_id != fld.dataset_id:
        raise _fail(f"feature {name}: divide_by must be of the same dataset")
    t = raw.get("transform", {})
    if not isinstance(t, Mapping) or set(t) - {"prefix", "log", "clip"}:
        raise _fail(f"feature {name}: bad transform")
    clip = t.get("clip")
    transform = Transform(
        prefix=t.get("prefix"),
        log=bool(t.get("log", False)),
        clip=(float(clip[0]), float(clip[1])) if clip else None,
    )
    spec = FeatureSpec(
        name=name,
        provider=provider,
        field=fld.id,
        dataset=fld.dataset_id,
        aggregate=aggregate,
        divide_by=str(divide_by) if divide_by is not None else None,
        transform=transform,
        categorical=bool(raw.get("categorical", False)),
    )
    if raw.get("linear") is True:
        return PartFeature(spec, linear=True)
    edges = tuple(float(e) for e in raw.get("edges", []))
    categories = tuple(str(c) for c in raw.get("categories", []))
    size = raw.get("table_size")
    expected = len(categories) + 1 if categories else len(edges) + 1
    if size != expected or len(edges) > MAX_BINS or len(categories) > MAX_BINS:
        raise _fail(f"feature {name}: table_size must be {expected}")
    return PartFeature(spec, linear=False, edges=edges, categories=categories, table_size=size)
