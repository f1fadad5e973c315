"""The provider's side of full-coverage evaluation (全覆盖信用评价) with CKKS.

Per job the platform sends the CKKS *public* context and this provider's weights, each
encrypted and replicated over all 4096 slots (:meth:`ProviderBatch.install`).  Per chunk
of up to 4096 enterprises the provider computes, slot by slot,

    Σ_linear Enc(slope)⊙x + Enc(missing)⊙1[x missing]  +  Σ_table Σ_b Enc(t_b)⊙1[bin = b]

(plaintext–ciphertext products only, rearranged to need fewer of them: see
:func:`partial_vector`), then adds a *fresh* public-key encryption of its pairwise mask
vector plus Gaussian flooding noise (:mod:`veil.scoring.ckks`), which both re-randomizes
the ciphertext and drowns the data-dependent CKKS error.  Feature values are those of
online scoring (same values, same missing-value policy), computed column-wise.

Feature values of the whole store are computed once per job, during ``InstallBatch``
(one raw read per dataset the model uses, :meth:`ProviderStore.read_columns`, then numpy:
:func:`veil.scoring.features.batch_values`), and kept in memory for the job's lifetime —
per enterprise 18 bytes of key plus 8 per linear and 2 per table feature; at most
``MAX_JOBS`` jobs.  Every chunk is written to the provider's ledger (which job, which
chunk, how many enterprises, a digest of their codes) before its answer leaves.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tenseal as ts

from veil.catalog import Catalog
from veil.crypto.masks import pairwise_mask
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied, VeilError
from veil.scoring.ckks import (
    RESULT_SCALE,
    SLOTS,
    flood_noise,
    load_public_context,
    mask_vector,
)
from veil.scoring.features import (
    KEY_DTYPE,
    DatasetRows,
    Keys,
    batch_values,
    feature_value,
    key_array,
)
from veil.scoring.part import ModelPart, PartFeature, parse_part
from veil.store import IDENTITY_USCC, ProviderStore
from veil.v1 import provider_scoring_pb2 as pb

if TYPE_CHECKING:
    from provider_node.mask_keys import ProviderMaskKeys
    from provider_node.scoring import ProviderScoringServicer

MAX_JOBS = 4
UNIFORM_BELOW = 256
"""Default of ``[scoring] batch_uniform_below``: chunks of fewer enterprises are
computed with every product (:func:`partial_vector`, ``uniform``), so that their timing
says nothing of their data; larger chunks take the shortcuts, and their timing tells
how many distinct columns they hold (LEAKAGE.md)."""
MASK_CONTEXT = "batch"
SELECTABLE_FIELDS = frozenset({"samr_industry_code"})
MAX_FLOOD_SIGMA = 1e-3
MIN_FLOOD_SIGMA = 2.0**-24
F64 = npt.NDArray[np.float64]


@dataclass
class JobData:
    """A job's feature values over the provider's whole store, column-wise.

    ``known``: every enterprise with a row in a dataset the part reads (sorted keys);
    per linear feature its value on ``known`` (NaN = missing), per table feature its
    table index (-1 = missing); ``defaults``: the value of an enterprise the provider
    holds no row of (the documented missing-value policy: ``count``/``exists`` 0, else
    missing)."""

    known: Keys
    linear: dict[str, F64]
    index: dict[str, npt.NDArray[np.int16]]
    defaults: dict[str, float]


@dataclass
class BatchJob:
    job_id: str
    part: ModelPart
    context: ts.Context
    weights: dict[str, list[ts.CKKSVector]]
    flood_sigma: float
    mask_bound: float
    slots: int
    values: JobData | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _table_indices(f: PartFeature, values: F64 | npt.NDArray[np.object_]) -> npt.NDArray[np.int16]:
    """``f.index(v)`` of every value (-1 where missing): bins by ``searchsorted`` (=
    ``bisect_right``), categories through a map of the distinct values."""
    out = np.full(len(values), -1, dtype=np.int16)
    if not len(values):
        return out
    if values.dtype != object and not f.categories:
        x = np.asarray(values, dtype=np.float64)
        present = ~np.isnan(x)
        out[present] = np.searchsorted(np.asarray(f.edges), x[present], side="right")
        return out
    items = values.tolist()
    cache = {
        v: -1 if v is None or (isinstance(v, float) and math.isnan(v)) else f.index(v)
        for v in set(items)
    }
    out[:] = [cache[v] for v in items]
    return out


def _union(parts: Sequence[Keys]) -> Keys:
    """Sorted distinct keys of several sorted distinct key arrays (a sort and a
    neighbour comparison: numpy's hash-based ``unique`` is slow on byte strings)."""
    if not parts:
        return np.empty(0, dtype=KEY_DTYPE)
    merged = np.sort(np.concatenate(parts), kind="stable")
    if len(merged) < 2:
        return merged
    return merged[np.concatenate(([True], merged[1:] != merged[:-1]))]


def _load_values(store: ProviderStore, part: ModelPart, catalog: Catalog) -> JobData:
    """One columnar read per dataset the part uses, then every feature vectorised
    (:func:`veil.scoring.features.batch_values`): no Python per enterprise."""
    by_ds: dict[str, list[str]] = {}
    for fid in part.fields:
        by_ds.setdefault(catalog.field(fid).dataset_id, []).append(fid)
    for f in part.features:  # a dataset read only for "count"/"exists" still has rows
        by_ds.setdefault(f.spec.dataset, [f.spec.field])

    def read(ds_id: str) -> DatasetRows:
        keys, columns = store.read_columns(ds_id, sorted(set(by_ds[ds_id])))
        return DatasetRows.of(ds_id, keys, columns)

    # one thread: a second reader gains nothing (measured: sqlite3 takes the GIL back
    # for every row it steps through, so two readers only contend for it)
    datasets = {ds_id: read(ds_id) for ds_id in sorted(by_ds)}
    known = _union([d.keys for d in datasets.values()])
    data = JobData(known, {}, {}, {})
    positions = {ds_id: np.searchsorted(known, d.keys) for ds_id, d in datasets.items()}
    for f in part.features:
        ds = datasets[f.spec.dataset]
        pos = positions[f.spec.dataset]
        values = batch_values(f.spec, ds, () if f.linear else f.edges)
        default = feature_value(f.spec, {})
        if f.linear:
            if values.dtype == object or isinstance(default, str):
                raise InvalidArgument(f"feature {f.spec.name}: a linear feature needs a number")
            data.defaults[f.spec.name] = math.nan if default is None else float(default)
            column = np.full(len(known), data.defaults[f.spec.name])
            column[pos] = values
            data.linear[f.spec.name] = column
        else:
            data.defaults[f.spec.name] = -1 if default is None else f.index(default)
            index = np.full(len(known), data.defaults[f.spec.name], np.int16)
            index[pos] = _table_indices(f, values)
            data.index[f.spec.name] = index
    return data


def chunk_positions(data: JobData, usccs: Sequence[str]) -> npt.NDArray[np.intp]:
    """Row of each enterprise in ``data.known``, or -1 for one the provider does not hold."""
    try:
        wanted = key_array(usccs)
    except InvalidArgument:
        raise InvalidArgument("a chunk names an enterprise that is not a USCC") from None
    if not len(data.known):
        return np.full(len(usccs), -1, dtype=np.intp)
    pos = np.searchsorted(data.known, wanted)
    clipped = np.minimum(pos, len(data.known) - 1)
    return np.where(data.known[clipped] == wanted, clipped, -1)


def partial_vector(
    job: BatchJob, usccs: Sequence[str], *, uniform: bool = False
) -> ts.CKKSVector | None:
    """``Σ Enc(w)⊙plaintext`` for one chunk, or None if every product vanishes.

    NOT fit to leave the provider: see :func:`protect_vector`.

    ``uniform`` (small chunks, :data:`UNIFORM_BELOW`): every column's product is
    computed, none skipped, merged or folded (:func:`_uniform_vector`), so the time
    taken depends on the model and the chunk's size only.  Otherwise:

    A plaintext–ciphertext product costs ~1 ms (encoding the plaintext dominates), a
    ciphertext addition ~0.03 ms, so products are saved where the algebra allows:

    * a table feature's most frequent entry ``r`` in the chunk is folded out,
      ``Σ_b t_b·1[b] = t_r·1[occupied] + Σ_{b≠r} (t_b − t_r)·1[b]``, and the ``t_r`` of
      every table feature share the one ``1[occupied]`` product;
    * terms with the same plaintext column are summed first, ``Σ_i Enc(w_i)⊙c =
      (Σ_i Enc(w_i))⊙c`` (the missing-value columns of features of one dataset
      coincide; so do 0/1 features with other indicators);
    * zero columns are skipped;
    * products are not rescaled (the context has ``auto_rescale`` off): the sum stays
      at scale 2^100 on the full modulus, saving a rescale per product; the platform
      decrypts it as it is."""
    assert job.values is not None
    data = job.values
    n = len(usccs)
    if not 1 <= n <= job.slots:
        raise InvalidArgument(f"a chunk holds 1..{job.slots} enterprises")
    pos = chunk_positions(data, usccs)
    found = pos >= 0
    take = np.where(found, pos, 0)
    if uniform:
        return _uniform_vector(job, data, found, take)
    terms: dict[bytes, tuple[F64, ts.CKKSVector]] = {}

    def term(ct: ts.CKKSVector, column: F64) -> None:
        if not column.any():
            return
        key = column.tobytes()
        held = terms.get(key)
        terms[key] = (column, ct if held is None else held[1] + ct)

    reference: ts.CKKSVector | None = None
    for f in job.part.features:
        cts = job.weights[f.spec.name]
        if f.linear:
            value, missing = _linear_columns(data, f, found, take)
            term(cts[0], value)
            term(cts[1], missing)
            continue
        slot = _table_entries(data, f, found, take)
        counts = np.bincount(slot, minlength=f.table_size + 1)
        ref = int(np.argmax(counts))
        reference = cts[ref] if reference is None else reference + cts[ref]
        for b in np.flatnonzero(counts).tolist():
            if b != ref:
                term(cts[b] - cts[ref], (slot == b).astype(np.float64))
    if reference is not None:
        term(reference, np.ones(n))
    return _sum_of_products(job, [(ct, column) for column, ct in terms.values()], pad=False)


def _linear_columns(
    data: JobData, f: PartFeature, found: npt.NDArray[np.bool_], take: npt.NDArray[np.intp]
) -> tuple[F64, F64]:
    """A linear feature's values over the chunk (0 where missing) and its missing
    indicator."""
    x = np.where(found, data.linear[f.spec.name][take], data.defaults[f.spec.name])
    missing = np.isnan(x)
    return np.where(missing, 0.0, x), missing.astype(np.float64)


def _table_entries(
    data: JobData, f: PartFeature, found: npt.NDArray[np.bool_], take: npt.NDArray[np.intp]
) -> npt.NDArray[np.int16]:
    """Each enterprise's entry of a table feature: entry ``b`` is weight ciphertext ``b``;
    missing (-1 in the job's data) is the last one, ``table_size``."""
    idx = np.where(found, data.index[f.spec.name][take], int(data.defaults[f.spec.name]))
    entries: npt.NDArray[np.int16] = np.where(idx < 0, f.table_size, idx)
    return entries


def _sum_of_products(
    job: BatchJob, terms: Sequence[tuple[ts.CKKSVector, F64]], *, pad: bool
) -> ts.CKKSVector | None:
    """``Σ ct⊙column`` over the chunk's slots; ``pad`` puts 1 in the first slot after
    the chunk of every column (:func:`_uniform_vector`)."""
    acc: ts.CKKSVector | None = None
    for ct, column in terms:
        full = np.zeros(job.slots)
        full[: len(column)] = column
        if pad:
            full[len(column)] = 1.0
        product = ct * ts.plain_tensor(full)
        if acc is None:
            acc = product
        else:
            acc.add_(product)
    return acc


def _uniform_vector(
    job: BatchJob, data: JobData, found: npt.NDArray[np.bool_], take: npt.NDArray[np.intp]
) -> ts.CKKSVector:
    """The chunk's sum with one product per column of the model part — a linear
    feature's value and missing indicator, a table feature's indicator of every entry
    and of missing — whatever the values: the count of products, and the density of
    their plaintexts, are the same for every chunk of this size.

    No plaintext may be all zeros (SEAL takes about three times as long to multiply
    by one): every column carries 1 in slot ``n``, the first slot after the chunk,
    which the platform does not read (it decrypts slots ``0..n−1``).  What lands
    there is a sum of this part's weights, the same for every chunk and every
    enterprise, under the mask."""
    assert len(found) < job.slots, "a uniform chunk leaves a slot free"
    terms: list[tuple[ts.CKKSVector, F64]] = []
    for f in job.part.features:
        cts = job.weights[f.spec.name]
        if f.linear:
            value, missing = _linear_columns(data, f, found, take)
            terms += [(cts[0], value), (cts[1], missing)]
            continue
        slot = _table_entries(data, f, found, take)
        terms += [(cts[b], (slot == b).astype(np.float64)) for b in range(f.table_size + 1)]
    acc = _sum_of_products(job, terms, pad=True)
    assert acc is not None, "a model part has at least one feature"
    return acc


def protect_vector(
    job: BatchJob, acc: ts.CKKSVector | None, mask: F64, *, flood: bool = True
) -> ts.CKKSVector:
    """Add a fresh public-key encryption of ``mask + noise``: masks, re-randomizes, floods.

    Encrypted at the products' scale (:data:`veil.scoring.ckks.RESULT_SCALE`), so every
    provider's answer has the same scale and level whatever its features."""
    noise = flood_noise(job.slots, job.flood_sigma) if flood else np.zeros(job.slots)
    fresh = ts.ckks_vector(job.context, ts.plain_tensor(mask + noise), scale=RESULT_SCALE)
    return fresh if acc is None else acc + fresh


class ProviderBatch:
    def __init__(
        self,
        *,
        unit: str,
        catalog: Catalog,
        store: ProviderStore,
        masks: ProviderMaskKeys | None,
        uniform_below: int = UNIFORM_BELOW,
    ) -> None:
        self.unit = unit
        self.catalog = catalog
        self.store = store
        self.masks = masks
        self.uniform_below = uniform_below
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
        # read and featurize the store now: the install answers when the provider is
        # ready for chunks (a store of millions of rows takes tens of seconds; the
        # platform allows for it on this call, not on every chunk's)
        await asyncio.to_thread(self._ensure_values, job)
        await servicer._record(
            "InstallBatch",
            job.job_id,
            None,
            "answered",
            f"job={job.job_id};model={job.part.model_id};version={job.part.version};"
            f"sha256={job.part.sha256}",
        )
        return pb.InstallBatchResponse(job_id=job.job_id)

    def _ensure_values(self, job: BatchJob) -> JobData:
        with job.lock:
            if job.values is None:
                job.values = _load_values(self.store, job.part, self.catalog)
            return job.values

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
        # the ledger row is written while the chunk is computed (its commit waits for
        # the disk), and before the answer leaves: gather returns only when both are done
        record = servicer._record(
            "BatchPartial",
            rid,
            None,
            "answered",
            f"job={job.job_id};chunk={request.chunk};enterprises={len(usccs)};"
            f"usccs_sha256={digest};model={job.part.model_id};version={job.part.version}",
            job.part.fields,
        )

        def compute() -> bytes:
            self._ensure_values(job)
            try:
                acc = partial_vector(job, usccs, uniform=len(usccs) < self.uniform_below)
            except RuntimeError as exc:  # SEAL refuses e.g. a transparent ciphertext
                raise InvalidArgument(
                    f"batch job {job.job_id[:64]}: the encrypted weights do not combine ({exc})"
                ) from None
            out = protect_vector(job, acc, self._mask(job, peers, request.chunk))
            return bytes(out.serialize())

        _, ciphertext = await asyncio.gather(record, asyncio.to_thread(compute))
        return pb.BatchPartialResponse(
            job_id=job.job_id, chunk=request.chunk, ciphertext=ciphertext
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
