#!/usr/bin/env python3
"""Regenerate the committed Python code for the wire contract.

The one way generated code is made: ``python scripts/gen_proto.py``.  It compiles
every ``proto/veil/v1/*.proto`` with grpcio-tools (the version pinned in
pyproject's dev extra) into ``veil/v1/``, with mypy stubs from mypy-protobuf.
CI runs it and fails on any difference (``--check``).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "veil" / "v1"
INIT_TEXT = (
    '"""Generated wire contract (package veil.v1). Made by scripts/gen_proto.py; do not edit."""\n'
)


def generate(out_root: Path) -> Path:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("veil/v1/*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    out = out_root / "veil" / "v1"
    (out / "__init__.py").write_text(INIT_TEXT)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        if args.check:
            cmp = filecmp.dircmp(fresh, OUT_PACKAGE, ignore=["__pycache__"])
            diffs = cmp.diff_files + cmp.left_only + cmp.right_only
            if diffs:
                print(f"generated code differs from veil/v1/: {sorted(diffs)}", file=sys.stderr)
                print("run: python scripts/gen_proto.py", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        if OUT_PACKAGE.exists():
            shutil.rmtree(OUT_PACKAGE)
        shutil.copytree(fresh, OUT_PACKAGE)
    print(f"wrote {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
