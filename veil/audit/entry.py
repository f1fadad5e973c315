"""The transparency log's entry format: one canonical-JSON usage record per leaf.

An entry is the UTF-8 encoding of a JSON object with *every* key of schema v1
present, keys sorted, no insignificant whitespace (``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)``).  Canonical bytes matter because the
leaf hash is over them: anyone holding the bytes recomputes SHA-256(0x00 || entry)
and the RFC 9162 root with their own code.

Schema v1 (all keys always present; empty string / list / object when unused)::

    v                 1
    type              event type, e.g. "enterprise.lookup" (see EventType)
    time              RFC 3339 UTC with microseconds, "2025-01-31T08:00:00.000000Z"
    actor             "<role>/<id>": institution/<id>, admin/<id>, platform/<id>
    enterprise        the USCC concerned, or ""
    grant, purpose    the enterprise grant id and purpose the use relied on, or ""
    providers         provider units that answered (sorted)
    providers_failed  provider units asked that did not answer (sorted)
    datasets          {dataset id: row count} (physical aggregation), or {}
    result_sha256     hex SHA-256 of the result bytes handed out, or ""
    outcome           gRPC status name of the operation, "OK" on success
    request_id        the id sent to every provider asked
    detail            further identifiers, identifier lists or hashes {str: str | int}

What an entry never holds: a field value from any dataset, a name, an amount.  The
encoder enforces a conservative shape (identifier character sets, short strings,
hex hashes) so that a value cannot slip in by accident; the result itself is only
present as its hash.  Identifiers are still sensitive (which institution looked at
which enterprise, when): see LEAKAGE.md for who may read entries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from veil.errors import InvalidArgument
from veil.uscc import validate_uscc
from veil.v1 import gateway_pb2

SCHEMA_VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_ID_LEN = 128
MAX_DETAIL_ITEMS = 16

_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_ACTOR = re.compile(r"[a-z]+/[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_DETAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/,-]{0,1023}")
"""A detail value: an identifier, a hex hash, or a comma-separated list of identifiers
(e.g. catalog field ids) -- never free text: no spaces, no CJK, no '+' or '='."""
_UNIT = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = (
    "actor",
    "datasets",
    "detail",
    "enterprise",
    "grant",
    "outcome",
    "providers",
    "providers_failed",
    "purpose",
    "request_id",
    "result_sha256",
    "time",
    "type",
    "v",
)


class MalformedEntry(InvalidArgument):
    """Bytes that are not a canonical schema-v1 log entry, or an event that cannot
    be encoded as one (the message names the offending key)."""


class EventType(StrEnum):
    """The event vocabulary.  The issue that adds an operation records its event."""

    LOOKUP = "enterprise.lookup"  # public credit report (GatewayService.LookupEnterprise)
    AGGREGATION = "aggregation.run"  # physical aggregation from one provider
    VERIFICATION = "enterprise.verify"
    SCORE = "enterprise.score"
    FETCH = "enterprise.fetch"  # authorized detail fetch
    BATCH = "batch.run"
    GRANT_CREATED = "grant.created"
    GRANT_REVOKED = "grant.revoked"
    INSTITUTION_ADMITTED = "institution.admitted"
    INSTITUTION_SUSPENDED = "institution.suspended"
    MODEL_TRAINED = "model.trained"  # a trained model entered the registry (ImportModel)
    MODEL_DEPLOYED = "model.deployed"  # approved (installed at providers) or retired
    KEY_ROTATED = "key.rotated"


class Scope(IntEnum):
    """Who may read which entries; values equal ``audit_pb2.AuditScope``."""

    UNSPECIFIED = 0
    ALL = 1
    PROVIDER = 2
    ENTERPRISE = 3
    INSTITUTION = 4


@dataclass(frozen=True)
class AuditEvent:
    """One event to log.  ``time`` is set when it is recorded."""

    type: str
    actor: str
    request_id: str = ""
    enterprise: str = ""
    grant: str = ""
    purpose: str = ""
    providers: Sequence[str] = ()
    providers_failed: Sequence[str] = ()
    datasets: Mapping[str, int] = field(default_factory=dict)
    result_sha256: str = ""
    outcome: str = "OK"
    detail: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A decoded, validated log entry."""

    type: str
    time: dt.datetime
    actor: str
    request_id: str
    enterprise: str
    grant: str
    purpose: str
    providers: tuple[str, ...]
    providers_failed: tuple[str, ...]
    datasets: dict[str, int]
    result_sha256: str
    outcome: str
    detail: dict[str, str | int]

    @property
    def time_text(self) -> str:
        return format_time(self.time)

    def asked(self, unit: str) -> bool:
        """Whether provider ``unit`` was asked (answered or not)."""
        return unit in self.providers or unit in self.providers_failed

    def to_json(self) -> dict[str, Any]:
        return _as_dict(self, self.time_text)


def format_time(t: dt.datetime) -> str:
    """RFC 3339 UTC with a fixed width, so text order is time order."""
    if t.tzinfo is None:
        raise MalformedEntry("time must be timezone-aware")
    return t.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> dt.datetime:
    """Parse an RFC 3339 time (a date alone means its midnight UTC)."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{text!r} is not an RFC 3339 time") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _check(key: str, value: str, pattern: re.Pattern[str], *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise MalformedEntry(f"{key} must be a string")
    if (value or not empty) and not pattern.fullmatch(value):
        raise MalformedEntry(f"{key} {value[:40]!r} is not an identifier of the expected form")
    return value


def _units(key: str, units: Sequence[str]) -> list[str]:
    if isinstance(units, str):
        raise MalformedEntry(f"{key} must be a list of provider units")
    out = sorted({_check(key, u, _UNIT, empty=False) for u in units})
    if len(out) != len(units):
        raise MalformedEntry(f"{key} lists a provider twice")
    return out


def _validated(ev: AuditEvent | Entry) -> dict[str, Any]:
    _check("type", ev.type, _TYPE, empty=False)
    _check("actor", ev.actor, _ACTOR, empty=False)
    for key in ("request_id", "grant", "purpose"):
        _check(key, getattr(ev, key), _IDENT)
    _check("outcome", ev.outcome, re.compile(r"[A-Z_]{2,32}"), empty=False)
    if ev.enterprise:
        try:
            validate_uscc(ev.enterprise)
        except InvalidArgument as exc:
            raise MalformedEntry(f"enterprise: {exc.message}") from None
    if ev.result_sha256 and not _HEX64.fullmatch(ev.result_sha256):
        raise MalformedEntry("result_sha256 must be 64 lower-case hex digits")
    providers = _units("providers", ev.providers)
    failed = _units("providers_failed", ev.providers_failed)
    if set(providers) & set(failed):
        raise MalformedEntry("a provider cannot both answer and fail")
    datasets = {}
    for ds, rows in dict(ev.datasets).items():
        _check("datasets", ds, _UNIT, empty=False)
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise MalformedEntry(f"datasets[{ds}] must be a row count")
        datasets[ds] = rows
    detail = dict(ev.detail)
    if len(detail) > MAX_DETAIL_ITEMS:
        raise MalformedEntry(f"detail has more than {MAX_DETAIL_ITEMS} items")
    for k, v in detail.items():
        _check("detail", k, _UNIT, empty=False)
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise MalformedEntry(f"detail[{k}] must be an identifier, a hash or an integer")
        if isinstance(v, str):
            _check(f"detail[{k}]", v, _DETAIL)
    return {
        "actor": ev.actor,
        "datasets": datasets,
        "detail": detail,
        "enterprise": ev.enterprise,
        "grant": ev.grant,
        "outcome": ev.outcome,
        "providers": providers,
        "providers_failed": failed,
        "purpose": ev.purpose,
        "request_id": ev.request_id,
        "result_sha256": ev.result_sha256,
        "type": ev.type,
        "v": SCHEMA_VERSION,
    }


def _as_dict(ev: AuditEvent | Entry, time_text: str) -> dict[str, Any]:
    out = _validated(ev)
    out["time"] = time_text
    return out


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def encode_entry(event: AuditEvent, time: dt.datetime) -> bytes:
    """The canonical entry bytes for ``event`` at ``time``; raises :class:`MalformedEntry`."""
    return _dumps(_as_dict(event, format_time(time)))


def decode_entry(leaf: bytes) -> Entry:
    """Parse and validate entry bytes; they must be exactly the canonical encoding."""
    try:
        obj = json.loads(leaf.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedEntry("log entry is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or tuple(sorted(obj)) != _KEYS:
        raise MalformedEntry("log entry does not have the schema v1 keys")
    if obj["v"] != SCHEMA_VERSION:
        raise MalformedEntry(f"unknown log entry schema version {obj['v']!r}")
    time_text = obj["time"]
    if not isinstance(time_text, str):
        raise MalformedEntry("time must be a string")
    try:
        time = dt.datetime.strptime(time_text, TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise MalformedEntry(f"time {time_text[:40]!r} is not RFC 3339 UTC") from None
    for key in ("providers", "providers_failed"):
        if not isinstance(obj[key], list):
            raise MalformedEntry(f"{key} must be a list")
    for key in ("datasets", "detail"):
        if not isinstance(obj[key], dict):
            raise MalformedEntry(f"{key} must be an object")
    entry = Entry(
        type=obj["type"],
        time=time,
        actor=obj["actor"],
        request_id=obj["request_id"],
        enterprise=obj["enterprise"],
        grant=obj["grant"],
        purpose=obj["purpose"],
        providers=tuple(obj["providers"]),
        providers_failed=tuple(obj["providers_failed"]),
        datasets=dict(obj["datasets"]),
        result_sha256=obj["result_sha256"],
        outcome=obj["outcome"],
        detail=dict(obj["detail"]),
    )
    if _dumps(entry.to_json()) != leaf:
        raise MalformedEntry("log entry is not in canonical form")
    return entry


def concerns(entry: Entry, scope: Scope, subject: str) -> bool:
    """Whether a caller with ``scope``/``subject`` may read ``entry``.

    Providers see every entry in which they were asked (answered or failed),
    enterprises every entry about their USCC, institutions the entries they are
    the actor of; auditors and administrators see everything.
    """
    if scope == Scope.ALL:
        return True
    if scope == Scope.PROVIDER:
        return entry.asked(subject)
    if scope == Scope.ENTERPRISE:
        return bool(subject) and entry.enterprise == subject
    if scope == Scope.INSTITUTION:
        return bool(subject) and entry.actor == subject
    return False


def lookup_result_digest(response: gateway_pb2.GatewayLookupResponse) -> str:
    """``result_sha256`` of a lookup: SHA-256 over the gateway response the
    institution receives, serialized deterministically with ``log_index`` unset.

    The institution recomputes it from the answer it holds and compares it with the
    logged entry, so the log commits to exactly what was handed out.
    """
    copy = gateway_pb2.GatewayLookupResponse()
    copy.CopyFrom(response)
    copy.ClearField("log_index")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
