"""Per-party checkpoints: each party writes its own state, after each completed epoch.

A job is resumable from the last epoch *every* party completed: the label party commits
epoch ``e`` (its ``job.json``) only after every feature party acknowledged writing its
checkpoint ``e``, and on resume tells every party which epoch to load.  Files hold model
parameters and optimiser moments — never a key, an ID or a feature value — and are
written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from veil.errors import FailedPrecondition

_NAME = re.compile(r"epoch-(\d+)\.json")


def write_json_atomic(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointStore:
    """``<dir>/<job_id>/epoch-<e>.json`` for one party."""

    def __init__(self, root: Path, job_id: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{8,64}", job_id):
            raise FailedPrecondition("job id must be lower-case hex")
        self.dir = Path(root) / job_id

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        write_json_atomic(self.dir / f"epoch-{epoch}.json", {"epoch": epoch, **state})

    def latest(self) -> int:
        """The last checkpointed epoch, or -1."""
        if not self.dir.exists():
            return -1
        found = [int(m.group(1)) for p in self.dir.iterdir() if (m := _NAME.fullmatch(p.name))]
        return max(found, default=-1)

    def load(self, epoch: int) -> dict[str, Any]:
        path = self.dir / f"epoch-{epoch}.json"
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            raise FailedPrecondition(f"no readable checkpoint for epoch {epoch}") from None
        return doc
