"""ProviderScoring: a provider's encrypted partial score, and why the platform learns nothing.

Install.  The platform sends this provider its part of a model version: the definitions
of its features (:mod:`veil.scoring.part`, no weights) and, per feature, the weights
encrypted under the platform's Paillier key — ``Enc(slope·2^60), Enc(missing·2^100)``
for a linear feature, ``Enc(t_i·2^100)…, Enc(missing·2^100)`` for a table (binned, WOE,
one-hot).  The part is kept in the provider's own database, so a restart keeps it.

Score one enterprise (:meth:`ProviderScoringServicer.PartialScore`):

1. the provider checks the platform's request token (``use`` must be ``score``) and
   the enterprise's signed grant itself (:class:`provider_node.guard.Guard`), and that
   the participants are the model's providers — at least two, and any missing one
   allowed by the model card; every participant's mask key is verified against the CA;
2. it reads its own records and computes each feature value
   (:func:`veil.scoring.features.feature_value`, the documented missing-value policy);
3. ``c = Π_linear Enc(slope_j)^{x_j·2^40} · Π_table Enc(t_j[bin_j])`` (missing values
   pick ``Enc(missing_j)``) — a product of *selected* ciphertexts for binned features,
   no exponentiation; one multi-exponentiation for the linear ones
   (:func:`unprotected_partial`);
4. ``c · g^{m_i}`` with its pairwise mask ``m_i`` (X25519 + HKDF, salt = request id):
   the masks of all participants sum to 0 mod n, so only the total is meaningful;
5. ``c · ρ`` with a fresh randomizer ρ (:func:`protect`): without it the platform, who
   made every ``Enc(w)`` and knows their randomness, could recompute the product for
   each guess of a low-entropy feature vector and compare — ``tests/test_scoring_attacks``
   shows that attack succeeding on exactly the unprotected variants.

Only the result of step 5 is ever serialized (``ciphertext_bytes`` refuses a stale one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from provider_node.guard import Guard
from provider_node.ledger import Ledger
from provider_node.mask_keys import ProviderMaskKeys
from provider_node.scoring_batch import UNIFORM_BELOW, ProviderBatch
from provider_node.service import ProviderServicer
from veil._internal.status import item_results
from veil.catalog import Catalog
from veil.config import NodeConfig
from veil.crypto.paillier import (
    Ciphertext,
    DotPlan,
    PublicKey,
    add_many,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    prepare_dot,
    public_key_from_bytes,
    rerandomize,
)
from veil.crypto.pool import RandomnessPool
from veil.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    VeilError,
)
from veil.scoring.ckks import SLOTS
from veil.scoring.features import feature_value
from veil.scoring.part import VALUE, ModelPart, parse_part
from veil.server import ServiceBinding, current_peer
from veil.store import ProviderStore, write_transaction
from veil.tokens import RequestClaims
from veil.tokens.grants import Grant
from veil.uscc import validate_uscc
from veil.v1 import masks_pb2, provider_scoring_pb2_grpc
from veil.v1 import provider_scoring_pb2 as pb

log = logging.getLogger("veil.provider.scoring")

USE = "score"
MASK_CONTEXT = "score"
POOL_SIZE = 32
MAX_BATCH_ITEMS = 256  # PartialScores: requests per batch
MIN_PARTICIPANTS = 2

metadata = MetaData()
installed_parts = Table(
    "veil_provider_model_parts",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("key_id", String(64), nullable=False),
    Column("request", LargeBinary, nullable=False),  # the InstallModelRequest, as received
    Column("installed_at", DateTime(timezone=True), nullable=False),
)


class NotInstalled(FailedPrecondition):
    """The model part is not (or no longer) installed here; the platform installs it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, details={"reason": "not_installed"})


@dataclass
class InstalledPart:
    """A model part ready to score: its definitions and the encrypted weights."""

    part: ModelPart
    key_id: str
    public_key: PublicKey
    slopes: DotPlan | None  # over Enc(slope_j) of the linear features, in part order
    slope_cts: dict[str, Ciphertext]  # linear features: Enc(slope)
    tables: dict[str, list[Ciphertext]]  # table features: Enc(t_i)
    missing: dict[str, Ciphertext]  # every feature: Enc(missing contribution)

    @property
    def linear(self) -> list[str]:
        return [f.spec.name for f in self.part.features if f.linear]


def build_installed(request: pb.InstallModelRequest, unit: str, catalog: Catalog) -> InstalledPart:
    """Validate an InstallModelRequest and precompute what scoring needs."""
    part = parse_part(request.part_json, provider=unit, catalog=catalog)
    if (part.model_id, part.version) != (request.model_id, request.version):
        raise InvalidArgument("model part does not match the request's model and version")
    key = public_key_from_bytes(request.paillier_n)
    if key.key_id != request.key_id:
        raise InvalidArgument("key_id does not match the public key")
    by_name = {f.name: list(f.ciphertexts) for f in request.features}
    if set(by_name) != {f.spec.name for f in part.features} or len(by_name) != len(
        request.features
    ):
        raise InvalidArgument("encrypted weights do not match the part's features")
    slopes: dict[str, Ciphertext] = {}
    tables: dict[str, list[Ciphertext]] = {}
    missing: dict[str, Ciphertext] = {}
    for f in part.features:
        raw = by_name[f.spec.name]
        if len(raw) != f.ciphertexts:
            raise InvalidArgument(
                f"feature {f.spec.name}: {len(raw)} ciphertexts, expected {f.ciphertexts}"
            )
        cts = [ciphertext_from_bytes(key, b) for b in raw]  # MalformedCiphertext names why
        missing[f.spec.name] = cts[-1]
        if f.linear:
            slopes[f.spec.name] = cts[0]
        else:
            tables[f.spec.name] = cts[:-1]
    plan = prepare_dot(list(slopes.values()), exponent_bits=64) if slopes else None
    return InstalledPart(part, request.key_id, key, plan, slopes, tables, missing)


def fixed_value(x: float) -> int:
    """A linear feature's value as the provider's exponent, ``round(x·2^40)``."""
    if not math.isfinite(x):
        raise InvalidArgument("feature value is not finite")
    return VALUE.to_int(x)


def unprotected_partial(
    installed: InstalledPart, rows: Mapping[str, Sequence[Mapping[str, Any]]]
) -> Ciphertext:
    """``Enc(Σ contributions of my features)`` for one enterprise's rows.

    NOT safe to send: its randomness is a product of the randomness the platform chose
    for ``Enc(w)``, so the platform can test guesses of the features.  Only
    :func:`protect` (mask + fresh randomizer) makes it fit to leave the process.
    """
    terms: list[Ciphertext] = []
    exponents: list[int] = []
    for f in installed.part.features:
        value = feature_value(f.spec, rows)
        name = f.spec.name
        if value is None:
            terms.append(installed.missing[name])
            if f.linear:
                exponents.append(0)
            continue
        if f.linear:
            if isinstance(value, str):
                raise InvalidArgument(f"feature {name}: a linear feature needs a number")
            exponents.append(fixed_value(value))
        else:
            terms.append(installed.tables[name][f.index(value)])
    if installed.slopes is not None:
        terms.append(installed.slopes.dot(exponents))
    return add_many(terms)


def protect(c: Ciphertext, mask: int, pool: RandomnessPool | None) -> Ciphertext:
    """Add the pairwise mask (``c·g^m``) and re-randomize (``·ρ``): what may be sent."""
    return rerandomize(add_plain(c, mask), pool)


class PartStore:
    """Installed parts in the provider's own database, and in memory."""

    def __init__(self, engine: Engine, unit: str, catalog: Catalog) -> None:
        self.engine = engine
        self.unit = unit
        self.catalog = catalog
        self.cache: dict[tuple[str, int], InstalledPart] = {}
        metadata.create_all(engine)

    def put(self, request: pb.InstallModelRequest) -> InstalledPart:
        installed = build_installed(request, self.unit, self.catalog)
        with self.engine.begin() as conn:
            conn.execute(
                delete(installed_parts).where(
                    installed_parts.c.model_id == request.model_id,
                    installed_parts.c.version == request.version,
                )
            )
            conn.execute(
                insert(installed_parts).values(
                    model_id=request.model_id,
                    version=request.version,
                    key_id=request.key_id,
                    request=request.SerializeToString(),
                    installed_at=dt.datetime.now(dt.UTC),
                )
            )
        self.cache[(request.model_id, request.version)] = installed
        return installed

    def cached(self, model_id: str, version: int, key_id: str) -> InstalledPart | None:
        installed = self.cache.get((model_id, version))
        return installed if installed is not None and installed.key_id == key_id else None

    def newest_key(self) -> PublicKey | None:
        """The key of the most recently installed part, to fill its pool at start."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(installed_parts.c.request)
                .order_by(installed_parts.c.installed_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        try:
            return public_key_from_bytes(pb.InstallModelRequest.FromString(row.request).paillier_n)
        except (VeilError, DecodeError):
            return None  # the first request for it reports the problem

    def get(self, model_id: str, version: int, key_id: str) -> InstalledPart:
        installed = self.cache.get((model_id, version))
        if installed is None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(installed_parts.c.request).where(
                        installed_parts.c.model_id == model_id,
                        installed_parts.c.version == version,
                    )
                ).first()
            if row is not None:
                request = pb.InstallModelRequest.FromString(row.request)
                installed = build_installed(request, self.unit, self.catalog)
                self.cache[(model_id, version)] = installed
        if installed is None or installed.key_id != key_id:
            raise NotInstalled(
                f"model {model_id}@{version} under key {key_id} is not installed at "
                f"provider {self.unit!r}"
            )
        return installed


@dataclass(frozen=True)
class _Admitted:
    """A PartialScore request that passed every stateless check."""

    request: pb.PartialScoreRequest
    installed: InstalledPart
    peers: dict[str, bytes]
    claims: RequestClaims
    grant: Grant
    guard: Guard
    pool: RandomnessPool
    caller: str
    detail: str
    datasets: list[str]


class ProviderScoringServicer(provider_scoring_pb2_grpc.ProviderScoringServicer):
    def __init__(
        self,
        *,
        unit: str,
        catalog: Catalog,
        store: ProviderStore,
        ledger: Ledger,
        guard: Guard | None,
        masks: ProviderMaskKeys | None,
        parts: PartStore,
        randomizer: str = "full",
        batch: ProviderBatch | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.unit = unit
        self.catalog = catalog
        self.store = store
        self.ledger = ledger
        self.guard = guard
        self.masks = masks
        self.parts = parts
        self.short_exponent = randomizer == "djn"
        self.batch = batch
        self.pool_size = pool_size
        self._pools: dict[str, RandomnessPool] = {}
        self.retired_inline = 0  # randomizers computed inline by pools since closed
        key = parts.newest_key()
        if key is not None:  # filled before the first request (provider_node/warm_pools.py)
            log.info("filling the randomizer pool for model key %s", key.key_id)
            self.pool(key)

    def pools(self) -> list[RandomnessPool]:
        return list(self._pools.values())

    def pool(self, key: PublicKey) -> RandomnessPool:
        pool = self._pools.get(key.key_id)
        if pool is None:
            pool = RandomnessPool(key, self.pool_size, short_exponent=self.short_exponent)
            self._pools[key.key_id] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            self.retired_inline += pool.inline_count
            pool.close()
        self._pools.clear()
        if self.batch is not None:
            self.batch.close()

    def _caller(self) -> str:
        peer = current_peer.get()
        return f"{peer.role}/{peer.name}" if peer else "unauthenticated"

    async def _record(
        self,
        method: str,
        request_id: str,
        uscc: str | None,
        outcome: str,
        detail: str,
        fields: Sequence[str] = (),
    ) -> None:
        datasets = sorted({self.catalog.field(f).dataset_id for f in fields})
        await asyncio.to_thread(
            self.ledger.record,
            request_id=request_id,
            method=method,
            caller=self._caller(),
            uscc=uscc,
            datasets=datasets,
            outcome=outcome,
            detail=detail[:2000],
        )

    async def InstallModel(
        self, request: pb.InstallModelRequest, context: Any
    ) -> pb.InstallModelResponse:
        try:
            installed = await asyncio.to_thread(self.parts.put, request)
        except VeilError as exc:
            await self._record(
                "InstallModel",
                f"{request.model_id}@{request.version}"[:64],
                None,
                "refused",
                exc.message,
            )
            raise
        self.pool(installed.public_key)  # start precomputing randomizers now
        await self._record(
            "InstallModel",
            f"{request.model_id}@{request.version}"[:64],
            None,
            "answered",
            f"model={request.model_id};version={request.version};key={request.key_id};"
            f"sha256={installed.part.sha256};features={len(installed.part.features)}",
        )
        return pb.InstallModelResponse(
            model_id=request.model_id, version=request.version, key_id=request.key_id
        )

    def participants(
        self, part: ModelPart, signed: Sequence[masks_pb2.SignedMaskKey]
    ) -> dict[str, bytes]:
        """Check the roster against the model part and verify every other participant's
        mask key (against the CA and its node identity); node name → X25519 key."""
        if self.masks is None:
            raise FailedPrecondition(f"provider {self.unit!r} has no mask key configured")
        units = [s.unit for s in signed]
        if len(set(units)) != len(units):
            raise InvalidArgument("a participant is listed twice")
        if self.unit not in units:
            raise InvalidArgument(f"participants do not include this provider ({self.unit})")
        if len(units) < MIN_PARTICIPANTS:
            raise PermissionDenied(
                "a masked partial score needs at least two participants: alone, the mask "
                "would be zero and the platform would read this provider's partial score"
            )
        strangers = sorted(set(units) - set(part.providers))
        if strangers:
            raise InvalidArgument(f"participants {', '.join(strangers)} are not in the model")
        absent = sorted(set(part.providers) - set(units))
        if not part.may_run_without(absent):
            raise PermissionDenied(
                f"model {part.model_id}@{part.version} does not allow scoring without "
                f"{', '.join(absent)}"
            )
        return self.masks.peers(signed)

    async def PartialScore(
        self, request: pb.PartialScoreRequest, context: Any
    ) -> pb.PartialScoreResponse:
        (answer,) = await self._partial_all([request])
        if isinstance(answer, VeilError):
            raise answer
        return pb.PartialScoreResponse(request_id=request.request_id, ciphertext=answer)

    async def PartialScores(
        self, request: pb.PartialScoresRequest, context: Any
    ) -> pb.PartialScoresResponse:
        """PartialScore for each request at once, each answer or refusal in its place."""
        items = list(request.requests)
        if not items or len(items) > MAX_BATCH_ITEMS:
            raise InvalidArgument(f"a batch has 1 to {MAX_BATCH_ITEMS} requests")
        answers = await self._partial_all(items)
        return pb.PartialScoresResponse(
            results=item_results(
                [
                    a
                    if isinstance(a, VeilError)
                    else pb.PartialScoreResponse(request_id=item.request_id, ciphertext=a)
                    for item, a in zip(items, answers, strict=True)
                ],
                pb.PartialScoreResult,
            )
        )

    async def _partial_all(
        self, items: Sequence[pb.PartialScoreRequest]
    ) -> list[bytes | VeilError]:
        """Admit each request (stateless checks, on the event loop), then answer them in
        one worker-thread hop and one transaction: an item refused there (a replayed id,
        a revoked grant) wrote nothing of its own (:meth:`_answer_partial`), every
        refusal is recorded in the ledger, all of it committed before any answer leaves.
        "Not installed" is no use of data: returned, not recorded (the platform installs
        and asks again)."""
        outcomes: list[_Admitted | VeilError] = []
        for item in items:
            try:
                outcomes.append(await self._admit_partial(item))
            except VeilError as exc:
                outcomes.append(exc)
        caller = self._caller()

        def answer() -> list[bytes | VeilError]:
            results: list[bytes | VeilError] = []
            with write_transaction(self.ledger.engine) as conn:
                for item, outcome in zip(items, outcomes, strict=True):
                    if isinstance(outcome, _Admitted):
                        try:
                            results.append(self._answer_partial(conn, outcome))
                            continue
                        except VeilError as exc:  # it wrote nothing (_answer_partial)
                            outcome = exc
                    results.append(outcome)
                    if not isinstance(outcome, NotInstalled):
                        self._refusal_on(conn, caller, item, outcome)
            return results

        return await asyncio.to_thread(answer)

    def _refusal_on(
        self, conn: Connection, caller: str, item: pb.PartialScoreRequest, exc: VeilError
    ) -> None:
        self.ledger.record(
            request_id=item.request_id,
            method="PartialScore",
            caller=caller,
            uscc=item.uscc or None,
            datasets=[],
            outcome="refused",
            detail=exc.message[:2000],
            conn=conn,
        )

    async def _admit_partial(self, request: pb.PartialScoreRequest) -> _Admitted:
        """Every check of a PartialScore that needs no state of this provider's: the
        installed part, the fields, the roster of mask keys, the request token and the
        grant.  Replay and revocation are checked in :meth:`_answer_partial`."""
        rid = request.request_id
        if self.guard is None:
            raise FailedPrecondition(
                f"provider {self.unit!r} is not configured for authorized requests"
            )
        if not rid:
            raise InvalidArgument("request_id is required")
        validate_uscc(request.uscc)
        installed = self.parts.cached(request.model_id, request.version, request.key_id)
        if installed is None:
            installed = await asyncio.to_thread(
                self.parts.get, request.model_id, request.version, request.key_id
            )
        part = installed.part
        if tuple(sorted(request.fields)) != part.fields:
            raise InvalidArgument(
                f"fields must be exactly this provider's fields of model "
                f"{part.model_id}@{part.version}: {', '.join(part.fields)}"
            )
        peers = self.participants(part, request.participants)
        claims, grant = await self.guard.authenticate(  # replay, revocation: in the answer
            request_id=rid,
            uscc=request.uscc,
            fields=list(request.fields),
            request_token=request.request_token,
            grant_jws=request.grant_jws,
        )
        if claims.use != USE:
            raise PermissionDenied(f"request token is for use {claims.use!r}, not {USE!r}")
        detail = (
            f"institution={claims.institution};purpose={claims.purpose};"
            f"loan_ref={claims.loan_ref};grant={grant.grant_id};"
            f"model={request.model_id};version={request.version};"
            f"participants={','.join(sorted(s.unit for s in request.participants))}"
        )
        return _Admitted(
            request=request,
            installed=installed,
            peers=peers,
            claims=claims,
            grant=grant,
            guard=self.guard,
            pool=self.pool(installed.public_key),
            caller=self._caller(),
            detail=detail[:2000],
            datasets=sorted({self.catalog.field(f).dataset_id for f in part.fields}),
        )

    def _answer_partial(self, conn: Connection, a: _Admitted) -> bytes:
        """Blocking, in a transaction: check the grant is not revoked, read my rows,
        compute ``Enc(partial)·g^mask·ρ``, then claim the request id (replay) and write
        the ledger row.  The claim comes after every step that can refuse, so a refused
        item wrote nothing (the batch needs no savepoint per item).  The answer may
        leave only once the transaction commits."""
        masks = self.masks
        assert masks is not None
        rid = a.request.request_id
        a.guard.refuse_revoked(conn, a.grant)
        rows = self.store.fetch(a.request.uscc, a.installed.part.fields)
        modulus = a.installed.public_key.n
        mask = masks.mask(a.peers, request_id=rid, context=MASK_CONTEXT, modulus=modulus)
        out = ciphertext_bytes(protect(unprotected_partial(a.installed, rows), mask, a.pool))
        a.guard.claim(conn, a.claims)
        self.ledger.record(
            request_id=rid,
            method="PartialScore",
            caller=a.caller,
            uscc=a.request.uscc,
            datasets=a.datasets,
            outcome="answered",
            detail=a.detail,
            conn=conn,
        )
        return out

    async def InstallBatch(self, request_iterator: Any, context: Any) -> pb.InstallBatchResponse:
        if self.batch is None:
            raise FailedPrecondition(f"provider {self.unit!r} does not serve batch evaluation")
        result: pb.InstallBatchResponse = await self.batch.install(request_iterator, self)
        return result

    async def BatchPartial(
        self, request: pb.BatchPartialRequest, context: Any
    ) -> pb.BatchPartialResponse:
        if self.batch is None:
            raise FailedPrecondition(f"provider {self.unit!r} does not serve batch evaluation")
        result: pb.BatchPartialResponse = await self.batch.partial(request, self)
        return result

    async def SelectEnterprises(
        self, request: pb.SelectEnterprisesRequest, context: Any
    ) -> pb.SelectEnterprisesResponse:
        if self.batch is None:
            raise FailedPrecondition(f"provider {self.unit!r} does not serve batch evaluation")
        result: pb.SelectEnterprisesResponse = await self.batch.select(request, self)
        return result


RANDOMIZERS = ("full", "djn")


def pool_size(section: Mapping[str, Any], path: str) -> int:
    """``[scoring] pool_size``: randomizers kept ready per key (default
    :data:`POOL_SIZE`); a burst larger than the pool computes the rest on the request path
    (``veil_randomizers_inline_total{service="scoring"}`` counts them)."""
    value = section.get("pool_size", POOL_SIZE)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4096:
        raise ConfigError(path, "scoring.pool_size", "must be an integer 0..4096")
    return value


def batch_uniform_below(section: Mapping[str, Any], path: str) -> int:
    """``[scoring] batch_uniform_below``: the chunk size below which a batch chunk is
    computed with every product (default :data:`~provider_node.scoring_batch.UNIFORM_BELOW`)."""
    value = section.get("batch_uniform_below", UNIFORM_BELOW)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SLOTS:
        raise ConfigError(path, "scoring.batch_uniform_below", f"must be an integer 0..{SLOTS}")
    return value


def scoring_binding(
    config: NodeConfig,
    provider: ProviderServicer,
    guard: Guard | None,
    masks: ProviderMaskKeys | None,
) -> tuple[ServiceBinding, ProviderScoringServicer]:
    """ProviderScoring on the provider's store, ledger, guard and mask key.

    ``[scoring] randomizer`` chooses how answers to the platform are re-randomized:
    ``"full"`` (default) — ``s^n`` with ``s`` uniform, statistically hiding even against
    the key holder, ~11 ms of CPU per answer at 2048 bits (precomputed in the background
    while idle); ``"djn"`` — Damgård–Jurik–Nielsen short exponents with a smeared
    subset, ~20× cheaper, computationally hiding against the key holder only under the
    short-exponent discrete-log assumption (~2^80 work at 2048 bits; see
    ``veil.crypto.pool`` and LEAKAGE.md).

    ``[scoring] pool_size`` (default 32, 0..4096): randomizers kept ready per key.

    ``[scoring] batch_uniform_below`` (default 256, 0..4096): batch chunks of fewer
    enterprises are computed with every product, so their timing shows nothing of their
    data (``provider_node.scoring_batch``); 4096 makes every chunk uniform, at up to
    twice the work per chunk.
    """
    section = config.section("scoring")
    randomizer = section.get("randomizer", "full")
    if randomizer not in RANDOMIZERS:
        raise ConfigError(str(config.path), "scoring.randomizer", "must be 'full' or 'djn'")
    uniform_below = batch_uniform_below(section, str(config.path))
    ready = pool_size(section, str(config.path))
    engine = provider.ledger.engine
    servicer = ProviderScoringServicer(
        unit=provider.unit,
        catalog=provider.catalog,
        store=provider.store,
        ledger=provider.ledger,
        guard=guard,
        masks=masks,
        parts=PartStore(engine, provider.unit, provider.catalog),
        randomizer=randomizer,
        pool_size=ready,
        batch=ProviderBatch(
            unit=provider.unit,
            catalog=provider.catalog,
            store=provider.store,
            masks=masks,
            uniform_below=uniform_below,
        ),
    )
    binding = ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["ProviderScoring"].full_name,
        register=lambda server: provider_scoring_pb2_grpc.add_ProviderScoringServicer_to_server(
            servicer, server
        ),
    )
    return binding, servicer
