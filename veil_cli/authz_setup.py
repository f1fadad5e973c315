"""Authorization set-up for a local federation (``veil demo`` and the tests).

:func:`prepare_authorization` runs inside :meth:`Federation.prepare` and adds:

* a development enterprise identity authority (``keys/eia/``), whose public JWKS every
  node is configured with — never fetched from the platform;
* the platform's request-token signing key (``keys/platform-token.key``, 0600);
* the demo institution's assertion signing key and ``[identity]`` in ``client.toml``;
* a platform peer for every provider (its keys and revocations come from there).

After the federation is up, :func:`onboard_institution` admits the demo institution
through the real admin API, and :func:`enroll_enterprise` gives an enterprise a key,
its EIA certificate, a TLS client certificate and a ``client.toml`` of its own.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from veil.certs import init_dev_pki
from veil.tokens import SigningKey
from veil.v1 import institution_pb2 as ipb
from veil.v1 import institution_pb2_grpc
from veil_cli.audit_setup import pin_log_key
from veil_cli.calls import call_platform
from veil_cli.commands.eia import JWKS_FILE, KEY_FILE, init_eia, issue

KEYS = "keys"
TOKEN_KEY = "platform-token.key"
DEMO_PURPOSES = ("loan_origination", "post_loan_monitoring")
DEMO_DAILY_QUOTA = 10_000


def _update(path: Path, section: str, values: dict[str, Any]) -> None:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    doc.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")


def _key(path: Path) -> SigningKey:
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate("EdDSA")
    key.save(path)
    return key


def prepare_authorization(fed: Any, institution: str) -> None:
    keys = fed.workdir / KEYS
    keys.mkdir(exist_ok=True)
    init_eia(keys / "eia")
    _key(keys / TOKEN_KEY)
    bank_key = _key(keys / f"{institution}.key")
    (keys / f"{institution}.jwk.json").write_text(json.dumps(bank_key.public_jwk(), indent=2))
    eia_jwks = f"../{KEYS}/eia/{JWKS_FILE}"
    platform = fed.node("platform")
    for node in fed.nodes:
        config = fed.configs / f"{node.name}.toml"
        values: dict[str, Any] = {"eia_jwks": eia_jwks}
        if node.role == "platform":
            values["token_keys"] = [f"../{KEYS}/{TOKEN_KEY}"]
        _update(config, "authorization", values)
        if node.role == "provider":
            doc = tomllib.loads(config.read_text(encoding="utf-8"))
            doc.setdefault("peers", []).append(
                {"name": platform.name, "role": "platform", "address": platform.address}
            )
            config.write_text(tomli_w.dumps(doc), encoding="utf-8")
    _update(
        fed.workdir / "client.toml",
        "identity",
        {"id": institution, "key": f"{KEYS}/{institution}.key"},
    )


async def onboard_institution(
    fed: Any, institution: str, name: str = "Demo Bank", *, daily_quota: int = DEMO_DAILY_QUOTA
) -> None:
    """Apply, assess, admit and publish the key of ``institution`` via the admin API
    (benchmarks pass a ``daily_quota`` above the requests they make)."""
    admin = str(fed.workdir / "admin.toml")
    stub = institution_pb2_grpc.InstitutionRegistryStub
    jwk = (fed.workdir / KEYS / f"{institution}.jwk.json").read_text()
    await call_platform(
        admin,
        stub,
        "RegisterInstitution",
        ipb.RegisterInstitutionRequest(
            id=institution,
            name=name,
            type=ipb.INSTITUTION_TYPE_BANK,
            purposes=list(DEMO_PURPOSES),
            daily_quota=daily_quota,
            reason="demo onboarding",
        ),
    )
    for state, reason in (
        (ipb.INSTITUTION_STATE_ASSESSED, "security assessment passed (demo)"),
        (ipb.INSTITUTION_STATE_ACTIVE, "admitted (demo)"),
    ):
        await call_platform(
            admin,
            stub,
            "SetInstitutionState",
            ipb.SetInstitutionStateRequest(id=institution, state=state, reason=reason),
        )
    await call_platform(
        admin, stub, "AddInstitutionKey", ipb.AddInstitutionKeyRequest(id=institution, jwk_json=jwk)
    )


def enroll_enterprise(fed: Any, uscc: str, name: str) -> Path:
    """Key, EIA certificate, TLS certificate and client.toml for enterprise ``uscc``."""
    keys = fed.workdir / KEYS
    key = _key(keys / f"{uscc}.key")
    jwk_path = keys / f"{uscc}.jwk.json"
    jwk_path.write_text(json.dumps(key.public_jwk(), indent=2))
    eia_key = SigningKey.load(keys / "eia" / KEY_FILE)
    cert_path = keys / f"{uscc}.eia.jwt"
    issue(eia_key, uscc, name, jwk_path, cert_path)
    tls_name = uscc.lower()
    init_dev_pki(fed.certs, [("enterprise", tls_name)])
    path = fed.workdir / f"enterprise-{uscc}.toml"
    fed.write_client_config(tls_name, path, platform=False)
    _update(
        path,
        "identity",
        {"id": uscc, "key": f"{KEYS}/{uscc}.key", "eia_certificate": f"{KEYS}/{uscc}.eia.jwt"},
    )
    pin_log_key(fed, path)  # 信息主体查询: `veil audit uses --config` this file
    return path
