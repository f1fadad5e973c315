"""Hyper-parameters of one training job, and the deterministic row split.

The label party chooses the configuration and sends it to every feature party in
``OpenJob`` as canonical JSON; every party validates it with :meth:`JobConfig.from_json`
(a feature party refuses settings that would weaken its own protection, e.g. a batch
smaller than :func:`min_batch_size` for its feature count).

Objective (the same as scikit-learn's ``LogisticRegression(C)`` up to a constant factor)::

    L(w, b) = mean_i logloss(y_i, σ(b + Σ_p x_i^(p)·w^(p)))  +  (λ/2)·‖w‖²

with ``λ = 1 / (C · n_fit)`` when ``l2`` is ``None`` ("auto"), ``n_fit`` the number of
rows the gradient is averaged over.  The intercept ``b`` (at the label party) is not
penalised.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument

ROLE_TRAIN = 0
ROLE_VALIDATION = 1
ROLE_TEST = 2
ROLE_NAMES = {ROLE_TRAIN: "train", ROLE_VALIDATION: "validation", ROLE_TEST: "test"}

OPTIMIZERS = ("adam", "sgd")
ENCODINGS = ("standard", "woe")
MAX_BATCH = 1 << 20
MIN_BATCH = 32
BATCH_PER_FEATURE = 4
"""A feature party with ``d`` encoded features sees ``d`` sums ``Σ_i x_ij r_i`` per batch;
with a batch of at most ``d`` rows it could solve for the residuals (hence labels).  We
require ``batch ≥ 4·d`` (and ≥ 32): the system stays under-determined with a wide margin."""


AUTO_BATCH_CAP = 512
AUTO_BATCHES_PER_EPOCH = 32
"""``batch_size = 0`` (auto): about 32 mini-batches per epoch, at most 512 rows each.  A
fixed 512 leaves a small training set (a few thousand rows) with a handful of optimiser
steps per epoch, so the default 30 epochs end far from the optimum; 32 steps per epoch
converge there, and large sets keep 512-row batches."""


def min_batch_size(features: int) -> int:
    return max(MIN_BATCH, BATCH_PER_FEATURE * int(features))


def job_batch_size(batch_size: int, train_rows: int, widest: int) -> int:
    """The mini-batch size of a job with ``train_rows`` training rows, whose widest party
    has ``widest`` encoded features: ``batch_size`` (0: auto, see
    :data:`AUTO_BATCHES_PER_EPOCH`), never below :func:`min_batch_size` ``(widest)``, the
    floor every feature party enforces itself."""
    if batch_size == 0:
        batch_size = min(AUTO_BATCH_CAP, train_rows // AUTO_BATCHES_PER_EPOCH)
    return max(batch_size, min_batch_size(widest))


@dataclass(frozen=True)
class JobConfig:
    test_size: float = 0.3
    validation_size: float = 0.2
    seed: int = 0
    max_epochs: int = 30
    batch_size: int = 0
    """Rows per mini-batch; 0 = auto (:func:`job_batch_size`)."""
    optimizer: str = "adam"
    learning_rate: float = 0.02
    lr_decay: float = 0.2
    """Learning rate in epoch e (from 0): ``learning_rate / (1 + lr_decay·e)``."""
    l2: float | None = None
    """λ of the objective; ``None`` = ``1/(C·n_fit)`` with C = 1 (scikit-learn's default)."""
    patience: int = 3
    min_delta: float = 1e-4
    encoding: str = "standard"
    binning: bool = True
    iv_threshold: float = 0.0
    max_bins: int = 10
    min_bin_fraction: float = 0.02
    max_categories: int = 32
    min_category_count: int = 5
    clip: float = 8.0
    paillier_bits: int = 2048
    allow_single_feature_party: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidArgument:
            return InvalidArgument(f"training config {name}: {why}")

        if not 0.0 < self.test_size < 0.9:
            raise bad("test_size", "must be in (0, 0.9)")
        if not 0.0 < self.validation_size < 0.9:
            raise bad("validation_size", "must be in (0, 0.9)")
        if not 1 <= self.max_epochs <= 10_000:
            raise bad("max_epochs", "must be in 1..10000")
        if self.batch_size != 0 and not MIN_BATCH <= self.batch_size <= MAX_BATCH:
            raise bad("batch_size", f"must be 0 (auto) or in {MIN_BATCH}..{MAX_BATCH}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        if not 0.0 < self.learning_rate <= 10.0 or not math.isfinite(self.learning_rate):
            raise bad("learning_rate", "must be in (0, 10]")
        if not 0.0 <= self.lr_decay <= 100.0:
            raise bad("lr_decay", "must be in [0, 100]")
        if self.l2 is not None and not 0.0 <= self.l2 <= 100.0:
            raise bad("l2", "must be in [0, 100]")
        if not 1 <= self.patience <= 1000:
            raise bad("patience", "must be in 1..1000")
        if not 0.0 <= self.min_delta < 1.0:
            raise bad("min_delta", "must be in [0, 1)")
        if self.encoding not in ENCODINGS:
            raise bad("encoding", f"must be one of {', '.join(ENCODINGS)}")
        if not 0.0 <= self.iv_threshold < 10.0:
            raise bad("iv_threshold", "must be in [0, 10)")
        if not 2 <= self.max_bins <= 32:
            raise bad("max_bins", "must be in 2..32")
        if not 0.0 < self.min_bin_fraction <= 0.5:
            raise bad("min_bin_fraction", "must be in (0, 0.5]")
        if not 2 <= self.max_categories <= 63:
            raise bad("max_categories", "must be in 2..63")
        if not 1 <= self.min_category_count <= 10_000:
            raise bad("min_category_count", "must be in 1..10000")
        if not 1.0 <= self.clip <= 15.0:
            raise bad("clip", "must be in [1, 15] (standard deviations)")
        if self.paillier_bits < 2048:
            raise bad("paillier_bits", "must be at least 2048 (the cryptographic floor)")

    def lr(self, epoch: int) -> float:
        return self.learning_rate / (1.0 + self.lr_decay * epoch)

    def l2_for(self, n_fit: int) -> float:
        return self.l2 if self.l2 is not None else 1.0 / max(1, n_fit)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> JobConfig:
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument("training config is not JSON") from None
        if not isinstance(raw, dict):
            raise InvalidArgument("training config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidArgument(f"training config {unknown[0]}: unknown setting")
        return cls(**_typed(raw))


def _typed(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(JobConfig):
        if f.name not in raw:
            continue
        v = raw[f.name]
        default = getattr(JobConfig, f.name, None)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise InvalidArgument(f"training config {f.name}: must be true or false")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidArgument(f"training config {f.name}: must be an integer")
        elif isinstance(default, float) or f.name == "l2":
            if v is None and f.name == "l2":
                pass
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise InvalidArgument(f"training config {f.name}: must be a number")
            else:
                v = float(v)
        elif isinstance(default, str) and not isinstance(v, str):
            raise InvalidArgument(f"training config {f.name}: must be a string")
        out[f.name] = v
    return out


def split_roles(
    labels: npt.NDArray[np.integer[Any]] | npt.NDArray[np.floating[Any]],
    test_size: float,
    validation_size: float,
    seed: int,
) -> npt.NDArray[np.uint8]:
    """Role of each aligned row: train (0), validation (1) or test (2), stratified by label.

    Deterministic in ``(labels, test_size, validation_size, seed)``: within each class, a
    permutation from ``numpy.random.Generator(PCG64([seed, class]))``; its first
    ``round(n_c·test_size)`` rows are test, the next ``round((n_c − test)·validation_size)``
    validation, the rest train.  Stratifying keeps the default rate of every split at the
    population's, which matters at the low default rates of credit data.  Rows are in the
    job's order (sorted by ID), so anyone holding the same IDs, labels and seed (the parity
    tests) reproduces the split.
    """
    y = np.asarray(labels).astype(np.int64)
    n = len(y)
    if n < 10:
        raise InvalidArgument(f"only {n} aligned rows: need at least 10 to split")
    roles = np.zeros(n, dtype=np.uint8)
    for cls in (0, 1):
        idx = np.nonzero(y == cls)[0]
        rng = np.random.Generator(np.random.PCG64([seed, cls]))
        perm = idx[rng.permutation(len(idx))]
        n_test = round(len(idx) * test_size)
        n_val = round((len(idx) - n_test) * validation_size)
        roles[perm[:n_test]] = ROLE_TEST
        roles[perm[n_test : n_test + n_val]] = ROLE_VALIDATION
    if int((roles == ROLE_TRAIN).sum()) < 2:
        raise InvalidArgument("the split leaves fewer than 2 training rows")
    return roles


def epoch_batches(
    train_rows: int, batch_size: int, seed: int, epoch: int
) -> list[npt.NDArray[np.int64]]:
    """The mini-batches of one epoch: a fresh permutation per ``(seed, epoch)``.

    A short last batch is merged into the one before it, so every batch has at least
    ``batch_size`` rows (the floor :func:`min_batch_size` protects) unless the whole
    training set is smaller, in which case there is one batch of every row.
    """
    rng = np.random.Generator(np.random.PCG64([seed, 1 + epoch]))
    perm = rng.permutation(train_rows).astype(np.int64)
    count = max(1, train_rows // batch_size)
    return [
        perm[i * batch_size : (i + 1) * batch_size if i < count - 1 else train_rows]
        for i in range(count)
    ]
