"""The wire contract: generated code is current, enums start at *_UNSPECIFIED = 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import FileDescriptor

from veil.v1 import common_pb2, gateway_pb2, platform_pb2, provider_pb2

ROOT = Path(__file__).resolve().parent.parent
FILES: list[FileDescriptor] = [
    m.DESCRIPTOR for m in (common_pb2, gateway_pb2, platform_pb2, provider_pb2)
]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_package_is_versioned() -> None:
    assert {f.package for f in FILES} == {"veil.v1"}


def test_every_enum_has_unspecified_zero() -> None:
    for f in FILES:
        for enum in f.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), (f.name, enum.name, zero)


def test_one_service_per_file() -> None:
    for f in FILES:
        assert len(f.services_by_name) <= 1, f.name
