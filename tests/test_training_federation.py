"""Joint training on a live federation's provider stores, then scoring with the result.

``veil train --federation DIR --model-name ...`` runs one feature-party process per
provider unit with that provider's node certificate, each reading its own store; the
model goes into the platform's registry in ``veil-model/1``.  The bank then scores an
enterprise with it through the gateway (encrypted partial scores, secure sum), and the
score equals the plaintext evaluation of the trained model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_authorization_e2e import Enterprise, usccs
from tests.test_scoring_e2e import expected, score
from veil_cli.score_demo import SCORE_LOAN, SCORE_PURPOSE, model_fields

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


def test_train_on_the_federation_stores_then_score(federation: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "veil_cli", "train",
            "--federation", str(federation.workdir),
            "--model-name", "sme-joint",
            "--approve",
            "--batch-size", "64",
            "--epochs", "12",
        ],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["registry"]["model_id"] == "sme-joint"
    assert summary["registry"]["state"] == "approved"
    assert set(summary["features"]) == {"platform", "samr", "social_insurance", "tax", "utilities"}
    assert summary["rows"]["intersection"] > 200 and summary["test_auc"] > 0.6
    document = json.loads(Path(summary["veil_model"]).read_text())
    assert document["model_id"] == "sme-joint" and document["card"]["metrics"]["test_auc"] > 0.6

    ent = Enterprise(federation, usccs(federation, 6)[5])
    grant = ent.grant(
        tuple(model_fields(document)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    answer = score(federation, ent.uscc, "sme-joint", grant.grant_id)
    _, want = expected(federation, document, ent.uscc)
    assert (answer.pd, answer.score, answer.grade) == (want.pd, want.score, want.grade)
    assert sorted(answer.providers) == ["samr", "social_insurance", "tax", "utilities"]
