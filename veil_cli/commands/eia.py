"""``veil eia …``: a development enterprise identity authority (EIA).

In production the EIA is an authority the providers trust independently of the platform
(modelled on SAMR's electronic business licence, 电子营业执照).  This command plays it for
development and the demo: ``init`` makes its key and public JWKS, ``issue`` certifies an
enterprise's key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from veil.tokens import KeySet, SigningKey, issue_enterprise_certificate

KEY_FILE = "eia.key"
JWKS_FILE = "eia.jwks.json"


def init_eia(directory: Path) -> tuple[SigningKey, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / KEY_FILE
    key = SigningKey.load(key_path) if key_path.exists() else SigningKey.generate("EdDSA")
    if not key_path.exists():
        key.save(key_path)
    jwks = directory / JWKS_FILE
    jwks.write_text(json.dumps(KeySet.of(key.verifying_key()).to_jwks(), indent=2) + "\n")
    return key, jwks


def issue(eia_key: SigningKey, uscc: str, name: str, jwk_path: Path, out: Path) -> str:
    jwk = json.loads(jwk_path.read_text())
    certificate = issue_enterprise_certificate(eia_key, uscc=uscc, name=name, enterprise_jwk=jwk)
    out.write_text(certificate + "\n")
    return certificate


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        key, jwks = init_eia(Path(args.dir))
        print(f"EIA key {Path(args.dir) / KEY_FILE} (kid {key.kid}); publish {jwks} to every node")
        return 0
    key = SigningKey.load(Path(args.dir) / KEY_FILE)
    issue(key, args.uscc, args.name, Path(args.jwk), Path(args.out))
    print(f"certificate for {args.uscc} written to {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eia", help="development enterprise identity authority")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create the EIA key and its public JWKS")
    init.add_argument("--dir", required=True)
    iss = actions.add_parser("issue", help="certify an enterprise's public key")
    iss.add_argument("--dir", required=True, help="the EIA directory (from init)")
    iss.add_argument("--uscc", required=True)
    iss.add_argument("--name", required=True, help="the enterprise's registered name")
    iss.add_argument("--jwk", required=True, help="the enterprise's public JWK file")
    iss.add_argument("--out", required=True, help="certificate file to write")
    parser.set_defaults(run=run)
