"""The provider's side of full-coverage evaluation (全覆盖信用评价) with CKKS.

Per job the platform sends the CKKS *public* context and this provider's weights, each
encrypted and replicated over all 4096 slots (:meth:`ProviderBatch.install`).  Per chunk
of up to 4096 enterprises the provider computes, slot by slot,

    Σ_linear Enc(slope)⊙x + Enc(missing)⊙1[x missing]  +  Σ_table Σ_b Enc(t_b)⊙1[bin = b]

(plaintext–ciphertext products only), then adds a *fresh* public-key encryption of its
pairwise mask vector plus Gaussian flooding noise (:mod:`veil.scoring.ckks`), which both
re-randomizes the ciphertext and drowns the data-dependent CKKS error.  Feature values
follow the same code and missing-value policy as online scoring.

Feature values of the whole store are computed once per job (one pass over each dataset
the model reads) and kept in memory for the job's lifetime; at most ``MAX_JOBS`` jobs.
Every chunk is written to the provider's ledger (which job, which chunk, how many
enterprises, a digest of their codes).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import tenseal as ts

from veil.catalog import Catalog
from veil.crypto.masks import pairwise_mask
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied, VeilError
from veil.scoring.ckks import SLOTS, flood_noise, load_public_context, mask_vector
from veil.scoring.features import feature_value
from veil.scoring.part import ModelPart, PartFeature, parse_part
from veil.store import IDENTITY_USCC, ProviderStore
from veil.v1 import provider_scoring_pb2 as pb

if TYPE_CHECKING:
    from provider_node.mask_keys import ProviderMaskKeys
    from provider_node.scoring import ProviderScoringServicer

MAX_JOBS = 4
MASK_CONTEXT = "batch"
SELECTABLE_FIELDS = frozenset({"samr_industry_code"})
MAX_FLOOD_SIGMA = 1e-3
MIN_FLOOD_SIGMA = 2.0**-24
F64 = npt.NDArray[np.float64]


@dataclass
class BatchJob:
    job_id: str
    part: ModelPart
    context: ts.Context
    weights: dict[str, list[ts.CKKSVector]]
    flood_sigma: float
    mask_bound: float
    slots: int
    values: dict[str, dict[str, float | str | None]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_values(
    store: ProviderStore, part: ModelPart, catalog: Catalog
) -> dict[str, dict[str, float | str | None]]:
    """feature → uscc → value for every enterprise this provider holds rows of."""
    by_ds: dict[str, list[str]] = {}
    for fid in part.fields:
        by_ds.setdefault(catalog.field(fid).dataset_id, []).append(fid)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ds_id, fids in by_ds.items():
        for batch in store.iter_dataset(ds_id, sorted(set(fids)), batch_size=20_000):
            for row in batch:
                uscc = row.pop(IDENTITY_USCC)
                row.pop("enterprise_name", None)
                rows.setdefault(uscc, {}).setdefault(ds_id, []).append(row)
    return {
        f.spec.name: {u: feature_value(f.spec, r) for u, r in rows.items()} for f in part.features
    }


def _linear_columns(
    f: PartFeature, values: Mapping[str, float | str | None], usccs: Sequence[str]
) -> tuple[F64, F64]:
    default = feature_value(f.spec, {})
    x = np.zeros(SLOTS)
    missing = np.zeros(SLOTS)
    for i, u in enumerate(usccs):
        v = values.get(u, default)
        if v is None:
            missing[i] = 1.0
        elif isinstance(v, str):
            raise InvalidArgument(f"feature {f.spec.name}: a linear feature needs a number")
        else:
            x[i] = v
    return x, missing


def _table_index(
    f: PartFeature, values: Mapping[str, float | str | None], usccs: Sequence[str]
) -> npt.NDArray[np.int64]:
    default = feature_value(f.spec, {})
    idx = np.full(SLOTS, -2, dtype=np.int64)  # -2: empty slot, -1: missing
    for i, u in enumerate(usccs):
        v = values.get(u, default)
        idx[i] = -1 if v is None else f.index(v)
    return idx


def partial_vector(job: BatchJob, usccs: Sequence[str]) -> ts.CKKSVector | None:
    """``Σ Enc(w)⊙plaintext`` for one chunk, or None if every product vanishes.

    NOT fit to leave the provider: see :func:`protect_vector`."""
    assert job.values is not None
    acc: ts.CKKSVector | None = None

    def add(ct: ts.CKKSVector, column: F64) -> None:
        nonlocal acc
        if not column.any():
            return
        product = ct * column.tolist()
        acc = product if acc is None else acc + product

    for f in job.part.features:
        cts = job.weights[f.spec.name]
        values = job.values[f.spec.name]
        if f.linear:
            x, missing = _linear_columns(f, values, usccs)
            add(cts[0], x)
            add(cts[1], missing)
        else:
            idx = _table_index(f, values, usccs)
            for b in range(f.table_size):
                add(cts[b], (idx == b).astype(np.float64))
            add(cts[-1], (idx == -1).astype(np.float64))
    return acc


def protect_vector(
    job: BatchJob, acc: ts.CKKSVector | None, mask: F64, *, flood: bool = True
) -> ts.CKKSVector:
    """Add a fresh public-key encryption of ``mask + noise``: masks, re-randomizes, floods."""
    noise = flood_noise(job.slots, job.flood_sigma) if flood else np.zeros(job.slots)
    fresh = ts.ckks_vector(job.context, (mask + noise).tolist())
    return fresh if acc is None else acc + fresh


class ProviderBatch:
    def __init__(
        self,
        *,
        unit: str,
        catalog: Catalog,
        store: ProviderStore,
        masks: ProviderMaskKeys | None,
    ) -> None:
        self.unit = unit
        self.catalog = catalog
        self.store = store
        self.masks = masks
        self.jobs: OrderedDict[str, BatchJob] = OrderedDict()

    def close(self) -> None:
        self.jobs.clear()

    async def install(
        self, parts: AsyncIterator[pb.InstallBatchPart], servicer: ProviderScoringServicer
    ) -> pb.InstallBatchResponse:
        header: pb.InstallBatchPart | None = None
        job: BatchJob | None = None
        received: dict[str, dict[int, bytes]] = {}
        try:
            async for msg in parts:
                if header is None:
                    header = msg
                    job = await asyncio.to_thread(self._new_job, msg)
                    continue
                if not msg.feature or msg.feature not in job.weights:  # type: ignore[union-attr]
                    raise InvalidArgument(f"unknown feature {msg.feature[:64]!r} in the batch part")
                received.setdefault(msg.feature, {})[msg.index] = msg.ciphertext
            if header is None or job is None:
                raise InvalidArgument("InstallBatch needs a header message")
            await asyncio.to_thread(self._weights, job, received)
        except VeilError as exc:
            await servicer._record(
                "InstallBatch", header.job_id if header else "-", None, "refused", exc.message
            )
            raise
        self.jobs[job.job_id] = job
        self.jobs.move_to_end(job.job_id)
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        await servicer._record(
            "InstallBatch",
            job.job_id,
            None,
            "answered",
            f"job={job.job_id};model={job.part.model_id};version={job.part.version};"
            f"sha256={job.part.sha256}",
        )
        return pb.InstallBatchResponse(job_id=job.job_id)

    def _new_job(self, header: pb.InstallBatchPart) -> BatchJob:
        if not header.job_id:
            raise InvalidArgument("job_id is required")
        part = parse_part(header.part_json, provider=self.unit, catalog=self.catalog)
        if not MIN_FLOOD_SIGMA <= header.flood_sigma <= MAX_FLOOD_SIGMA:
            raise PermissionDenied(
                f"flooding noise σ must be in [{MIN_FLOOD_SIGMA:g}, {MAX_FLOOD_SIGMA:g}]: "
                "less would not hide the CKKS error"
            )
        if not 2.0**20 <= header.mask_bound <= 2.0**40:
            raise PermissionDenied("mask bound must be in [2^20, 2^40]")
        if header.slots != SLOTS:
            raise InvalidArgument(f"slots must be {SLOTS}")
        context = load_public_context(header.ckks_public_context)
        weights: dict[str, list[ts.CKKSVector]] = {f.spec.name: [] for f in part.features}
        return BatchJob(
            header.job_id, part, context, weights, header.flood_sigma, header.mask_bound, SLOTS
        )

    def _weights(self, job: BatchJob, received: Mapping[str, Mapping[int, bytes]]) -> None:
        for f in job.part.features:
            got = received.get(f.spec.name, {})
            if sorted(got) != list(range(f.ciphertexts)):
                raise InvalidArgument(
                    f"feature {f.spec.name}: expected {f.ciphertexts} encrypted weights"
                )
            try:
                job.weights[f.spec.name] = [
                    ts.ckks_vector_from(job.context, got[i]) for i in range(f.ciphertexts)
                ]
            except Exception:
                raise InvalidArgument(f"feature {f.spec.name}: a weight does not parse") from None

    def _mask(self, job: BatchJob, peers: Mapping[str, bytes], chunk: int) -> F64:
        """Σ_j ±mask vector of the pair (me, j); + when my unit id sorts first.  Names are
        provider units, as in ``ProviderMaskKeys.mask`` (``peers`` is keyed by unit)."""
        assert self.masks is not None
        me = self.masks.unit
        total = np.zeros(job.slots)
        for peer, public in sorted(peers.items()):
            seed = pairwise_mask(
                self.masks.key,
                me,
                public,
                peer,
                request_id=f"{job.job_id}:{chunk}",
                context=MASK_CONTEXT,
                modulus=2**256,
            )
            vector = mask_vector(seed, job.slots, job.mask_bound)
            total += vector if me < peer else -vector
        return total

    async def partial(
        self, request: pb.BatchPartialRequest, servicer: ProviderScoringServicer
    ) -> pb.BatchPartialResponse:
        job = self.jobs.get(request.job_id)
        rid = f"{request.job_id}:{request.chunk}"
        if job is None:
            raise FailedPrecondition(
                f"batch job {request.job_id[:64]} is not installed at provider {self.unit!r}",
                details={"reason": "not_installed"},
            )
        usccs = list(request.usccs)
        digest = hashlib.sha256("\n".join(usccs).encode()).hexdigest()
        try:
            if not usccs or len(usccs) > job.slots:
                raise InvalidArgument(f"a chunk holds 1..{job.slots} enterprises")
            peers = servicer.participants(job.part, request.participants)
            absent = sorted(set(job.part.providers) - {p.unit for p in request.participants})
            if absent:
                raise PermissionDenied(
                    f"a batch chunk needs every provider of the model; {', '.join(absent)} absent"
                )
        except VeilError as exc:
            await servicer._record("BatchPartial", rid, None, "refused", exc.message)
            raise
        await servicer._record(
            "BatchPartial",
            rid,
            None,
            "answered",
            f"job={job.job_id};chunk={request.chunk};enterprises={len(usccs)};"
            f"usccs_sha256={digest};model={job.part.model_id};version={job.part.version}",
            job.part.fields,
        )

        def compute() -> bytes:
            with job.lock:
                if job.values is None:
                    job.values = _load_values(self.store, job.part, self.catalog)
            acc = partial_vector(job, usccs)
            out = protect_vector(job, acc, self._mask(job, peers, request.chunk))
            return bytes(out.serialize())

        return pb.BatchPartialResponse(
            job_id=job.job_id, chunk=request.chunk, ciphertext=await asyncio.to_thread(compute)
        )

    async def select(
        self, request: pb.SelectEnterprisesRequest, servicer: ProviderScoringServicer
    ) -> pb.SelectEnterprisesResponse:
        try:
            if request.field not in SELECTABLE_FIELDS:
                raise PermissionDenied(
                    f"selection by {request.field[:64]!r} is not allowed "
                    f"(only {', '.join(sorted(SELECTABLE_FIELDS))})"
                )
            if self.catalog.field(request.field).provider != self.unit:
                raise InvalidArgument(f"field {request.field} is not held by {self.unit}")
            prefixes = [p for p in request.prefixes if p]
            if not prefixes or any(len(p) > 8 for p in prefixes):
                raise InvalidArgument("prefixes must be 1..8 characters each")
        except VeilError as exc:
            await servicer._record(
                "SelectEnterprises", request.request_id or "-", None, "refused", exc.message
            )
            raise
        await servicer._record(
            "SelectEnterprises",
            request.request_id or "-",
            None,
            "answered",
            f"field={request.field};prefixes={','.join(prefixes)}",
            [request.field],
        )
        dataset = self.catalog.field(request.field).dataset_id

        def scan() -> list[str]:
            out = []
            for batch in self.store.iter_dataset(dataset, [request.field], batch_size=20_000):
                for row in batch:
                    value = row.get(request.field)
                    if isinstance(value, str) and value.startswith(tuple(prefixes)):
                        out.append(row[IDENTITY_USCC])
            return sorted(set(out))

        return pb.SelectEnterprisesResponse(usccs=await asyncio.to_thread(scan))
