"""Configuration files: valid ones load, malformed ones name the file and key (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from veil.config import load_node_config
from veil.errors import ConfigError

GOOD = """
[node]
role = "provider"
name = "tax"
listen = "127.0.0.1:7101"

[tls]
insecure = true

[store]
url = "sqlite:///tax.db"

[[peers]]
name = "platform"
role = "platform"
address = "127.0.0.1:7400"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_good_config_loads_and_resolves_relative_paths(tmp_path: Path) -> None:
    config = load_node_config(write(tmp_path, GOOD), environ={})
    assert config.role == "provider" and config.name == "tax"
    assert config.store_url == f"sqlite:///{tmp_path / 'tax.db'}"
    assert config.peers[0].unit == "platform"
    assert config.tls.insecure


def test_event_loop_defaults_to_uvloop_and_may_be_the_standard_one(tmp_path: Path) -> None:
    assert load_node_config(write(tmp_path, GOOD), environ={}).event_loop == "uvloop"
    text = GOOD.replace(
        'listen = "127.0.0.1:7101"', 'listen = "127.0.0.1:7101"\nevent_loop = "asyncio"'
    )
    assert load_node_config(write(tmp_path, text), environ={}).event_loop == "asyncio"


def test_environment_overrides_existing_keys(tmp_path: Path) -> None:
    config = load_node_config(
        write(tmp_path, GOOD),
        environ={"VEIL_NODE_LISTEN": "0.0.0.0:9000", "VEIL_NODE_CALL_TIMEOUT_S": "2.5"},
    )
    assert config.listen == "0.0.0.0:9000"
    assert config.call_timeout_s == 2.5


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace('role = "provider"', 'role = "banker"'), "node.role"),
        (GOOD.replace('listen = "127.0.0.1:7101"', "listen = 7101"), "node.listen"),
        (GOOD.replace("insecure = true", "insecure = false"), "tls.ca"),
        (GOOD.replace("insecure = true", 'insecure = "yes"'), "tls.insecure"),
        (GOOD.replace('role = "platform"', 'role = "oracle"'), "peers[0].role"),
        (GOOD.replace('name = "tax"', ""), "node.name"),
        (GOOD + "\n[node.call_timeout_s]\n", "node.call_timeout_s"),
        (GOOD + "\n[node\n", "-"),
        (
            GOOD.replace(
                'listen = "127.0.0.1:7101"', 'listen = "127.0.0.1:7101"\nevent_loop = "trio"'
            ),
            "node.event_loop",
        ),
    ],
)
def test_malformed_config_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path, environ={})
    assert info.value.key == key
    assert str(path) in info.value.message


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('role = "provider"', 'role = "banker"'))
    result = subprocess.run(
        [sys.executable, "-m", "veil_cli", "provider", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "node.role" in lines[0]


def test_cli_rejects_a_config_for_another_role(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "veil_cli", "gateway", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "node.role" in result.stderr


def test_client_subcommand_with_malformed_config_exits_2_naming_key_and_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "client.toml"
    path.write_text("[gateway]\naddress = 5\n[tls]\ninsecure = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "veil_cli", "lookup", "91350100M000100Y43", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and "gateway.address" in lines[0]
