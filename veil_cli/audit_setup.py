"""Transparency-log set-up for a local federation (``veil demo`` and the tests).

:func:`prepare_audit` runs after :meth:`veil_cli.federation.Federation.prepare`
has written the node and client configurations, and adds what the log needs:

* the platform's Ed25519 log signing key ``certs/log.key`` (0600) and a ``[log]``
  section naming it and the origin in the platform's configuration;
* the *pinned* verifier key in an ``[audit]`` section of every client configuration
  and of every provider's configuration (with the gateway's address, which providers
  use to read the entries concerning them);
* an auditor identity (certificate) and its ``auditor.toml``.

The verifier key is written at set-up time, from the key file, never fetched from
the running log: pinning it out of band is what makes a forged checkpoint detectable.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from veil.certs import init_dev_pki
from veil.checkpoint import Signer

AUDITOR = "demo-auditor"
LOG_ORIGIN = "veil.demo/transparency-log"
LOG_KEY_FILE = "log.key"
CLIENT_CONFIGS = ("client.toml", "admin.toml", "auditor.toml")


def _update(path: Path, section: str, values: dict[str, Any]) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    doc.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")


def log_signer(certs: Path, origin: str = LOG_ORIGIN) -> Signer:
    """The federation's log key: created once, reused by later ``prepare`` runs."""
    path = certs / LOG_KEY_FILE
    if path.exists():
        return Signer.load(path)
    signer = Signer.generate(origin)
    signer.save(path)
    return signer


def prepare_audit(fed: Any) -> str:
    """Add the log's configuration to a prepared federation; returns the verifier key."""
    signer = log_signer(fed.certs)
    vkey = signer.verifier().key_string
    init_dev_pki(fed.certs, [("auditor", AUDITOR)])
    fed.write_client_config(AUDITOR, fed.workdir / "auditor.toml", platform=False)
    gateway = fed.node("gateway")
    for node in fed.nodes:
        config = fed.configs / f"{node.name}.toml"
        if node.role == "platform":
            _update(config, "log", {"key": f"../certs/{LOG_KEY_FILE}", "origin": signer.name})
        elif node.role == "provider":
            _update(
                config,
                "audit",
                {
                    "verifier_key": vkey,
                    "gateway_address": gateway.address,
                    "gateway_name": gateway.name,
                    "state": f"../data/{node.name}-audit-state.json",
                },
            )
    for name in CLIENT_CONFIGS:
        stem = name.removesuffix(".toml")
        _update(
            fed.workdir / name,
            "audit",
            {"verifier_key": vkey, "state": f"audit-state-{stem}.json"},
        )
    return vkey


def pin_log_key(fed: Any, path: Path) -> None:
    """Pin the log's verifier key in a client configuration written after
    :func:`prepare_audit` (an enterprise enrolled later), so that ``veil audit uses
    --config PATH`` verifies the enterprise's own entries out of the box."""
    if not (fed.certs / LOG_KEY_FILE).exists():
        return
    vkey = log_signer(fed.certs).verifier().key_string
    _update(path, "audit", {"verifier_key": vkey, "state": f"audit-state-{path.stem}.json"})
