#!/usr/bin/env python3
"""The project's one test command: contract, lint, types, then the test suite.

1. the committed generated code equals a fresh ``scripts/gen_proto.py`` run;
2. ``ruff format --check`` and ``ruff check``;
3. ``mypy`` over the product packages;
4. ``pytest`` (PostgreSQL tests included; they need 127.0.0.1:5432).

Extra arguments are passed to pytest, e.g. ``python scripts/check.py -k catalog``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["veil", "veil_cli", "gateway", "platform_node", "provider_node"]


def step(title: str, cmd: list[str]) -> None:
    print(f"==> {title}: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode != 0:
        print(f"FAILED: {title} (exit {result.returncode})", flush=True)
        raise SystemExit(result.returncode)
    print(f"    ok in {time.monotonic() - t0:.1f} s", flush=True)


def main() -> None:
    py = sys.executable
    step("generated code is current", [py, "scripts/gen_proto.py", "--check"])
    step("ruff format", [py, "-m", "ruff", "format", "--check", "."])
    step("ruff lint", [py, "-m", "ruff", "check", "."])
    step("mypy", [py, "-m", "mypy", *PACKAGES])
    step("pytest", [py, "-m", "pytest", "-q", *sys.argv[1:]])


if __name__ == "__main__":
    main()
