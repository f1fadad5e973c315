"""The protocol's stages, in order, and the check both roles run before every step.

A feature party answers a step only from the stages listed as its predecessors below
(Flower-style: one function per step, each named for the step, the order enforced), so a
label party that skips a stage, repeats one (e.g. asks twice for the masked scores of the
same batch, which would reveal the difference of two partial scores) or runs them out of
order gets ``FAILED_PRECONDITION`` naming the expected stage — never an answer.
"""

from __future__ import annotations

from enum import StrEnum

from veil.errors import FailedPrecondition


class Stage(StrEnum):
    NEW = "new"
    OPENED = "opened"  # OpenJob: config checked, run keys made
    KEYED = "keyed"  # DistributeKeys: peers' signed mask keys verified
    GROUP_KEYED = "group_keyed"  # AcceptGroupKey: the PSI group key held
    BLINDED = "blinded"  # BlindIds: blinded ID set sent
    ALIGNED = "aligned"  # AlignRows: rows of the intersection, split known
    DESCRIBED = "described"  # DescribeColumns: encoders fitted on train rows
    BINNED = "binned"  # BinStatistics: encrypted per-bin label sums returned
    SELECTED = "selected"  # SelectFeatures: final design matrix
    ENCRYPTED = "encrypted"  # EncryptFeatures: Enc(packed X) sent
    FORWARDED = "forwarded"  # Forward: masked partial scores of a batch
    UPDATED = "updated"  # Backward: encrypted gradient applied
    VALIDATED = "validated"  # Validate: masked validation scores
    CHECKPOINTED = "checkpointed"  # Checkpoint: epoch committed to disk
    FINAL = "final"  # RestoreBest: best epoch's weights restored
    EVALUATED = "evaluated"  # Evaluate: masked scores of train / validation / test rows
    EXPORTED = "exported"  # ExportModel: this party's model part handed over
    CLOSED = "closed"


PREDECESSORS: dict[str, tuple[Stage, ...]] = {
    "OpenJob": (Stage.NEW,),
    "DistributeKeys": (Stage.OPENED,),
    "AcceptGroupKey": (Stage.KEYED,),
    "BlindIds": (Stage.GROUP_KEYED,),
    "EvaluateOprf": (Stage.BLINDED,),
    "AlignRows": (Stage.BLINDED,),
    "DescribeColumns": (Stage.ALIGNED,),
    "BinStatistics": (Stage.DESCRIBED,),
    "SelectFeatures": (Stage.DESCRIBED, Stage.BINNED),
    "EncryptFeatures": (Stage.SELECTED,),
    "Forward": (Stage.ENCRYPTED, Stage.UPDATED, Stage.CHECKPOINTED),
    "Backward": (Stage.FORWARDED,),
    "Validate": (Stage.UPDATED,),
    "Checkpoint": (Stage.VALIDATED,),
    "RestoreBest": (Stage.CHECKPOINTED, Stage.ENCRYPTED),
    "Evaluate": (Stage.FINAL, Stage.EVALUATED),
    "ExportModel": (Stage.EVALUATED, Stage.FINAL),
}


def check_stage(step: str, current: Stage) -> None:
    """Raise ``FailedPrecondition`` unless ``step`` may run in stage ``current``."""
    allowed = PREDECESSORS.get(step)
    if allowed is None:
        raise FailedPrecondition(f"unknown training step {step!r}")
    if current == Stage.CLOSED:
        raise FailedPrecondition(f"{step}: the training job is closed")
    if current not in allowed:
        expected = " or ".join(s.value for s in allowed)
        raise FailedPrecondition(
            f"{step} is out of order: this party is at stage {current.value!r}, "
            f"the step needs {expected!r}"
        )
