"""The label-party role of joint training (联合建模): the platform coordinates vertical
federated logistic regression over its labels and two or more feature parties.

:class:`LabelParty` runs the protocol against the feature parties' ``TrainingService``
(``provider_node.training``), one method per step, named for it.  The steps, the
messages and what each party learns are in ``docs/training.md``; in short the label party

* learns which of its own IDs are held by **every** feature party (and the sizes of the
  parties' sets and of their overlaps), never an ID it did not already hold;
* learns, per bin of each provider column, the row and default counts (for WOE / IV);
* holds each provider's training rows only as Paillier ciphertexts under that provider's
  key, and computes each provider's gradient *under that key* — it never sees one;
* learns, per row of a batch, the **sum** of all providers' partial scores (pairwise masks
  hide each one), which it needs for the exact sigmoid;
* ends with every party's model part: the platform owns the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import gmpy2
import grpc
import numpy as np
import numpy.typing as npt

from veil.config import TLSConfig
from veil.crypto import (
    Ciphertext,
    PaillierKeys,
    PublicKey,
    RandomnessPool,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    dot,
    encrypt,
    public_key_bytes,
    public_key_from_bytes,
    rerandomize,
)
from veil.errors import (
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    VeilError,
    from_rpc_error,
)
from veil.server import connect
from veil.tls import PeerIdentity
from veil.training import psi
from veil.training.binning import (
    bin_counts,
    iv_strength,
    min_bin_rows,
    shareable_woe,
    woe_iv,
)
from veil.training.checkpoint import CheckpointStore, write_json_atomic
from veil.training.config import (
    ROLE_NAMES,
    ROLE_TEST,
    ROLE_TRAIN,
    ROLE_VALIDATION,
    JobConfig,
    epoch_batches,
    job_batch_size,
    min_batch_size,
    split_roles,
)
from veil.training.encoding import ColumnEncoder, design_matrix, fit_encoders
from veil.training.metrics import auc as auc_of
from veil.training.metrics import curves, log_loss, sigmoid, summary
from veil.training.model import model_part
from veil.training.optim import Optimizer
from veil.training.packing import Packing, quantize_residuals
from veil.training.randomizers import NonHolderRandomizers
from veil.training.secure_sum import combine_scores
from veil.training.table import Column, PartyTable, subset
from veil.v1 import training_pb2 as pb
from veil.v1 import training_pb2_grpc

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
T = TypeVar("T")

STEP_TIMEOUT_S = 600.0
SETUP_TIMEOUT_S = 7200.0
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
)
LABELS_PER_MESSAGE = 4096
POINTS_PER_MESSAGE = 4096


@dataclass(frozen=True)
class PartyEndpoint:
    name: str
    address: str


@dataclass
class EpochRecord:
    epoch: int
    learning_rate: float
    train_loss: float
    validation_loss: float
    validation_auc: float
    seconds: float
    improved: bool


@dataclass
class TrainingResult:
    job_id: str
    label_party: str
    intercept: float
    parts: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    curves: dict[str, dict[str, list[float]]]
    iv_table: list[dict[str, Any]]
    history: list[EpochRecord]
    counts: dict[str, Any]
    features: dict[str, int]
    best_epoch: int
    epochs: int
    stopped_early: bool
    seconds: float
    setup_seconds: float
    config: JobConfig
    batch_size: int
    resumed_from: int = -1
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "train_auc": _r(self.metrics["train"]["auc"]),
            "train_ks": _r(self.metrics["train"]["ks"]),
            "validation_auc": _r(self.metrics["validation"]["auc"]),
            "test_auc": _r(self.metrics["test"]["auc"]),
            "test_ks": _r(self.metrics["test"]["ks"]),
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "setup_seconds": round(self.setup_seconds, 3),
            "features": self.features,
            "rows": self.counts,
            "resumed_from_epoch": self.resumed_from,
        }


def _r(x: float) -> float:
    return round(float(x), 6) if math.isfinite(x) else float("nan")


def _u32(a: I64) -> bytes:
    return np.asarray(a, dtype="<u4").tobytes()


def _parse_ciphertexts(pk: PublicKey, data: bytes) -> list[Ciphertext]:
    """Fixed-width ciphertexts, each checked (range, coprimality) by veil.crypto."""
    size = pk.ciphertext_size
    if len(data) % size:
        raise InvalidArgument("torn ciphertext")
    return [ciphertext_from_bytes(pk, data[i : i + size]) for i in range(0, len(data), size)]


def _release_gil() -> None:
    gmpy2.get_context().allow_release_gil = True


def _unary(method: str, request: Any, r: _Remote) -> Awaitable[Any]:
    result: Awaitable[Any] = getattr(r.stub, method)(request, timeout=STEP_TIMEOUT_S)
    return result


def _backward(epoch: int, batch: int, gradients: dict[str, bytes], r: _Remote) -> Awaitable[Any]:
    request = pb.BackwardRequest(epoch=epoch, batch=batch, gradient=gradients[r.endpoint.name])
    result: Awaitable[Any] = r.stub.Backward(request, timeout=STEP_TIMEOUT_S)
    return result


@dataclass
class _Remote:
    """What the label party holds about one feature party during a run."""

    endpoint: PartyEndpoint
    channel: grpc.aio.Channel
    stub: Any  # training_pb2_grpc.TrainingServiceStub on an aio channel
    rows: int = 0
    columns: int = 0
    checkpoint_epoch: int = -1
    signed_mask_key: bytes = b""
    blinded: list[bytes] = field(default_factory=list)
    described: list[pb.ColumnInfo] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    width: int = 0
    encoded_names: list[str] = field(default_factory=list)
    public_key: PublicKey | None = None
    packing: Packing | None = None
    rows_enc: list[list[Ciphertext]] = field(default_factory=list)  # [chunk][train row]
    pool: RandomnessPool | None = None


class LabelParty:
    """The platform's side of one training job (see the module docstring)."""

    def __init__(
        self,
        table: PartyTable,
        parties: Sequence[PartyEndpoint],
        tls: TLSConfig,
        config: JobConfig,
        state_dir: Path,
        *,
        name: str = "platform",
        progress: Callable[[str, dict[str, Any]], None] | None = None,
        resume: bool = False,
        workers: int = 2,
    ) -> None:
        if table.labels is None:
            raise InvalidArgument("the label party's table has no labels")
        names = [p.name for p in parties]
        if len(set(names)) != len(names):
            raise InvalidArgument("feature party names must be distinct")
        if len(parties) < 2 and not config.allow_single_feature_party:
            raise FailedPrecondition(
                "joint training needs at least two feature parties: with one, the secure sum "
                "of partial scores would be that party's own per-row score"
            )
        self.table = table
        self.parties = sorted(parties, key=lambda p: p.name)
        self.tls = tls
        self.config = config
        self.state_dir = Path(state_dir)
        self.name = name
        self.progress = progress or (lambda _event, _data: None)
        self.resume = resume
        self.workers = max(1, workers)
        self.remotes: dict[str, _Remote] = {}
        self.job_id = secrets.token_hex(8)
        self.run_id = secrets.token_hex(8)
        self.resume_epoch = -1
        self.current_step = "start"
        self._step_started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.committed_epoch = -1
        self._paillier: PaillierKeys | None = None
        # aligned data
        self.roles: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        self.y: dict[int, F64] = {}
        self.counts: dict[str, Any] = {}
        self.encoders: list[ColumnEncoder] = []
        self.columns: dict[str, Column] = {}
        self.x: dict[int, F64] = {}
        self.iv_table: list[dict[str, Any]] = []
        self.woe: dict[str, dict[str, list[float]]] = {}
        # model
        self.w: F64 = np.zeros(0)
        self.b = 0.0
        self.best: tuple[F64, float] = (np.zeros(0), 0.0)
        self.best_epoch = -1
        self.best_loss = math.inf
        self.stale_epochs = 0
        self.history: list[EpochRecord] = []
        self.optimizer: Optimizer | None = None
        self.batch_size = config.batch_size
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # -- job bookkeeping -------------------------------------------------------------

    @property
    def job_file(self) -> Path:
        return self.state_dir / "job.json"

    def _load_job(self) -> None:
        try:
            doc = json.loads(self.job_file.read_text())
        except (OSError, ValueError):
            raise FailedPrecondition(f"nothing to resume: no job in {self.state_dir}") from None
        if JobConfig.from_json(json.dumps(doc["config"])) != self.config:
            raise FailedPrecondition("resume needs the same training settings as the first run")
        if doc["parties"] != [p.name for p in self.parties]:
            raise FailedPrecondition("resume needs the same feature parties as the first run")
        self.job_id = str(doc["job_id"])
        self.committed_epoch = int(doc["committed_epoch"])
        self.resume_epoch = self.committed_epoch

    def _save_job(self) -> None:
        write_json_atomic(
            self.job_file,
            {
                "job_id": self.job_id,
                "committed_epoch": self.committed_epoch,
                "config": json.loads(self.config.to_json()),
                "parties": [p.name for p in self.parties],
            },
        )

    # -- calling feature parties -----------------------------------------------------

    def _where(self) -> str:
        """The step in progress, for errors; epochs and batches count from 1, as the
        progress lines do (checkpoints and the JSON summary count epochs from 0)."""
        return self.current_step

    def _wrap(self, party: str, err: grpc.RpcError) -> VeilError:
        code = err.code() if hasattr(err, "code") else None
        resumable = (
            f"; it can resume after epoch {self.committed_epoch + 1} (--resume)"
            if self.committed_epoch >= 0
            else ""
        )
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            return Unavailable(
                f"feature party {party!r} disconnected during {self._where()}{resumable}",
                details={"party": party, "step": self._where()},
            )
        exc = from_rpc_error(err)
        message = f"feature party {party!r} refused {self._where()}: {exc.message}"
        try:
            return type(exc)(message, details={**exc.details, "party": party})
        except TypeError:
            return FailedPrecondition(message, details={"party": party})

    async def _call(self, party: str, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except grpc.RpcError as err:
            raise self._wrap(party, err) from None

    async def _all(self, fn: Callable[[_Remote], Awaitable[Any]]) -> dict[str, Any]:
        names = list(self.remotes)
        results = await asyncio.gather(
            *(self._call(n, fn(self.remotes[n])) for n in names), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # a disconnect names the party; prefer it over follow-on errors
            for e in errors:
                if isinstance(e, Unavailable):
                    raise e
            raise errors[0]
        return dict(zip(names, results, strict=True))

    def _steps(self, name: str) -> None:
        """Enter step ``name``; time spent per step kind is kept in ``timings``."""
        now = time.monotonic()
        kind = self.current_step.split(" ")[0]
        self.timings[kind] = self.timings.get(kind, 0.0) + now - self._step_started
        self.current_step, self._step_started = name, now

    # -- the protocol ----------------------------------------------------------------

    async def run(self) -> TrainingResult:
        started = time.monotonic()
        if self.resume:
            self._load_job()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.workers, initializer=_release_gil
        )
        for p in self.parties:
            channel = connect(
                p.address,
                self.tls,
                PeerIdentity("provider", p.name),
                timeout_s=STEP_TIMEOUT_S,
                options=CHANNEL_OPTIONS,
            )
            self.remotes[p.name] = _Remote(
                p, channel, training_pb2_grpc.TrainingServiceStub(channel)
            )
        ok = False
        try:
            await self.open_job()
            await self.distribute_keys()
            await self.align()
            await self.describe_columns()
            if self.config.binning:
                await self.bin_statistics()
            await self.select_features()
            await self.encrypt_features()
            setup_seconds = time.monotonic() - started
            self.progress("setup", {"seconds": round(setup_seconds, 3)})
            stopped_early = False
            epoch = self.resume_epoch + 1
            if self.resume_epoch >= 0 and self.stale_epochs >= self.config.patience:
                stopped_early = True
            while epoch < self.config.max_epochs and not stopped_early:
                t0 = time.monotonic()
                train_loss = await self.train_epoch(epoch)
                val_loss, val_auc = await self.validate(epoch)
                improved = val_loss < self.best_loss - self.config.min_delta
                if improved:
                    self.best_loss, self.best_epoch = val_loss, epoch
                    self.best = (self.w.copy(), self.b)
                    self.stale_epochs = 0
                else:
                    self.stale_epochs += 1
                record = EpochRecord(
                    epoch,
                    self.config.lr(epoch),
                    train_loss,
                    val_loss,
                    val_auc,
                    time.monotonic() - t0,
                    improved,
                )
                self.history.append(record)
                await self.checkpoint(epoch, improved)
                self.progress("epoch", dataclasses.asdict(record))
                stopped_early = self.stale_epochs >= self.config.patience
                epoch += 1
            await self.restore_best()
            metrics, curve_data = await self.evaluate()
            parts = await self.export_model()
            ok = True
            return TrainingResult(
                job_id=self.job_id,
                label_party=self.name,
                intercept=float(self.b),
                parts=parts,
                metrics=metrics,
                curves=curve_data,
                iv_table=self.iv_table,
                history=self.history,
                counts=self.counts,
                features={n: int(p["features"]) for n, p in parts.items()},
                best_epoch=self.best_epoch,
                epochs=epoch,
                stopped_early=stopped_early,
                seconds=time.monotonic() - started,
                setup_seconds=setup_seconds,
                config=self.config,
                batch_size=self.batch_size,
                resumed_from=self.resume_epoch,
                timings={k: round(v, 3) for k, v in self.timings.items()},
            )
        finally:
            await self.close_job("done" if ok else f"failed during {self._where()}")
            for remote in self.remotes.values():
                if remote.pool is not None:
                    remote.pool.close()
                await remote.channel.close(None)
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    # 1
    async def open_job(self) -> None:
        self._steps("OpenJob")
        names = [p.name for p in self.parties]
        req = lambda r: pb.OpenJobRequest(  # noqa: E731
            job_id=self.job_id,
            run_id=self.run_id,
            party=r.endpoint.name,
            feature_parties=names,
            config_json=self.config.to_json(),
            resume_epoch=self.resume_epoch,
        )
        answers = await self._all(lambda r: r.stub.OpenJob(req(r), timeout=STEP_TIMEOUT_S))
        for n, a in answers.items():
            r = self.remotes[n]
            r.rows, r.columns, r.signed_mask_key = a.rows, a.columns, a.signed_mask_key
            r.checkpoint_epoch = a.checkpoint_epoch
            if self.resume_epoch >= 0 and a.checkpoint_epoch < self.resume_epoch:
                raise FailedPrecondition(
                    f"feature party {n!r} has checkpoints only up to epoch "
                    f"{a.checkpoint_epoch}; cannot resume from {self.resume_epoch}"
                )
        self._save_job()

    # 2, 3
    async def distribute_keys(self) -> None:
        self._steps("DistributeKeys")
        roster = {n: r.signed_mask_key for n, r in self.remotes.items()}
        answers = await self._all(
            lambda r: r.stub.DistributeKeys(
                pb.DistributeKeysRequest(signed_mask_keys=roster), timeout=STEP_TIMEOUT_S
            )
        )
        leader = self.parties[0].name
        sealed = dict(answers[leader].sealed_group_keys)
        self._steps("AcceptGroupKey")
        await self._all(
            lambda r: r.stub.AcceptGroupKey(
                pb.AcceptGroupKeyRequest(
                    leader=leader, sealed_group_key=sealed.get(r.endpoint.name, b"")
                ),
                timeout=STEP_TIMEOUT_S,
            )
        )

    # 4, 5, 6
    async def align(self) -> None:
        """Private set intersection, the row order and the split (see docs/training.md)."""
        self._steps("BlindIds")

        async def blind(r: _Remote) -> list[bytes]:
            out: list[bytes] = []
            async for msg in r.stub.BlindIds(pb.BlindIdsRequest(), timeout=SETUP_TIMEOUT_S):
                out.extend(psi.split_points(msg.points))
            return out

        blinded = await self._all(blind)
        for name, pts in blinded.items():
            self.remotes[name].blinded = pts
            if len(pts) != self.remotes[name].rows:
                rows = self.remotes[name].rows
                raise InvalidArgument(
                    f"feature party {name!r} sent {len(pts)} points for {rows} rows"
                )
        sets = [set(p) for p in blinded.values()]
        common = sorted(set.intersection(*sets))
        leader = self.remotes[self.parties[0].name]
        a, b = psi.Blinder(), psi.Blinder()
        loop = asyncio.get_running_loop()
        mine = await loop.run_in_executor(
            self._executor, lambda: a.apply(psi.hash_to_point(i) for i in self.table.ids)
        )
        common_b = await loop.run_in_executor(self._executor, lambda: b.apply(common))
        self._steps("EvaluateOprf")
        ids_k = await self._call(leader.endpoint.name, self._oprf(leader, "ids", mine))
        common_k = await self._call(leader.endpoint.name, self._oprf(leader, "common", common_b))
        ids_final = await loop.run_in_executor(self._executor, lambda: b.apply(ids_k))
        common_final = await loop.run_in_executor(self._executor, lambda: a.apply(common_k))
        where_common = {v: k for k, v in enumerate(common_final)}
        matched = sorted(
            (self.table.ids[j], where_common[v])
            for j, v in enumerate(ids_final)
            if v in where_common
        )
        label_row = {ident: j for j, ident in enumerate(self.table.ids)}
        n = len(matched)
        self.counts = {
            "label_party": len(self.table),
            **{f"party:{name}": r.rows for name, r in self.remotes.items()},
            "common_to_feature_parties": len(common),
            "intersection": n,
        }
        if n < 10:
            raise FailedPrecondition(
                f"the intersection has {n} rows: too few to train (label party "
                f"{len(self.table)}, feature parties "
                + ", ".join(f"{k} {r.rows}" for k, r in self.remotes.items())
                + ")"
            )
        label_rows = np.asarray([label_row[ident] for ident, _ in matched], dtype=np.int64)
        self.aligned = self.table.take(label_rows)
        assert self.aligned.labels is not None
        self.roles = split_roles(
            self.aligned.labels,
            self.config.test_size,
            self.config.validation_size,
            self.config.seed,
        )
        self.counts.update(
            train=int((self.roles == ROLE_TRAIN).sum()),
            validation=int((self.roles == ROLE_VALIDATION).sum()),
            test=int((self.roles == ROLE_TEST).sum()),
        )
        labels = self.aligned.labels.astype(np.float64)
        for role in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST):
            self.y[role] = labels[self.roles == role]
            if self.y[role].min() == self.y[role].max():
                raise FailedPrecondition(
                    f"the {ROLE_NAMES[role]} split has only label {int(self.y[role][0])}; "
                    "need both classes (more rows or another seed)"
                )
        self._steps("AlignRows")
        roles = self.roles.tobytes()

        def positions(r: _Remote) -> bytes:
            at = {v: i for i, v in enumerate(r.blinded)}
            return _u32(np.asarray([at[common[k]] for _, k in matched], dtype=np.int64))

        answers = await self._all(
            lambda r: r.stub.AlignRows(
                pb.AlignRowsRequest(positions=positions(r), roles=roles), timeout=STEP_TIMEOUT_S
            )
        )
        digests = {a.alignment_digest for a in answers.values()}
        if len(digests) != 1:
            raise FailedPrecondition("feature parties disagree on the row alignment")
        self.progress("aligned", dict(self.counts))

    async def _oprf(self, r: _Remote, kind: str, points: list[bytes]) -> list[bytes]:
        async def requests() -> AsyncIterator[pb.OprfRequest]:
            for i in range(0, max(1, len(points)), POINTS_PER_MESSAGE):
                yield pb.OprfRequest(
                    kind=kind, points=psi.join_points(points[i : i + POINTS_PER_MESSAGE])
                )

        out: list[bytes] = []
        async for msg in r.stub.EvaluateOprf(requests(), timeout=SETUP_TIMEOUT_S):
            out.extend(psi.split_points(msg.points))
        if len(out) != len(points):
            raise InvalidArgument(f"the leader answered {len(out)} points for {len(points)}")
        return out

    # 7
    async def describe_columns(self) -> None:
        self._steps("DescribeColumns")
        answers = await self._all(
            lambda r: r.stub.DescribeColumns(pb.DescribeColumnsRequest(), timeout=SETUP_TIMEOUT_S)
        )
        for n, a in answers.items():
            self.remotes[n].described = list(a.columns)
        self.columns = self.aligned.columns
        train = np.nonzero(self.roles == ROLE_TRAIN)[0]
        self.encoders = fit_encoders(self.columns, train, self.config)
        for enc in self.encoders:
            self.iv_table.append(
                self._iv_row(self.name, enc.name, enc.kind, enc.status, enc.n_bins)
            )
        for n, r in self.remotes.items():
            for c in r.described:
                self.iv_table.append(self._iv_row(n, c.name, c.kind, c.status, c.bins))

    @staticmethod
    def _iv_row(party: str, column: str, kind: str, status: str, bins: int) -> dict[str, Any]:
        return {
            "party": party,
            "column": column,
            "kind": kind,
            "status": status,
            "bins": bins,
            "iv": None,
            "strength": None,
            "selected": status == "ok",
            "woe": None,
            "counts": None,
            "bads": None,
        }

    def _iv_entry(self, party: str, column: str) -> dict[str, Any]:
        return next(e for e in self.iv_table if e["party"] == party and e["column"] == column)

    # 8
    async def bin_statistics(self) -> None:
        """WOE / IV per column: own columns in the clear, providers' over encrypted labels."""
        self._steps("BinStatistics")
        train = np.nonzero(self.roles == ROLE_TRAIN)[0]
        y_train = self.y[ROLE_TRAIN].astype(np.int8)
        for enc in self.encoders:
            if enc.dropped:
                continue
            stats = bin_counts(enc.bins(subset(self.columns[enc.name], train)), enc.n_bins, y_train)
            self._record_bins(self.name, enc.name, list(stats.counts), list(stats.bads))
        keys = PaillierKeys.generate(self.config.paillier_bits)
        self._paillier = keys
        loop = asyncio.get_running_loop()
        randomizers = NonHolderRandomizers(keys.public, expected=len(y_train))

        def encrypt_labels(start: int) -> bytes:
            block = y_train[start : start + LABELS_PER_MESSAGE]
            return b"".join(
                ciphertext_bytes(encrypt(keys.public, int(v), randomizers))  # type: ignore[arg-type]
                for v in block
            )

        assert self._executor is not None
        chunks = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, encrypt_labels, s)
                for s in range(0, len(y_train), LABELS_PER_MESSAGE)
            )
        )
        key_bytes = public_key_bytes(keys.public)

        async def stream() -> AsyncIterator[pb.EncryptedLabels]:
            yield pb.EncryptedLabels(public_key=key_bytes)
            for c in chunks:
                yield pb.EncryptedLabels(ciphertexts=c)

        answers = await self._all(lambda r: r.stub.BinStatistics(stream(), timeout=SETUP_TIMEOUT_S))
        size = keys.public.ciphertext_size
        for n, a in answers.items():
            for fb in a.features:
                entry = self._iv_entry(n, fb.name)
                if len(fb.bad_sums) != size * len(fb.counts) or len(fb.counts) != entry["bins"]:
                    raise InvalidArgument(f"feature party {n!r}: malformed bins for {fb.name!r}")
                bads = [
                    keys.decrypt(ciphertext_from_bytes(keys.public, fb.bad_sums[i : i + size]))
                    for i in range(0, len(fb.bad_sums), size)
                ]
                counts = [int(c) for c in fb.counts]
                if any(bd > c for bd, c in zip(bads, counts, strict=True)) or sum(counts) != len(
                    train
                ):
                    raise InvalidArgument(f"feature party {n!r}: inconsistent bins for {fb.name!r}")
                self._record_bins(n, fb.name, counts, bads)
        self.progress(
            "binning",
            {"columns": sum(1 for e in self.iv_table if e["iv"] is not None)},
        )

    def _record_bins(self, party: str, column: str, counts: list[int], bads: list[int]) -> None:
        woe, iv = woe_iv(counts, bads)
        entry = self._iv_entry(party, column)
        entry.update(
            iv=iv,
            strength=iv_strength(iv),
            woe=woe,
            counts=counts,
            bads=bads,
            selected=entry["status"] == "ok" and iv >= self.config.iv_threshold,
        )

    def _shareable_woe(self, entry: dict[str, Any]) -> list[float]:
        """A column's WOE for encoding: clipped, and 0 in every bin below the minimum bin
        size (a small bin's WOE would tell the feature party its rows' labels)."""
        n_train = int((self.roles == ROLE_TRAIN).sum())
        woe = np.clip(entry["woe"], -self.config.clip, self.config.clip).tolist()
        return shareable_woe(
            woe, entry["counts"], min_bin_rows(self.config.min_bin_fraction, n_train)
        )

    # 9
    async def select_features(self) -> None:
        self._steps("SelectFeatures")
        if self.config.encoding == "woe" and not self.config.binning:
            raise InvalidArgument("WOE encoding needs binning")
        for enc in self.encoders:
            entry = self._iv_entry(self.name, enc.name)
            if not enc.dropped and not entry["selected"]:
                enc.status = "not_selected"
            elif not enc.dropped and self.config.encoding == "woe":
                enc.set_woe(self._shareable_woe(entry), entry["counts"])

        def request(r: _Remote) -> pb.SelectFeaturesRequest:
            keep = [
                e["column"]
                for e in self.iv_table
                if e["party"] == r.endpoint.name and e["selected"]
            ]
            r.selected = keep
            woe = {}
            if self.config.encoding == "woe":
                woe = {
                    c: pb.WoeTable(woe=self._shareable_woe(self._iv_entry(r.endpoint.name, c)))
                    for c in keep
                }
            return pb.SelectFeaturesRequest(keep=keep, woe=woe, resume_epoch=self.resume_epoch)

        answers = await self._all(
            lambda r: r.stub.SelectFeatures(request(r), timeout=SETUP_TIMEOUT_S)
        )
        for n, a in answers.items():
            self.remotes[n].width = a.width
            self.remotes[n].encoded_names = list(a.encoded_names)
        x_all = design_matrix(self.encoders, self.columns, len(self.roles))
        self.x = {
            role: x_all[self.roles == role] for role in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST)
        }
        d = x_all.shape[1]
        n_train = int((self.roles == ROLE_TRAIN).sum())
        widest = max([d, *(r.width for r in self.remotes.values())])
        self.batch_size = job_batch_size(self.config.batch_size, n_train, widest)
        if n_train < min_batch_size(widest):
            raise FailedPrecondition(
                f"{n_train} training rows are too few for {widest} encoded features"
            )
        self.w = np.zeros(d)
        # Start at the training default rate's log-odds (what the intercept converges to
        # when features say nothing): saves the first epochs' work on a skewed label.
        rate = float(np.clip(self.y[ROLE_TRAIN].mean(), 1e-6, 1 - 1e-6))
        self.b = math.log(rate / (1.0 - rate))
        self.best = (self.w.copy(), self.b)
        self.optimizer = Optimizer.create(
            self.config.optimizer,
            self.config.learning_rate,
            self.config.lr_decay,
            self.config.l2_for(n_train),
            np.r_[np.ones(d), 0.0],  # the intercept is not penalised
        )
        self.own_names = [n for e in self.encoders for n in e.encoded_names()]
        if self.resume_epoch >= 0:
            self._load_own_checkpoint(self.resume_epoch)
        if sum(r.width for r in self.remotes.values()) + d == 0:
            raise FailedPrecondition("no usable feature is left in any party")

    # 10
    async def encrypt_features(self) -> None:
        self._steps("EncryptFeatures")
        n_train = int((self.roles == ROLE_TRAIN).sum())

        async def receive(r: _Remote) -> None:
            stream = r.stub.EncryptFeatures(pb.EncryptFeaturesRequest(), timeout=SETUP_TIMEOUT_S)
            header: pb.EncryptedFeatures | None = None
            flat: list[Ciphertext] = []
            async for msg in stream:
                if header is None:
                    header = msg
                    if msg.features != r.width:
                        raise InvalidArgument(f"feature party {r.endpoint.name!r}: width changed")
                    if r.width == 0:
                        continue
                    r.public_key = public_key_from_bytes(msg.public_key)
                    r.packing = Packing(r.width, r.public_key.bits)
                    if (msg.chunks, msg.slots) != (r.packing.chunks, r.packing.slots):
                        raise InvalidArgument(
                            f"feature party {r.endpoint.name!r}: packing mismatch"
                        )
                    continue
                assert r.public_key is not None
                data = msg.ciphertexts
                flat.extend(
                    await asyncio.get_running_loop().run_in_executor(
                        self._executor, _parse_ciphertexts, r.public_key, data
                    )
                )
            if r.width == 0:
                return
            assert r.packing is not None and r.public_key is not None
            chunks = r.packing.chunks
            if len(flat) != n_train * chunks:
                raise InvalidArgument(
                    f"feature party {r.endpoint.name!r} sent {len(flat)} ciphertexts, "
                    f"expected {n_train * chunks}"
                )
            r.rows_enc = [flat[c::chunks] for c in range(chunks)]
            r.pool = RandomnessPool(r.public_key, size=2 * chunks)

        await self._all(receive)

    # 11, 12
    async def train_epoch(self, epoch: int) -> float:
        assert self.optimizer is not None
        x, y = self.x[ROLE_TRAIN], self.y[ROLE_TRAIN]
        losses: list[float] = []
        for batch, rows in enumerate(
            epoch_batches(len(y), self.batch_size, self.config.seed, epoch)
        ):
            self._steps(f"Forward (epoch {epoch + 1}, batch {batch + 1})")
            forward = pb.ForwardRequest(epoch=epoch, batch=batch, rows=_u32(rows))
            masked = await self._all(partial(_unary, "Forward", forward))
            provider_sum = combine_scores({n: m.values for n, m in masked.items()}, len(rows))
            z = self.b + x[rows] @ self.w + provider_sum
            residual = sigmoid(z) - y[rows]
            losses.append(log_loss(z, y[rows]) * len(rows))
            grad_own = np.r_[x[rows].T @ residual, residual.sum()] / len(rows)
            params = self.optimizer.step(np.r_[self.w, self.b], grad_own, epoch)
            self.w, self.b = params[:-1], float(params[-1])
            self._steps(f"Backward (epoch {epoch + 1}, batch {batch + 1})")
            rq = quantize_residuals(residual)
            gradients = await self._encrypted_gradients(rows, rq)
            await self._all(partial(_backward, epoch, batch, gradients))
        return float(sum(losses) / len(y))

    async def _encrypted_gradients(self, rows: I64, rq: I64) -> dict[str, bytes]:
        """``Enc_p(X_pᵀ r_q)`` per feature party, under its own key, re-randomized."""
        exps = [int(v) for v in rq]
        total = int(rq.sum())
        loop = asyncio.get_running_loop()

        def one(r: _Remote, c: int) -> bytes:
            assert r.packing is not None and r.pool is not None
            col = r.rows_enc[c]
            ct = dot([col[int(i)] for i in rows], exps)
            ct = add_plain(ct, -total * r.packing.offset_weight(c))
            return ciphertext_bytes(rerandomize(ct, r.pool))

        jobs = [(r, c) for r in self.remotes.values() if r.width for c in range(len(r.rows_enc))]
        out = await asyncio.gather(
            *(loop.run_in_executor(self._executor, one, r, c) for r, c in jobs)
        )
        grads: dict[str, list[bytes]] = {n: [] for n in self.remotes}
        for (r, _c), data in zip(jobs, out, strict=True):
            grads[r.endpoint.name].append(data)
        return {n: b"".join(v) for n, v in grads.items()}

    # 13
    async def validate(self, epoch: int) -> tuple[float, float]:
        self._steps(f"Validate (epoch {epoch + 1})")
        masked = await self._all(
            lambda r: r.stub.Validate(pb.ValidateRequest(epoch=epoch), timeout=STEP_TIMEOUT_S)
        )
        y = self.y[ROLE_VALIDATION]
        z = (
            self.b
            + self.x[ROLE_VALIDATION] @ self.w
            + combine_scores({n: m.values for n, m in masked.items()}, len(y))
        )
        return log_loss(z, y), auc_of(z, y)

    # 14
    async def checkpoint(self, epoch: int, improved: bool) -> None:
        self._steps(f"Checkpoint (epoch {epoch + 1})")
        await self._all(
            lambda r: r.stub.Checkpoint(
                pb.CheckpointRequest(epoch=epoch, best=improved), timeout=STEP_TIMEOUT_S
            )
        )
        assert self.optimizer is not None
        CheckpointStore(self.state_dir, self.job_id).save(
            epoch,
            {
                "party": self.name,
                "encoded_names": self.own_names,
                "weights": self.w.tolist(),
                "intercept": self.b,
                "best_weights": self.best[0].tolist(),
                "best_intercept": self.best[1],
                "best_epoch": self.best_epoch,
                "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
                "stale_epochs": self.stale_epochs,
                "optimizer": self.optimizer.state(),
                "history": [dataclasses.asdict(h) for h in self.history],
            },
        )
        self.committed_epoch = epoch
        self._save_job()

    def _load_own_checkpoint(self, epoch: int) -> None:
        assert self.optimizer is not None
        doc = CheckpointStore(self.state_dir, self.job_id).load(epoch)
        if doc.get("encoded_names") != self.own_names:
            raise FailedPrecondition("the label party's checkpoint was written for other features")
        self.w = np.asarray(doc["weights"], dtype=np.float64)
        self.b = float(doc["intercept"])
        self.best = (
            np.asarray(doc["best_weights"], dtype=np.float64),
            float(doc["best_intercept"]),
        )
        self.best_epoch = int(doc["best_epoch"])
        self.best_loss = math.inf if doc["best_loss"] is None else float(doc["best_loss"])
        self.stale_epochs = int(doc["stale_epochs"])
        self.optimizer.load_state(doc["optimizer"])
        self.history = [EpochRecord(**h) for h in doc["history"]]
        self.progress("resumed", {"epoch": epoch})

    # 15
    async def restore_best(self) -> None:
        self._steps("RestoreBest")
        await self._all(
            lambda r: r.stub.RestoreBest(
                pb.RestoreBestRequest(best_epoch=self.best_epoch), timeout=STEP_TIMEOUT_S
            )
        )
        if self.best_epoch >= 0:
            self.w, self.b = self.best[0].copy(), self.best[1]

    # 16
    async def evaluate(
        self,
    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
        metrics: dict[str, dict[str, float]] = {}
        curve_data: dict[str, dict[str, list[float]]] = {}
        for role in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST):
            self._steps(f"Evaluate ({ROLE_NAMES[role]})")
            masked = await self._all(partial(_unary, "Evaluate", pb.EvaluateRequest(role=role)))
            y = self.y[role]
            z = (
                self.b
                + self.x[role] @ self.w
                + combine_scores({n: m.values for n, m in masked.items()}, len(y))
            )
            metrics[ROLE_NAMES[role]] = summary(z, y)
            cv = curves(z, y)
            curve_data[ROLE_NAMES[role]] = {
                "tpr": cv.tpr.tolist(),
                "fpr": cv.fpr.tolist(),
                "pd": sigmoid(np.clip(cv.thresholds[1:], -50, 50)).tolist(),
            }
            if role == ROLE_TEST:
                self.test_logits = z
        return metrics, curve_data

    # 17
    async def export_model(self) -> dict[str, dict[str, Any]]:
        self._steps("ExportModel")
        answers = await self._all(
            lambda r: r.stub.ExportModel(pb.ExportModelRequest(), timeout=STEP_TIMEOUT_S)
        )
        own = model_part(self.name, self.encoders, self.w)
        own.update(intercept=self.b, role="label")
        parts: dict[str, dict[str, Any]] = {self.name: own}
        for n, a in answers.items():
            part = json.loads(a.json)
            if part.get("party") != n:
                raise InvalidArgument(f"feature party {n!r} exported another party's model")
            part["role"] = "feature"
            parts[n] = part
        return parts

    async def close_job(self, reason: str) -> None:
        self._steps("CloseJob")

        async def close(r: _Remote) -> None:
            with contextlib.suppress(grpc.RpcError):  # a party that is gone has nothing to close
                await r.stub.CloseJob(pb.CloseJobRequest(reason=reason[:200]), timeout=5.0)

        await asyncio.gather(*(close(r) for r in self.remotes.values()))
