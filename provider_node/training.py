"""The feature-party role of joint training (联合建模): a provider's side of vertical
federated logistic regression.

:class:`FeatureParty` holds one job at a time and runs its steps — one method per
protocol step, named for it, each checking the stage order (:mod:`veil.training.stages`).
:class:`TrainingServicer` serves them as ``veil.v1.TrainingService`` to the label party
(mTLS role ``platform`` only).  What this party sends and learns at each step is in
``docs/training.md``; in short, it sends the label party only

* its IDs blinded with the feature parties' group key (PSI),
* per-bin *encrypted* label sums (re-randomized; the label party learns bin counts),
* its packed training rows encrypted under its **own** Paillier key,
* partial scores masked with pairwise masks that cancel only in the sum over all
  feature parties,
* at the end, its model part (encoders and weights), which the platform owns;

and it learns its own gradient per batch (never another party's), the rows of the
intersection, and (WOE encoding only) the WOE of its own bins.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import gmpy2
import grpc
import numpy as np
import numpy.typing as npt

from veil.config import TLSConfig
from veil.crypto import (
    MaskKey,
    PaillierKeys,
    RandomnessPool,
    SignedMaskKey,
    add_many,
    ciphertext_bytes,
    ciphertext_from_bytes,
    encrypt,
    public_key_bytes,
    public_key_from_bytes,
    rerandomize,
    sign_mask_key,
    verify_mask_key,
)
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from veil.server import ServiceBinding, require_peer
from veil.tls import PeerIdentity
from veil.training import psi
from veil.training.checkpoint import CheckpointStore
from veil.training.config import (
    ROLE_TEST,
    ROLE_TRAIN,
    ROLE_VALIDATION,
    JobConfig,
    min_batch_size,
)
from veil.training.encoding import ColumnEncoder, design_matrix, fit_encoders
from veil.training.model import model_part
from veil.training.optim import Optimizer
from veil.training.packing import (
    FR,
    FX,
    Packing,
    pack_rows,
    quantize_features,
    unpack_sums,
)
from veil.training.randomizers import NonHolderRandomizers
from veil.training.secure_sum import masked_scores, rows_digest
from veil.training.stages import Stage, check_stage
from veil.training.table import Column, PartyTable, subset
from veil.v1 import training_pb2 as pb
from veil.v1 import training_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "veil.v1.TrainingService"
_HEX = re.compile(r"[0-9a-f]{8,64}")
POINTS_PER_MESSAGE = 4096
ROWS_PER_MESSAGE = 1024
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def _u32(data: bytes, what: str) -> I64:
    if len(data) % 4:
        raise InvalidArgument(f"{what}: not a uint32 array")
    return np.frombuffer(data, dtype="<u4").astype(np.int64)


def _release_gil() -> None:
    gmpy2.get_context().allow_release_gil = True


class FeatureParty:
    """One provider's state for one training job (see the module docstring)."""

    def __init__(
        self,
        name: str,
        load: Callable[[], PartyTable],
        tls: TLSConfig,
        state_dir: Path,
        *,
        workers: int = 2,
    ) -> None:
        self.name = name
        self._load = load
        self.tls = tls
        self.state_dir = Path(state_dir)
        self.workers = max(1, workers)
        self.stage = Stage.NEW
        self._reset()

    def _reset(self) -> None:
        self.stage = Stage.NEW
        self.job_id = ""
        self.run_id = ""
        self.parties: list[str] = []
        self.config = JobConfig()
        self.table: PartyTable | None = None
        self.mask_key: MaskKey | None = None
        self.peer_keys: dict[str, bytes] = {}
        self.paillier: PaillierKeys | None = None
        self.group_secret = b""
        self.blind_order: list[int] = []
        self.blinded: list[bytes] = []
        self.oprf_used: set[str] = set()
        self.rows: I64 = np.zeros(0, dtype=np.int64)  # table row of each aligned row
        self.roles: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        self.digest = ""
        self.encoders: list[ColumnEncoder] = []
        self.x: dict[int, F64] = {}
        self.w: F64 = np.zeros(0)
        self.best_w: F64 = np.zeros(0)
        self.best_epoch = -1
        self.optimizer: Optimizer | None = None
        self.checkpoints: CheckpointStore | None = None
        self.resume_epoch = -1
        self.last_step: tuple[int, int] = (-1, -1)
        self.last_rows: I64 = np.zeros(0, dtype=np.int64)
        self.validated: set[int] = set()
        self.evaluated: set[int] = set()
        self.packing: Packing | None = None
        self._xq_abs: I64 = np.zeros((0, 0), dtype=np.int64)
        self._columns: dict[str, Column] = {}

    # -- helpers -------------------------------------------------------------------------

    @property
    def request_id(self) -> str:
        """Salt of every pairwise mask of this run: job, run and the row alignment."""
        return f"{self.job_id}|{self.run_id}|{self.digest}"

    @property
    def width(self) -> int:
        return int(self.w.size)

    def _rows_of(self, role: int) -> I64:
        return np.nonzero(self.roles == role)[0].astype(np.int64)

    def _mask(self, u: F64, context: str) -> bytes:
        assert self.mask_key is not None
        return masked_scores(
            u, self.mask_key, self.name, self.peer_keys, request_id=self.request_id, context=context
        )

    # -- 1. OpenJob ----------------------------------------------------------------------

    def open_job(self, req: pb.OpenJobRequest) -> pb.OpenJobResponse:
        if self.stage != Stage.NEW:
            log.info("job %s replaced by a new OpenJob", self.job_id)
            self._reset()
        check_stage("OpenJob", self.stage)
        if not _HEX.fullmatch(req.job_id) or not _HEX.fullmatch(req.run_id):
            raise InvalidArgument("job_id and run_id must be lower-case hex")
        if req.party != self.name:
            raise InvalidArgument(f"this feature party is {self.name!r}, not {req.party!r}")
        parties = list(req.feature_parties)
        if parties != sorted(set(parties)) or self.name not in parties:
            raise InvalidArgument("feature_parties must be sorted, distinct and include me")
        config = JobConfig.from_json(req.config_json)
        if len(parties) < 2 and not config.allow_single_feature_party:
            raise FailedPrecondition(
                "a job needs at least two feature parties: with one, the secure sum of "
                "partial scores is that party's own score (see docs/training.md)"
            )
        table = self._load()
        mask_key = MaskKey.generate()
        cert_pem = Path(str(self.tls.cert)).read_bytes()
        signed = sign_mask_key(mask_key, str(self.tls.key), cert_pem)
        self.job_id, self.run_id, self.parties, self.config = (
            req.job_id,
            req.run_id,
            parties,
            config,
        )
        self.table = table
        self.mask_key = mask_key
        self.paillier = PaillierKeys.generate(config.paillier_bits)
        self.checkpoints = CheckpointStore(self.state_dir, req.job_id)
        self.resume_epoch = int(req.resume_epoch)
        self.stage = Stage.OPENED
        log.info("opened job %s run %s (%d rows)", self.job_id, self.run_id, len(table))
        return pb.OpenJobResponse(
            signed_mask_key=signed.to_bytes(),
            rows=len(table),
            columns=len(table.columns),
            checkpoint_epoch=self.checkpoints.latest(),
        )

    # -- 2. DistributeKeys ---------------------------------------------------------------

    def distribute_keys(self, req: pb.DistributeKeysRequest) -> pb.DistributeKeysResponse:
        check_stage("DistributeKeys", self.stage)
        assert self.mask_key is not None
        if sorted(req.signed_mask_keys) != self.parties:
            raise InvalidArgument("the roster must hold a signed mask key for every feature party")
        ca_pem = Path(str(self.tls.ca)).read_bytes()
        keys: dict[str, bytes] = {}
        for party, raw in req.signed_mask_keys.items():
            signed = SignedMaskKey.from_bytes(raw)
            if party == self.name:
                if signed.public_key != self.mask_key.public_bytes():
                    raise InvalidArgument("the roster's mask key for me is not mine")
                keys[party] = signed.public_key
                continue
            keys[party] = verify_mask_key(signed, ca_pem, PeerIdentity("provider", party))
        self.peer_keys = keys
        sealed: dict[str, bytes] = {}
        if self.name == self.parties[0]:
            self.group_secret = secrets.token_bytes(psi.GROUP_SECRET_BYTES)
            for party in self.parties[1:]:
                sealed[party] = psi.seal_group_secret(
                    self.group_secret,
                    self.mask_key,
                    self.name,
                    party,
                    keys[party],
                    self.job_id + self.run_id,
                )
        self.stage = Stage.KEYED
        return pb.DistributeKeysResponse(sealed_group_keys=sealed)

    # -- 3. AcceptGroupKey ---------------------------------------------------------------

    def accept_group_key(self, req: pb.AcceptGroupKeyRequest) -> pb.AcceptGroupKeyResponse:
        check_stage("AcceptGroupKey", self.stage)
        assert self.mask_key is not None
        if req.leader != self.parties[0]:
            raise InvalidArgument(f"the leader is {self.parties[0]!r}, not {req.leader!r}")
        if self.name != req.leader:
            self.group_secret = psi.open_group_secret(
                req.sealed_group_key,
                self.mask_key,
                self.name,
                req.leader,
                self.peer_keys[req.leader],
                self.job_id + self.run_id,
            )
        elif not self.group_secret:
            raise FailedPrecondition("the leader has no group key")
        self.stage = Stage.GROUP_KEYED
        return pb.AcceptGroupKeyResponse()

    # -- 4. BlindIds ---------------------------------------------------------------------

    def blind_ids(self) -> list[bytes]:
        """``[K1]H(id)`` for every ID, in a secret random order (kept for AlignRows)."""
        check_stage("BlindIds", self.stage)
        assert self.table is not None
        order = list(range(len(self.table)))
        secrets.SystemRandom().shuffle(order)
        k1 = psi.Blinder(self.group_secret[:32])
        self.blinded = k1.apply(psi.hash_to_point(self.table.ids[i]) for i in order)
        self.blind_order = order
        self.stage = Stage.BLINDED
        return [
            psi.join_points(self.blinded[i : i + POINTS_PER_MESSAGE])
            for i in range(0, len(self.blinded), POINTS_PER_MESSAGE)
        ]

    # -- 5. EvaluateOprf (leader) --------------------------------------------------------

    def evaluate_oprf(self, kind: str, points: bytes) -> bytes:
        check_stage("EvaluateOprf", self.stage)
        if self.name != self.parties[0]:
            raise PermissionDenied("only the leader evaluates the group key for the label party")
        pts = psi.split_points(points)
        if kind == "ids":
            out = psi.Blinder(self.group_secret[32:]).apply(
                psi.Blinder(self.group_secret[:32]).apply(pts)
            )
        elif kind == "common":
            if len(pts) > len(self.blinded):
                raise InvalidArgument("the common set cannot be larger than my own set")
            out = psi.Blinder(self.group_secret[32:]).apply(pts)
        else:
            raise InvalidArgument(f"unknown OPRF kind {kind!r}")
        return psi.join_points(out)

    def finish_oprf(self, kind: str) -> None:
        """One stream per kind per run: the label party gets one batch of answers each."""
        if kind in self.oprf_used:
            raise FailedPrecondition(f"EvaluateOprf({kind}) was already answered in this run")
        self.oprf_used.add(kind)

    # -- 6. AlignRows --------------------------------------------------------------------

    def align_rows(self, req: pb.AlignRowsRequest) -> pb.AlignRowsResponse:
        check_stage("AlignRows", self.stage)
        positions = _u32(req.positions, "positions")
        roles = np.frombuffer(req.roles, dtype=np.uint8).copy()
        if len(roles) != len(positions):
            raise InvalidArgument("positions and roles differ in length")
        if len(positions) < 10:
            raise InvalidArgument(f"only {len(positions)} aligned rows: need at least 10")
        if positions.size and (positions.max() >= len(self.blind_order)):
            raise InvalidArgument("a position is outside my blinded set")
        if len(np.unique(positions)) != len(positions):
            raise InvalidArgument("positions repeat")
        if roles.size and int(roles.max()) > ROLE_TEST:
            raise InvalidArgument("a role is not 0, 1 or 2")
        for role in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST):
            if not (roles == role).any():
                raise InvalidArgument(f"the split has no rows of role {role}")
        self.rows = np.asarray([self.blind_order[int(p)] for p in positions], dtype=np.int64)
        self.roles = roles
        h = hashlib.sha256(b"veil-training-alignment-v1\x00")
        for p in positions:
            h.update(self.blinded[int(p)])
        self.digest = h.hexdigest()
        self.stage = Stage.ALIGNED
        log.info(
            "aligned %d rows (train %d, validation %d, test %d)",
            len(self.rows),
            int((roles == ROLE_TRAIN).sum()),
            int((roles == ROLE_VALIDATION).sum()),
            int((roles == ROLE_TEST).sum()),
        )
        return pb.AlignRowsResponse(rows=len(self.rows), alignment_digest=self.digest)

    # -- 7. DescribeColumns --------------------------------------------------------------

    def _aligned_columns(self) -> dict[str, Column]:
        assert self.table is not None
        return self.table.take(self.rows).columns

    def describe_columns(self) -> pb.DescribeColumnsResponse:
        check_stage("DescribeColumns", self.stage)
        self._columns = self._aligned_columns()
        self.encoders = fit_encoders(self._columns, self._rows_of(ROLE_TRAIN), self.config)
        self.stage = Stage.DESCRIBED
        return pb.DescribeColumnsResponse(
            columns=[
                pb.ColumnInfo(name=e.name, kind=e.kind, status=e.status, bins=e.n_bins)
                for e in self.encoders
            ]
        )

    # -- 8. BinStatistics ----------------------------------------------------------------

    def bin_statistics(self, public_key: bytes, ciphertexts: bytes) -> pb.BinStatisticsResponse:
        """Per bin of every kept column: ``Enc(Σ_{i∈bin} y_i)``, re-randomized with full
        randomizers (the label party holds this key), plus the bin's row count."""
        check_stage("BinStatistics", self.stage)
        pk = public_key_from_bytes(public_key)
        size = pk.ciphertext_size
        train = self._rows_of(ROLE_TRAIN)
        if len(ciphertexts) != size * len(train):
            raise InvalidArgument(
                f"expected {len(train)} encrypted labels, got {len(ciphertexts) / size:g}"
            )
        labels = [
            ciphertext_from_bytes(pk, ciphertexts[i : i + size])
            for i in range(0, len(ciphertexts), size)
        ]
        features = []
        with RandomnessPool(pk, size=64) as pool:
            for enc in self.encoders:
                if enc.dropped:
                    continue
                bins = enc.bins(subset(self._columns[enc.name], train))
                counts = np.bincount(bins, minlength=enc.n_bins)
                sums = []
                for b in range(enc.n_bins):
                    members = np.nonzero(bins == b)[0]
                    if members.size:
                        total = add_many(labels[int(i)] for i in members)
                        sums.append(ciphertext_bytes(rerandomize(total, pool)))
                    else:
                        sums.append(ciphertext_bytes(encrypt(pk, 0, pool)))
                features.append(
                    pb.FeatureBins(
                        name=enc.name, counts=[int(c) for c in counts], bad_sums=b"".join(sums)
                    )
                )
        self.stage = Stage.BINNED
        log.info("binned %d columns over %d encrypted labels", len(features), len(train))
        return pb.BinStatisticsResponse(features=features)

    # -- 9. SelectFeatures ---------------------------------------------------------------

    def select_features(self, req: pb.SelectFeaturesRequest) -> pb.SelectFeaturesResponse:
        check_stage("SelectFeatures", self.stage)
        keep = set(req.keep)
        known = {e.name for e in self.encoders if not e.dropped}
        unknown = sorted(keep - known)
        if unknown:
            raise InvalidArgument(f"cannot keep {unknown[0]!r}: not a usable column of mine")
        train = self._rows_of(ROLE_TRAIN)
        for enc in self.encoders:
            if enc.dropped:
                continue
            if enc.name not in keep:
                enc.status = "not_selected"
                continue
            if self.config.encoding == "woe":
                table = req.woe.get(enc.name)
                if table is None:
                    raise InvalidArgument(f"WOE encoding needs a WOE table for {enc.name!r}")
                counts = np.bincount(
                    enc.bins(subset(self._columns[enc.name], train)),
                    minlength=enc.n_bins,
                )
                woe = np.clip(np.asarray(table.woe), -self.config.clip, self.config.clip)
                enc.set_woe([float(v) for v in woe], [int(c) for c in counts])
        x_all = design_matrix(self.encoders, self._columns, len(self.rows))
        self.x = {
            role: x_all[self._rows_of(role)] for role in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST)
        }
        d = x_all.shape[1]
        names = [n for e in self.encoders for n in e.encoded_names()]
        n_train = len(train)
        if d and n_train < min_batch_size(d):
            raise FailedPrecondition(
                f"{n_train} training rows are too few for {d} encoded features "
                f"(at least {min_batch_size(d)}: a smaller batch would reveal residuals)"
            )
        self.w = np.zeros(d)
        self.best_w = self.w.copy()
        self.best_epoch = -1
        self.optimizer = Optimizer.create(
            self.config.optimizer,
            self.config.learning_rate,
            self.config.lr_decay,
            self.config.l2_for(n_train),
            np.ones(d),
        )
        if req.resume_epoch >= 0:
            self._load_checkpoint(int(req.resume_epoch), names)
        self.stage = Stage.SELECTED
        return pb.SelectFeaturesResponse(width=d, encoded_names=names)

    def _load_checkpoint(self, epoch: int, names: list[str]) -> None:
        assert self.checkpoints is not None and self.optimizer is not None
        doc = self.checkpoints.load(epoch)
        if doc.get("encoded_names") != names:
            raise FailedPrecondition(
                f"checkpoint of epoch {epoch} was written for other features; cannot resume"
            )
        self.w = np.asarray(doc["weights"], dtype=np.float64)
        self.best_w = np.asarray(doc["best_weights"], dtype=np.float64)
        self.best_epoch = int(doc["best_epoch"])
        self.optimizer.load_state(doc["optimizer"])
        self.last_step = (epoch, 1 << 30)
        log.info("resumed job %s from epoch %d", self.job_id, epoch)

    # -- 10. EncryptFeatures -------------------------------------------------------------

    def encrypt_features(self) -> Iterator[pb.EncryptedFeatures]:
        """The training rows, packed (:mod:`veil.training.packing`) and encrypted under
        this run's own key, row-major; encryption runs on ``workers`` threads."""
        check_stage("EncryptFeatures", self.stage)
        assert self.paillier is not None
        pk = self.paillier.public
        x = self.x[ROLE_TRAIN]
        d = x.shape[1]
        header = pb.EncryptedFeatures(public_key=public_key_bytes(pk), features=d)
        if d == 0:
            self.stage = Stage.ENCRYPTED
            yield header
            return
        packing = Packing(d, pk.bits)
        header.chunks, header.slots = packing.chunks, packing.slots
        xq = quantize_features(x)
        self._xq_abs = np.abs(xq)
        randomizers = NonHolderRandomizers(pk, expected=len(xq) * packing.chunks)

        def encrypt_block(start: int) -> bytes:
            _release_gil()
            block = xq[start : start + ROWS_PER_MESSAGE]
            plain = [pack_rows(block, packing, c) for c in range(packing.chunks)]
            out = []
            for i in range(len(block)):
                for c in range(packing.chunks):
                    ct = encrypt(pk, plain[c][i], randomizers)  # type: ignore[arg-type]
                    out.append(ciphertext_bytes(ct))
            return b"".join(out)

        yield header
        starts = list(range(0, len(xq), ROWS_PER_MESSAGE))
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for data in pool.map(encrypt_block, starts):
                yield pb.EncryptedFeatures(ciphertexts=data)
        self.packing = packing
        self.stage = Stage.ENCRYPTED

    # -- 11. Forward ---------------------------------------------------------------------

    def forward(self, req: pb.ForwardRequest) -> pb.MaskedScores:
        check_stage("Forward", self.stage)
        step = (int(req.epoch), int(req.batch))
        if step <= self.last_step:
            raise FailedPrecondition(
                f"Forward for epoch {step[0]} batch {step[1]} does not follow the last step; "
                "each batch's masked scores are given once"
            )
        rows = _u32(req.rows, "rows")
        n_train = len(self.x[ROLE_TRAIN])
        if rows.size == 0 or rows.max() >= n_train or len(np.unique(rows)) != len(rows):
            raise InvalidArgument("batch rows must be distinct training rows")
        u = self.x[ROLE_TRAIN][rows] @ self.w if self.width else np.zeros(len(rows))
        self.last_step, self.last_rows = step, rows
        self.stage = Stage.FORWARDED
        context = f"forward|{step[0]}|{step[1]}|{rows_digest(rows)}"
        return pb.MaskedScores(values=self._mask(u, context))

    # -- 12. Backward --------------------------------------------------------------------

    def backward(self, req: pb.BackwardRequest) -> pb.BackwardResponse:
        check_stage("Backward", self.stage)
        if (int(req.epoch), int(req.batch)) != self.last_step:
            raise FailedPrecondition("Backward must answer the last Forward's batch")
        assert self.paillier is not None and self.optimizer is not None
        batch = len(self.last_rows)
        if self.width:
            if batch < min_batch_size(self.width):
                raise FailedPrecondition(
                    f"batch of {batch} rows is below {min_batch_size(self.width)} for "
                    f"{self.width} features: its gradient could reveal residuals"
                )
            pk = self.paillier.public
            size = pk.ciphertext_size
            assert self.packing is not None
            if len(req.gradient) != size * self.packing.chunks:
                raise InvalidArgument("the encrypted gradient has the wrong number of chunks")
            sums: list[int] = []
            for c in range(self.packing.chunks):
                ct = ciphertext_from_bytes(pk, req.gradient[c * size : (c + 1) * size])
                cols = self.packing.chunk_columns(c)
                sums.extend(unpack_sums(self.paillier.decrypt_centred(ct), len(cols)))
            g_int = np.asarray(sums, dtype=np.float64)
            bound = self._xq_abs[self.last_rows].sum(axis=0).astype(np.float64) * (1 << FR)
            if np.any(np.abs(g_int) > bound + 1):
                raise InvalidArgument(
                    "the decrypted gradient exceeds what any residuals in [-1, 1] give; refused"
                )
            grad = g_int / float(1 << (FX + FR)) / batch
            self.w = self.optimizer.step(self.w, grad, int(req.epoch))
        self.stage = Stage.UPDATED
        return pb.BackwardResponse()

    # -- 13. Validate --------------------------------------------------------------------

    def validate(self, req: pb.ValidateRequest) -> pb.MaskedScores:
        check_stage("Validate", self.stage)
        epoch = int(req.epoch)
        if epoch != self.last_step[0] or epoch in self.validated:
            raise FailedPrecondition("Validate answers once per epoch, after its last batch")
        self.validated.add(epoch)
        x = self.x[ROLE_VALIDATION]
        u = x @ self.w if self.width else np.zeros(len(x))
        self.stage = Stage.VALIDATED
        return pb.MaskedScores(values=self._mask(u, f"validate|{epoch}"))

    # -- 14. Checkpoint ------------------------------------------------------------------

    def checkpoint(self, req: pb.CheckpointRequest) -> pb.CheckpointResponse:
        check_stage("Checkpoint", self.stage)
        assert self.checkpoints is not None and self.optimizer is not None
        epoch = int(req.epoch)
        if epoch != self.last_step[0]:
            raise FailedPrecondition("Checkpoint must follow the epoch's validation")
        if req.best:
            self.best_w, self.best_epoch = self.w.copy(), epoch
        self.checkpoints.save(
            epoch,
            {
                "party": self.name,
                "encoded_names": [n for e in self.encoders for n in e.encoded_names()],
                "weights": self.w.tolist(),
                "best_weights": self.best_w.tolist(),
                "best_epoch": self.best_epoch,
                "optimizer": self.optimizer.state(),
            },
        )
        self.last_step = (epoch, 1 << 30)  # the next Forward must be a later epoch
        self.stage = Stage.CHECKPOINTED
        return pb.CheckpointResponse()

    # -- 15. RestoreBest -----------------------------------------------------------------

    def restore_best(self, req: pb.RestoreBestRequest) -> pb.RestoreBestResponse:
        check_stage("RestoreBest", self.stage)
        best = int(req.best_epoch)
        if best >= 0:
            if best != self.best_epoch:
                raise FailedPrecondition(
                    f"the best epoch here is {self.best_epoch}, not {best}: checkpoints disagree"
                )
            self.w = self.best_w.copy()
        self.stage = Stage.FINAL
        return pb.RestoreBestResponse()

    # -- 16. Evaluate --------------------------------------------------------------------

    def evaluate(self, req: pb.EvaluateRequest) -> pb.MaskedScores:
        check_stage("Evaluate", self.stage)
        role = int(req.role)
        if role not in (ROLE_TRAIN, ROLE_VALIDATION, ROLE_TEST) or role in self.evaluated:
            raise FailedPrecondition("Evaluate answers each of train, validation, test once")
        self.evaluated.add(role)
        x = self.x[role]
        u = x @ self.w if self.width else np.zeros(len(x))
        self.stage = Stage.EVALUATED
        return pb.MaskedScores(values=self._mask(u, f"evaluate|{role}"))

    # -- 17. ExportModel -----------------------------------------------------------------

    def export_model(self) -> pb.ModelPart:
        check_stage("ExportModel", self.stage)
        part = model_part(self.name, self.encoders, self.w)
        self.stage = Stage.EXPORTED
        return pb.ModelPart(party=self.name, json=json.dumps(part, sort_keys=True))

    def close_job(self, reason: str) -> None:
        if self.job_id:
            log.info("job %s closed: %s", self.job_id, reason or "done")
        self._reset()


# --------------------------------------------------------------------------- gRPC


Context = grpc.aio.ServicerContext[Any, Any]


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    """Serves one :class:`FeatureParty` to the label party (role ``platform``)."""

    def __init__(self, party: FeatureParty) -> None:
        self.party = party
        self.lock = asyncio.Lock()

    async def _step(self, context: Context, fn: Callable[..., Any], *args: Any) -> Any:
        require_peer(context, roles=("platform",))
        async with self.lock:
            started = time.monotonic()
            result = await asyncio.to_thread(fn, *args)
            log.debug("%s took %.3fs", fn.__name__, time.monotonic() - started)
            return result

    async def OpenJob(self, request: pb.OpenJobRequest, context: Context) -> pb.OpenJobResponse:
        result: pb.OpenJobResponse = await self._step(context, self.party.open_job, request)
        return result

    async def DistributeKeys(
        self, request: pb.DistributeKeysRequest, context: Context
    ) -> pb.DistributeKeysResponse:
        result: pb.DistributeKeysResponse = await self._step(
            context, self.party.distribute_keys, request
        )
        return result

    async def AcceptGroupKey(
        self, request: pb.AcceptGroupKeyRequest, context: Context
    ) -> pb.AcceptGroupKeyResponse:
        result: pb.AcceptGroupKeyResponse = await self._step(
            context, self.party.accept_group_key, request
        )
        return result

    async def BlindIds(
        self, request: pb.BlindIdsRequest, context: Context
    ) -> AsyncIterator[pb.BlindedIds]:
        chunks: list[bytes] = await self._step(context, self.party.blind_ids)
        for chunk in chunks:
            yield pb.BlindedIds(points=chunk)

    async def EvaluateOprf(
        self, request_iterator: AsyncIterator[pb.OprfRequest], context: Context
    ) -> AsyncIterator[pb.BlindedIds]:
        require_peer(context, roles=("platform",))
        kind = ""
        async with self.lock:
            async for req in request_iterator:
                if not kind:
                    kind = req.kind
                    self.party.finish_oprf(kind)
                elif req.kind != kind:
                    raise InvalidArgument("one EvaluateOprf stream carries one kind")
                out = await asyncio.to_thread(self.party.evaluate_oprf, kind, req.points)
                yield pb.BlindedIds(points=out)

    async def AlignRows(
        self, request: pb.AlignRowsRequest, context: Context
    ) -> pb.AlignRowsResponse:
        result: pb.AlignRowsResponse = await self._step(context, self.party.align_rows, request)
        return result

    async def DescribeColumns(
        self, request: pb.DescribeColumnsRequest, context: Context
    ) -> pb.DescribeColumnsResponse:
        result: pb.DescribeColumnsResponse = await self._step(context, self.party.describe_columns)
        return result

    async def BinStatistics(
        self, request_iterator: AsyncIterator[pb.EncryptedLabels], context: Context
    ) -> pb.BinStatisticsResponse:
        require_peer(context, roles=("platform",))
        key = b""
        parts: list[bytes] = []
        async for msg in request_iterator:
            if msg.public_key:
                key = msg.public_key
            parts.append(msg.ciphertexts)
        result: pb.BinStatisticsResponse = await self._step(
            context, self.party.bin_statistics, key, b"".join(parts)
        )
        return result

    async def SelectFeatures(
        self, request: pb.SelectFeaturesRequest, context: Context
    ) -> pb.SelectFeaturesResponse:
        result: pb.SelectFeaturesResponse = await self._step(
            context, self.party.select_features, request
        )
        return result

    async def EncryptFeatures(
        self, request: pb.EncryptFeaturesRequest, context: Context
    ) -> AsyncIterator[pb.EncryptedFeatures]:
        require_peer(context, roles=("platform",))
        async with self.lock:
            it = self.party.encrypt_features()
            while True:
                msg = await asyncio.to_thread(next, it, None)
                if msg is None:
                    return
                yield msg

    async def Forward(self, request: pb.ForwardRequest, context: Context) -> pb.MaskedScores:
        result: pb.MaskedScores = await self._step(context, self.party.forward, request)
        return result

    async def Backward(self, request: pb.BackwardRequest, context: Context) -> pb.BackwardResponse:
        result: pb.BackwardResponse = await self._step(context, self.party.backward, request)
        return result

    async def Validate(self, request: pb.ValidateRequest, context: Context) -> pb.MaskedScores:
        result: pb.MaskedScores = await self._step(context, self.party.validate, request)
        return result

    async def Checkpoint(
        self, request: pb.CheckpointRequest, context: Context
    ) -> pb.CheckpointResponse:
        result: pb.CheckpointResponse = await self._step(context, self.party.checkpoint, request)
        return result

    async def RestoreBest(
        self, request: pb.RestoreBestRequest, context: Context
    ) -> pb.RestoreBestResponse:
        result: pb.RestoreBestResponse = await self._step(context, self.party.restore_best, request)
        return result

    async def Evaluate(self, request: pb.EvaluateRequest, context: Context) -> pb.MaskedScores:
        result: pb.MaskedScores = await self._step(context, self.party.evaluate, request)
        return result

    async def ExportModel(self, request: pb.ExportModelRequest, context: Context) -> pb.ModelPart:
        result: pb.ModelPart = await self._step(context, self.party.export_model)
        return result

    async def CloseJob(self, request: pb.CloseJobRequest, context: Context) -> pb.CloseJobResponse:
        await self._step(context, self.party.close_job, request.reason)
        return pb.CloseJobResponse()


def training_binding(party: FeatureParty) -> ServiceBinding:
    servicer = TrainingServicer(party)
    return ServiceBinding(
        SERVICE_NAME, lambda s: training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, s)
    )
