"""The platform's model registry: versioned ``veil-model/1`` documents and their cards.

Life of a model version::

    imported ──approve──▶ approved ──retire──▶ retired
       (import file or training)   (scorable)

* ``import_model`` validates the document against the catalog (:func:`parse_model`) and
  stores it verbatim (canonical JSON and its SHA-256) under ``(model_id, version)``; a
  document without ``version`` gets the next free one.  Versions are never overwritten.
* ``approve`` records who (the administrator's certificate identity) and when; only
  approved versions are scored.  Import is written to the transparency log
  (``model.trained``), approval and retirement too (``model.deployed``), each with the
  document's SHA-256, so an auditor can check which exact model scored whom.
* ``installs`` remembers which providers hold the encrypted part of a version under
  which platform Paillier key (``key_id``), so a re-keyed platform re-installs.

Training (joint modelling) uses the same entry point with ``source="training"``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NoReturn

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from veil.catalog import Catalog, load_catalog
from veil.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from veil.scoring.spec import MODEL_ID_RE, ModelSpec, canonical_json, parse_model

STATES = ("imported", "approved", "retired")
SOURCES = ("import", "training")
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024

metadata = MetaData()
models = Table(
    "scoring_models",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("document", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Column("imported_by", String(128), nullable=False),
    Column("approved_at", DateTime(timezone=True)),
    Column("approved_by", String(128)),
    Column("retired_at", DateTime(timezone=True)),
    Column("retired_by", String(128)),
)
installs = Table(
    "scoring_model_installs",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("provider", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("installed_at", DateTime(timezone=True), nullable=False),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    version: int
    kind: str
    document: str
    sha256: str
    state: str
    source: str
    imported_at: dt.datetime
    imported_by: str
    approved_at: dt.datetime | None
    approved_by: str | None
    retired_at: dt.datetime | None
    retired_by: str | None

    @cached_property
    def spec(self) -> ModelSpec:
        return parse_model(json.loads(self.document)).with_version(self.version)

    @property
    def ref(self) -> str:
        return f"{self.model_id}@{self.version}"

    def card(self) -> dict[str, Any]:
        """The model card: features by provider, training window, metrics, approval."""
        spec = self.spec
        by_provider: dict[str, list[dict[str, Any]]] = {}
        for f in spec.features:
            entry = f.spec.definition()
            entry.pop("provider")
            entry["encoding"] = "linear" if f.linear else f"table({len(f.table)})"
            by_provider.setdefault(f.spec.provider, []).append(entry)
        return {
            "model_id": self.model_id,
            "version": self.version,
            "kind": self.kind,
            "description": spec.description,
            "state": self.state,
            "source": self.source,
            "sha256": self.sha256,
            "features_by_provider": by_provider,
            "providers": list(spec.providers),
            "on_provider_unavailable": spec.on_provider_unavailable,
            "required_providers": list(spec.required_providers),
            "output": spec.scale.to_json(),
            **{k: v for k, v in spec.card.items()},
            "imported": {"by": self.imported_by, "at": self.imported_at.isoformat()},
            "approved": (
                {"by": self.approved_by, "at": self.approved_at.isoformat()}
                if self.approved_at
                else None
            ),
            "retired": (
                {"by": self.retired_by, "at": self.retired_at.isoformat()}
                if self.retired_at
                else None
            ),
        }


def _record(row: Any) -> ModelRecord:
    return ModelRecord(
        model_id=row.model_id,
        version=row.version,
        kind=row.kind,
        document=row.document,
        sha256=row.sha256,
        state=row.state,
        source=row.source,
        imported_at=_aware(row.imported_at) or _now(),
        imported_by=row.imported_by,
        approved_at=_aware(row.approved_at),
        approved_by=row.approved_by,
        retired_at=_aware(row.retired_at),
        retired_by=row.retired_by,
    )


class ModelRegistry:
    def __init__(self, engine: Engine, catalog: Catalog | None = None) -> None:
        self.engine = engine
        self.catalog = catalog or load_catalog()
        metadata.create_all(engine)
        self._specs: dict[tuple[str, int], ModelRecord] = {}

    # -- writing -----------------------------------------------------------------------

    def import_model(
        self, document: Mapping[str, Any] | str | bytes, *, by: str, source: str = "import"
    ) -> ModelRecord:
        """Validate and store a new version; returns its record (state ``imported``)."""
        if source not in SOURCES:
            raise InvalidArgument(f"source must be one of {', '.join(SOURCES)}")
        if isinstance(document, str | bytes):
            if len(document) > MAX_DOCUMENT_BYTES:
                raise InvalidArgument(f"model document is larger than {MAX_DOCUMENT_BYTES} bytes")
            try:
                document = json.loads(document)
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument("model document is not JSON") from None
        spec = parse_model(document, self.catalog)
        by = by[:128] or "unknown"
        for _attempt in range(3):
            with self.engine.begin() as conn:
                version = spec.version
                if version is None:
                    latest = conn.execute(
                        select(func.max(models.c.version)).where(models.c.model_id == spec.model_id)
                    ).scalar_one()
                    version = int(latest or 0) + 1
                versioned = spec.with_version(version)
                try:
                    conn.execute(
                        insert(models).values(
                            model_id=spec.model_id,
                            version=version,
                            kind=spec.kind,
                            document=canonical_json(versioned.to_json()).decode(),
                            sha256=versioned.sha256,
                            state="imported",
                            source=source,
                            imported_at=_now(),
                            imported_by=by,
                        )
                    )
                except IntegrityError:
                    if spec.version is not None:
                        raise AlreadyExists(
                            f"model {spec.model_id} version {version} already exists; "
                            "versions are never overwritten"
                        ) from None
                    continue  # a concurrent import took the number: try the next one
            return self.get(spec.model_id, version)
        raise AlreadyExists(f"could not assign a version to model {spec.model_id}")

    def _transition(self, model_id: str, version: int, state: str, by: str) -> ModelRecord:
        record = self.get(model_id, version)
        allowed = {"approved": ("imported",), "retired": ("imported", "approved")}[state]
        if record.state not in allowed:
            raise FailedPrecondition(
                f"model {record.ref} is {record.state}; it cannot become {state}"
            )
        values: dict[str, Any] = {"state": state}
        values["approved_at" if state == "approved" else "retired_at"] = _now()
        values["approved_by" if state == "approved" else "retired_by"] = by[:128] or "unknown"
        with self.engine.begin() as conn:
            conn.execute(
                update(models)
                .where(
                    and_(
                        models.c.model_id == model_id,
                        models.c.version == version,
                        models.c.state == record.state,
                    )
                )
                .values(**values)
            )
        self._specs.pop((model_id, version), None)
        return self.get(model_id, version)

    def approve(self, model_id: str, version: int, *, by: str) -> ModelRecord:
        return self._transition(model_id, version, "approved", by)

    def retire(self, model_id: str, version: int, *, by: str) -> ModelRecord:
        return self._transition(model_id, version, "retired", by)

    # -- reading -----------------------------------------------------------------------

    def get(self, model_id: str, version: int) -> ModelRecord:
        if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
            raise InvalidArgument("model_id must match [a-z0-9][a-z0-9-]{0,63}")
        with self.engine.connect() as conn:
            row = conn.execute(
                select(models).where(
                    and_(models.c.model_id == model_id, models.c.version == version)
                )
            ).first()
            if row is None:
                known = conn.execute(
                    select(func.count()).select_from(models).where(models.c.model_id == model_id)
                ).scalar_one()
        if row is None:
            if known:
                raise NotFound(f"model {model_id} has no version {version}")
            raise NotFound(f"unknown model {model_id!r}")
        return _record(row)

    def scorable(self, model_id: str, version: int = 0) -> ModelRecord:
        """An approved version (``version`` 0: the latest approved one), spec cached.

        Runs on every score: it reads the version's state and digest only, and the
        document only when this version is not cached yet (or its digest changed)."""
        if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
            raise InvalidArgument("model_id must match [a-z0-9][a-z0-9-]{0,63}")
        with self.engine.connect() as conn:
            if version:
                head = conn.execute(_VERSION_HEAD, {"m_id": model_id, "m_v": version}).first()
            else:
                head = conn.execute(_LATEST_APPROVED_HEAD, {"m_id": model_id}).first()
        if head is None or head.state != "approved":
            self._refuse_unscorable(model_id, version)
        assert head is not None
        cached = self._specs.get((head.model_id, head.version))
        if cached is not None and cached.sha256 == head.sha256:
            return cached
        record = self.get(head.model_id, head.version)
        if record.state != "approved":  # changed in between
            self._refuse_unscorable(model_id, version)
        _ = record.spec  # parse (and validate) once per version
        self._specs[(record.model_id, record.version)] = record
        return record

    def _refuse_unscorable(self, model_id: str, version: int) -> NoReturn:
        if version:
            record = self.get(model_id, version)  # NotFound names what is missing
            raise FailedPrecondition(
                f"model {record.ref} is {record.state}, not approved for scoring"
            )
        with self.engine.connect() as conn:
            any_row = conn.execute(
                select(models.c.version).where(models.c.model_id == model_id).limit(1)
            ).first()
        if any_row is None:
            raise NotFound(f"unknown model {model_id!r}")
        raise FailedPrecondition(f"model {model_id} has no approved version")

    def list(self, model_id: str | None = None) -> list[ModelRecord]:
        stmt = select(models).order_by(models.c.model_id, models.c.version)
        if model_id:
            stmt = stmt.where(models.c.model_id == model_id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(stmt)]

    # -- installs at providers -----------------------------------------------------------

    def installed(self, model_id: str, version: int, key_id: str) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(installs.c.provider).where(
                    and_(
                        installs.c.model_id == model_id,
                        installs.c.version == version,
                        installs.c.key_id == key_id,
                    )
                )
            ).all()
        return {r.provider for r in rows}

    def record_install(self, model_id: str, version: int, provider: str, key_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(installs).where(
                    and_(
                        installs.c.model_id == model_id,
                        installs.c.version == version,
                        installs.c.provider == provider,
                    )
                )
            )
            conn.execute(
                insert(installs).values(
                    model_id=model_id,
                    version=version,
                    provider=provider,
                    key_id=key_id,
                    installed_at=_now(),
                )
            )

    def forget_install(self, model_id: str, version: int, provider: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(installs).where(
                    and_(
                        installs.c.model_id == model_id,
                        installs.c.version == version,
                        installs.c.provider == provider,
                    )
                )
            )


# Read on every score (ModelRegistry.scorable): the state and digest, not the document.
_HEAD_COLUMNS = (models.c.model_id, models.c.version, models.c.sha256, models.c.state)
_VERSION_HEAD = select(*_HEAD_COLUMNS).where(
    models.c.model_id == bindparam("m_id"), models.c.version == bindparam("m_v")
)
_LATEST_APPROVED_HEAD = (
    select(*_HEAD_COLUMNS)
    .where(models.c.model_id == bindparam("m_id"), models.c.state == "approved")
    .order_by(models.c.version.desc())
    .limit(1)
)
