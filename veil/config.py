"""Node configuration: a TOML file with environment overrides.

Every daemon reads one TOML file.  Any scalar key can be overridden from the
environment as ``VEIL_<SECTION>_<KEY>`` (upper case, dots in nested section names
become underscores), e.g. ``VEIL_NODE_LISTEN=0.0.0.0:7000`` or ``VEIL_STORE_URL=...``.

A malformed file raises :class:`veil.errors.ConfigError` naming the file and the key,
which the CLI prints on one line before exiting with status 2.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil.errors import ConfigError

ROLES = ("provider", "platform", "gateway")
EVENT_LOOPS = ("uvloop", "asyncio")
"""``node.event_loop``: libuv's loop (uvloop) or the standard library's."""
DEFAULT_EVENT_LOOP = "uvloop"
ENV_PREFIX = "VEIL_"


@dataclass(frozen=True)
class TLSConfig:
    """Where a node's TLS material lives.

    ``insecure=True`` turns TLS off entirely; it exists for debugging only and every
    node logs a loud warning when it is set.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class PeerConfig:
    """A peer this node calls: its name (certificate identity), role and address.

    For providers, ``unit`` is the catalog's provider unit id it serves (e.g.
    ``social_insurance``); the certificate name may differ (``social-insurance``), since
    certificate names are DNS labels.
    """

    name: str
    role: str
    address: str
    categories: tuple[str, ...] = ()
    unit: str = ""


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    role: str
    name: str
    listen: str
    tls: TLSConfig
    store_url: str
    raw: Mapping[str, Any] = field(default_factory=dict)
    peers: tuple[PeerConfig, ...] = ()
    call_timeout_s: float = 5.0
    grace_s: float = 5.0
    metrics_listen: str | None = None
    event_loop: str = DEFAULT_EVENT_LOOP

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(str(self.path), name, "must be a table")
        return value


class TomlReader:
    """Typed access to a parsed TOML document that names the file and key on error."""

    def __init__(self, path: Path, doc: Mapping[str, Any]) -> None:
        self.path = path
        self.doc = doc

    def _get(self, dotted: str) -> Any:
        node: Any = self.doc
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(str(self.path), key, problem)

    def str_(self, key: str, default: str | None = None) -> str:
        value = self._get(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is required")
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def float_(self, key: str, default: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(key, f"must be a positive number, got {value!r}")
        return float(value)

    def path_(self, key: str) -> Path | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a file path, got {value!r}")
        p = Path(value)
        return p if p.is_absolute() else (self.path.parent / p)


def _coerce_env(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def apply_env_overrides(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Override existing scalar keys from ``VEIL_SECTION_KEY`` variables.

    Only keys of tables that the file (or the defaults) define can be overridden, so a
    typo in a variable name cannot silently create configuration.
    """

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in list(node.items()):
            env_key = f"{prefix}{key}".upper().replace("-", "_").replace(".", "_")
            if isinstance(value, dict):
                walk(value, env_key + "_")
            elif env_key in environ:
                node[key] = _coerce_env(environ[env_key])

    walk(doc, ENV_PREFIX)
    return doc


_DEFAULTS: dict[str, Any] = {
    "node": {"listen": "127.0.0.1:0", "call_timeout_s": 5.0, "grace_s": 5.0},
    "tls": {"insecure": False},
    "store": {},
}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "-", f"not valid TOML ({exc})") from None


def load_node_config(path: str | Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate a node's TOML configuration file."""
    path = Path(path).resolve()
    doc = _merge(_DEFAULTS, read_toml(path))
    doc = apply_env_overrides(doc, os.environ if environ is None else environ)
    r = TomlReader(path, doc)

    role = r.str_("node.role")
    if role not in ROLES:
        raise r.fail("node.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
    name = r.str_("node.name")
    listen = r.str_("node.listen")
    if ":" not in listen:
        raise r.fail("node.listen", f"must be host:port, got {listen!r}")

    insecure = r.bool_("tls.insecure", False)
    tls = TLSConfig(
        ca=r.path_("tls.ca"), cert=r.path_("tls.cert"), key=r.path_("tls.key"), insecure=insecure
    )
    if not insecure:
        for key in ("ca", "cert", "key"):
            value = getattr(tls, key)
            if value is None:
                raise r.fail(f"tls.{key}", "is required unless tls.insecure = true")
            if not value.exists():
                raise r.fail(f"tls.{key}", f"file {value} does not exist")

    store_url = r.str_("store.url", "")
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:////"):
        rel = store_url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            store_url = "sqlite:///" + str(path.parent / rel)

    peers = []
    raw_peers = doc.get("peers", [])
    if not isinstance(raw_peers, list):
        raise r.fail("peers", "must be an array of tables ([[peers]])")
    for i, peer in enumerate(raw_peers):
        key = f"peers[{i}]"
        if not isinstance(peer, Mapping):
            raise r.fail(key, "must be a table")
        pr = TomlReader(path, peer)
        try:
            p_role = pr.str_("role")
            if p_role not in ROLES:
                raise pr.fail("role", f"must be one of {', '.join(ROLES)}")
            cats = peer.get("categories", [])
            if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
                raise pr.fail("categories", "must be a list of strings")
            peers.append(
                PeerConfig(
                    name=pr.str_("name"),
                    role=p_role,
                    address=pr.str_("address"),
                    categories=tuple(cats),
                    unit=pr.str_("unit", pr.str_("name").replace("-", "_")),
                )
            )
        except ConfigError as exc:
            raise r.fail(f"{key}.{exc.key}", exc.problem) from None

    metrics = doc["node"].get("metrics_listen")
    if metrics is not None and (not isinstance(metrics, str) or ":" not in metrics):
        raise r.fail("node.metrics_listen", f"must be host:port, got {metrics!r}")

    event_loop = doc["node"].get("event_loop", DEFAULT_EVENT_LOOP)
    if event_loop not in EVENT_LOOPS:
        raise r.fail(
            "node.event_loop", f"must be one of {', '.join(EVENT_LOOPS)}, got {event_loop!r}"
        )

    return NodeConfig(
        path=path,
        role=role,
        name=name,
        listen=listen,
        tls=tls,
        store_url=store_url,
        raw=doc,
        peers=tuple(peers),
        call_timeout_s=r.float_("node.call_timeout_s", 5.0),
        grace_s=r.float_("node.grace_s", 5.0),
        metrics_listen=metrics,
        event_loop=event_loop,
    )
