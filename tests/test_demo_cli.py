"""``veil demo`` as a user runs it: the scripted session, and --keep-running / --stop."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ENTERPRISES = "300"


def veil(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "veil_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_runs_end_to_end_and_stops_every_process() -> None:
    result = veil("demo", "--enterprises", ENTERPRISES)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Public credit report" in out
    assert "INVALID_ARGUMENT" in out and "NOT_FOUND" in out
    assert "Authorized detail" in out and "revoked" in out
    assert out.count(": exit 0") >= 9  # platform, gateway, seven providers
    # It ends with the auditor and every provider's reconciliation, after scoring and
    # the batch job, so both cover every entry the session wrote; both are clean.
    batch = out.index("Full-coverage evaluation")
    assert batch < out.index("The auditor follows the log") < out.index("Usage feedback")
    assert out.count("answers in its ledger: clean") == 7 and "mismatches" not in out


def test_keep_running_then_clients_then_stop(tmp_path: Path) -> None:
    workdir = tmp_path / "fed"
    started = veil(
        "demo", "--keep-running", "--workdir", str(workdir), "--enterprises", ENTERPRISES
    )
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        client = workdir / "client.toml"
        assert client.exists() and "veil demo --stop" in started.stdout
        with (workdir / "data" / "labels.csv").open(newline="") as fh:
            uscc = next(csv.DictReader(fh))["uscc"]
        looked = veil("lookup", uscc, "--config", str(client), "--json", timeout=60)
        assert looked.returncode == 0, looked.stderr
        assert json.loads(looked.stdout)["uscc"] == uscc
        catalog = veil("catalog", "--config", str(client), "--json", timeout=60)
        assert catalog.returncode == 0, catalog.stderr
        assert len({d["categoryId"] for d in json.loads(catalog.stdout)["datasets"]}) == 14
        status = veil("status", "--config", str(workdir / "admin.toml"), timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        admin = ["--config", str(workdir / "admin.toml")]
        quota = ["--daily-quota", "20000", "--reason", "volume review"]
        updated = veil("institution", "update", "demo-bank", *quota, *admin, timeout=60)
        assert updated.returncode == 0 and "20000" in updated.stdout, updated.stderr
        # the enrolled enterprise grants the bank, the bank fetches, the enterprise revokes
        enterprise = workdir / f"enterprise-{uscc}.toml"
        assert str(enterprise) in started.stdout
        terms = ["--purpose", "loan_origination", "--loan-ref", "LOAN-CLI-1"]
        granted = veil(
            "enterprise", "grant", "--config", str(enterprise), "--institution", "demo-bank",
            "--fields", "tax_grade", *terms, "--json", timeout=60,
        )  # fmt: skip
        assert granted.returncode == 0, granted.stderr
        grant_id = json.loads(granted.stdout)["grantId"]
        fetch = ["fetch", uscc, "--config", str(client), "--fields", "tax_grade"]
        fetched = veil(*fetch, "--grant", grant_id, *terms, "--json", timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        revoked = veil("enterprise", "revoke", grant_id, "--config", str(enterprise), timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        refused = veil(*fetch, "--grant", grant_id, *terms, timeout=60)
        assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
        uses = veil("enterprise", "uses", grant_id, "--config", str(enterprise), "--json")
        outcomes = [u["outcome"] for u in json.loads(uses.stdout)["uses"]]
        assert outcomes == ["OK", "PERMISSION_DENIED"]
        again = veil("demo", "--keep-running", "--workdir", str(workdir), timeout=60)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = veil("demo", "--stop", "--workdir", str(workdir), timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not list((workdir / "run").glob("*.pid"))
    pids_alive = [line for line in stopped.stdout.splitlines() if "KILLED" in line]
    assert not pids_alive
