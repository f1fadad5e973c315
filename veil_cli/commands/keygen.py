"""``veil keygen``: a signing key for an institution or an enterprise (EdDSA or ES256).

Writes the private key (mode 0600) and, beside it, the public JWK to hand to the platform
(institutions: ``veil institution add-key``) or to the EIA (enterprises).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from veil.tokens import SigningKey


def generate(out: Path, alg: str = "EdDSA") -> tuple[SigningKey, Path]:
    key = SigningKey.generate(alg)
    key.save(out)
    jwk_path = out.with_suffix(".jwk.json")
    jwk_path.write_text(json.dumps(key.public_jwk(), indent=2, sort_keys=True) + "\n")
    return key, jwk_path


def run(args: argparse.Namespace) -> int:
    key, jwk_path = generate(Path(args.out), args.alg)
    print(f"private key: {args.out} (mode 0600, kid {key.kid})")
    print(f"public JWK:  {jwk_path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keygen", help="make a signing key and its public JWK")
    parser.add_argument("--out", required=True, help="private key file to create")
    parser.add_argument("--alg", choices=("EdDSA", "ES256"), default="EdDSA")
    parser.set_defaults(run=run)
