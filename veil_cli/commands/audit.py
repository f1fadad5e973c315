"""``veil audit``: the auditor's tool for the platform's transparency log.

Every subcommand takes ``--config`` (a client.toml: the gateway, the TLS identity,
and an ``[audit]`` section with the pinned ``verifier_key`` and the ``state`` file
that holds the last verified checkpoint)::

    veil audit vkey        --config auditor.toml   # the log's verifier key string
    veil audit checkpoint  --config auditor.toml   # the latest signed note, verbatim
    veil audit entries     --config auditor.toml --from 0 --to 100 [--verify]
    veil audit follow      --config auditor.toml [--compare NOTE_FILE ...]
    veil audit prove       --config auditor.toml --index N | --leaf-hash HEX
    veil audit uses        --config enterprise.toml [--since ... --until ...]
    veil audit report      --config auditor.toml --by institution|enterprise|provider|purpose

``follow`` verifies the latest checkpoint's signature with the pinned key and its
consistency with the stored state, then stores it; ``prove``, ``uses`` and
``report`` follow first and verify every entry they show against that checkpoint.

Exit codes: 0 verified; 1 an operation failed (e.g. the gateway is unreachable);
2 bad usage or configuration; **3 ALARM** — the log or its server misbehaved (bad
signature, unknown key, fork, rollback, an entry that does not verify); the
evidence is printed on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veil._internal.merkle import leaf_hash, root_from_leaf_hashes
from veil.audit.client import AuditClient, audit_settings
from veil.audit.entry import format_time, parse_time
from veil.audit.verify import AuditAlarm, Auditor, FollowResult, VerifiedEntry
from veil.checkpoint import Verifier
from veil.config import read_toml
from veil.errors import InvalidArgument, NoteError
from veil.v1 import audit_pb2
from veil_cli.client import ClientConfig, add_config_argument, load_client_config
from veil_cli.render import console

ALARM_EXIT = 3
DEFAULT_STATE = "audit-state.json"
REPORT_DIMENSIONS = ("institution", "enterprise", "provider", "purpose")


@dataclass
class Session:
    config: ClientConfig
    client: AuditClient
    auditor: Auditor | None


async def _session(
    args: argparse.Namespace,
    body: Callable[[Session], Awaitable[int]],
    *,
    verify: bool = True,
) -> int:
    config = load_client_config(args.config)
    settings = audit_settings(config.path, read_toml(config.path), DEFAULT_STATE)
    verifier = settings.verifier
    if getattr(args, "vkey", None):
        try:
            verifier = Verifier.parse(args.vkey)
        except NoteError as exc:
            raise InvalidArgument(f"--vkey: {exc.message}") from None
    async with config.gateway_channel() as channel:
        client = AuditClient(channel)
        auditor = None
        if verify:
            if verifier is None:
                settings.require_verifier(config.path)
            assert verifier is not None
            auditor = Auditor(client, verifier, origin=settings.origin, state_path=settings.state)
        return await body(Session(config, client, auditor))


def _alarm(exc: AuditAlarm) -> int:
    print(f"ALARM ({type(exc).__name__}): {exc.message}", file=sys.stderr)
    return ALARM_EXIT


def _run(
    args: argparse.Namespace, body: Callable[[Session], Awaitable[int]], *, verify: bool = True
) -> int:
    try:
        return asyncio.run(_session(args, body, verify=verify))
    except AuditAlarm as exc:
        return _alarm(exc)


def _describe(result: FollowResult) -> str:
    s = result.state
    root = base64.b64encode(s.root_hash).decode()
    if result.status == "first":
        how = "first checkpoint (trusted from now on)"
    elif result.status == "advanced":
        assert result.previous is not None
        how = f"consistent with the verified size {result.previous.size}"
    elif result.status == "stale":
        how = "the log served an older (consistent) checkpoint; kept the newer one"
    else:
        how = "unchanged"
    return f"verified {s.origin} size {s.size} root {root}: {how}"


async def _follow(session: Session, *, quiet: bool = False) -> FollowResult:
    assert session.auditor is not None
    result = await session.auditor.follow(fresh=True)
    if result.server_key != session.auditor.verifier.key_string:
        print(
            f"warning: the server advertises verifier key {result.server_key!r}, "
            "not the pinned one (its checkpoint still verified with the pinned key)",
            file=sys.stderr,
        )
    if not quiet:
        print(_describe(result), file=sys.stderr)
    return result


# -- subcommands ---------------------------------------------------------------------------


def run_vkey(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        answer = await session.client.checkpoint()
        print(answer.verifier_key)
        return 0

    return _run(args, body, verify=False)


def run_checkpoint(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        answer = await session.client.checkpoint(fresh=args.fresh)
        sys.stdout.write(bytes(answer.note).decode("utf-8"))
        return 0

    return _run(args, body, verify=False)


def run_entries(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        end = args.to
        state = None
        if args.verify or end is None:
            state = (await _follow(session, quiet=not args.verify)).state
            end = state.size if end is None else end
        hashes: list[bytes] = []
        async for e in session.client.entries(args.start, end):
            mine = leaf_hash(bytes(e.leaf))
            if args.verify and mine != bytes(e.leaf_hash):
                raise AuditAlarm(f"entry {e.index}: served leaf hash is not SHA-256(0x00||leaf)")
            hashes.append(mine)
            line = {
                "index": e.index,
                "leaf": base64.b64encode(e.leaf).decode("ascii"),
                "leaf_hash": bytes(e.leaf_hash).hex(),
            }
            print(json.dumps(line, separators=(",", ":")))
        if args.verify and state is not None and args.start == 0 and end == state.size:
            if root_from_leaf_hashes(hashes) != state.root_hash:
                raise AuditAlarm(
                    f"the {end} entries do not hash to the verified root of size {state.size}"
                )
            print(f"recomputed the root of all {end} entries: it matches", file=sys.stderr)
        return 0

    return _run(args, body, verify=args.verify or args.to is None)


def run_follow(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        assert session.auditor is not None
        await _follow(session)
        for path in args.compare:
            verdict = await session.auditor.compare(Path(path).read_bytes())
            print(f"{path}: {verdict}", file=sys.stderr)
        return 0

    return _run(args, body)


def run_prove(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        assert session.auditor is not None
        state = (await _follow(session, quiet=True)).state
        out: dict[str, Any] = {
            "tree_size": state.size,
            "root_hash": base64.b64encode(state.root_hash).decode(),
        }
        if args.index is not None:
            verified = await session.auditor.prove_index(args.index)
            proof = await session.client.inclusion_proof(state.size, index=args.index)
            out.update(index=verified.index, leaf_hash=verified.leaf_hash.hex())
            out["proof"] = [bytes(h).hex() for h in proof.hashes]
            out["entry"] = verified.entry.to_json()
        else:
            try:
                h = bytes.fromhex(args.leaf_hash)
            except ValueError:
                raise InvalidArgument(f"--leaf-hash {args.leaf_hash!r} is not hex") from None
            if len(h) != 32:
                raise InvalidArgument(f"--leaf-hash is {len(h)} bytes, want 32")
            index, hashes = await session.auditor.prove_leaf_hash(h)
            out.update(index=index, leaf_hash=h.hex(), proof=[x.hex() for x in hashes])
        out["verified"] = True
        print(json.dumps(out, ensure_ascii=False, sort_keys=True))
        return 0

    return _run(args, body)


def _query(args: argparse.Namespace) -> audit_pb2.SearchEntriesRequest:
    q = audit_pb2.SearchEntriesRequest(page_size=1000)
    for key in ("enterprise", "provider", "purpose", "request_id"):
        value = getattr(args, key, None)
        if value:
            setattr(q, key, value)
    if getattr(args, "institution", None):
        q.actor = f"institution/{args.institution}"
    q.types.extend(getattr(args, "type", None) or [])
    if args.since:
        q.since = format_time(parse_time(args.since))
    if args.until:
        q.until = format_time(parse_time(args.until))
    return q


async def _verified_uses(session: Session, args: argparse.Namespace) -> list[VerifiedEntry]:
    assert session.auditor is not None
    await _follow(session, quiet=True)
    return await session.auditor.search(_query(args))


def run_uses(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        for v in await _verified_uses(session, args):
            line = {"index": v.index, "leaf_hash": v.leaf_hash.hex(), "included": True}
            line["entry"] = v.entry.to_json()
            print(json.dumps(line, ensure_ascii=False, sort_keys=True))
        return 0

    return _run(args, body)


@dataclass
class Row:
    key: str
    uses: int = 0
    ok: int = 0
    failed: int = 0
    first: str = ""
    last: str = ""
    types: set[str] = field(default_factory=set)

    def add(self, v: VerifiedEntry, ok: bool) -> None:
        self.uses += 1
        self.ok += ok
        self.failed += not ok
        t = v.entry.time_text
        self.first = min(self.first or t, t)
        self.last = max(self.last, t)
        self.types.add(v.entry.type)

    def as_dict(self, by: str) -> dict[str, Any]:
        return {
            by: self.key,
            "uses": self.uses,
            "ok": self.ok,
            "failed": self.failed,
            "first": self.first,
            "last": self.last,
            "types": ",".join(sorted(self.types)),
        }


def report_rows(entries: list[VerifiedEntry], by: str) -> list[Row]:
    """Group verified entries.  For ``provider``, an entry counts once per provider
    asked: ``ok`` when it answered, ``failed`` when it did not."""
    rows: dict[str, Row] = {}
    for v in entries:
        e = v.entry
        if by == "provider":
            for p in e.providers:
                rows.setdefault(p, Row(p)).add(v, True)
            for p in e.providers_failed:
                rows.setdefault(p, Row(p)).add(v, False)
            continue
        key = {"institution": e.actor, "enterprise": e.enterprise, "purpose": e.purpose}[by]
        rows.setdefault(key or "(none)", Row(key or "(none)")).add(v, e.outcome == "OK")
    return sorted(rows.values(), key=lambda r: (-r.uses, r.key))


def render_report(rows: list[Row], by: str, fmt: str) -> str:
    dicts = [r.as_dict(by) for r in rows]
    if fmt == "json":
        return json.dumps(dicts, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=[by, "uses", "ok", "failed", "first", "last", "types"]
        )
        writer.writeheader()
        writer.writerows(dicts)
        return buf.getvalue()
    raise InvalidArgument(f"unknown format {fmt!r}")


def run_report(args: argparse.Namespace) -> int:
    async def body(session: Session) -> int:
        entries = await _verified_uses(session, args)
        rows = report_rows(entries, args.by)
        if args.format == "table":
            from rich.table import Table

            state = session.auditor.state if session.auditor else None
            size = state.size if state else 0
            table = Table(title=f"Uses by {args.by} ({len(entries)} verified entries, tree {size})")
            for col in (args.by, "uses", "ok", "failed", "first", "last", "types"):
                table.add_column(col)
            for r in rows:
                d = r.as_dict(args.by)
                table.add_row(*(str(d[c]) for c in d))
            console.print(table)
        else:
            sys.stdout.write(render_report(rows, args.by, args.format))
        return 0

    return _run(args, body)


# -- parser --------------------------------------------------------------------------------


def _vkey_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vkey", help="verifier key to pin (default: [audit] verifier_key)")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="RFC 3339 time (inclusive)")
    parser.add_argument("--until", help="RFC 3339 time (exclusive)")
    parser.add_argument("--enterprise", help="only uses about this USCC")
    parser.add_argument("--provider", help="only uses that asked this provider unit")
    parser.add_argument("--institution", help="only uses by this institution id")
    parser.add_argument("--purpose", help="only uses under this purpose")
    parser.add_argument("--type", action="append", help="only this event type (repeatable)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="verify and read the transparency log")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("vkey", help="print the log's verifier key string")
    add_config_argument(p)
    p.set_defaults(run=run_vkey)

    p = actions.add_parser("checkpoint", help="print the latest signed checkpoint verbatim")
    p.add_argument("--fresh", action="store_true", help="ask the log to sign its current size")
    add_config_argument(p)
    p.set_defaults(run=run_checkpoint)

    p = actions.add_parser("entries", help="entries as JSON lines (index, leaf, leaf hash)")
    p.add_argument("--from", dest="start", type=int, default=0, help="first index (default 0)")
    p.add_argument(
        "--to", type=int, help="one past the last index (default: the verified tree size)"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="recompute leaf hashes (and, for --from 0 to the verified size, the root)",
    )
    _vkey_argument(p)
    add_config_argument(p)
    p.set_defaults(run=run_entries)

    p = actions.add_parser("follow", help="verify the latest checkpoint against the last one")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NOTE_FILE",
        help="also cross-check a checkpoint note obtained elsewhere (repeatable)",
    )
    _vkey_argument(p)
    add_config_argument(p)
    p.set_defaults(run=run_follow)

    p = actions.add_parser("prove", help="verify one entry's inclusion in the verified tree")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the entry's log index")
    which.add_argument("--leaf-hash", help="the entry's leaf hash, hex")
    _vkey_argument(p)
    add_config_argument(p)
    p.set_defaults(run=run_prove)

    p = actions.add_parser("uses", help="matching uses as JSON lines, each inclusion-verified")
    _filters(p)
    p.add_argument("--request-id", help="only this request id")
    _vkey_argument(p)
    add_config_argument(p)
    p.set_defaults(run=run_uses)

    p = actions.add_parser("report", help="uses grouped by institution/enterprise/provider/purpose")
    p.add_argument("--by", choices=REPORT_DIMENSIONS, required=True)
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _filters(p)
    _vkey_argument(p)
    add_config_argument(p)
    p.set_defaults(run=run_report)
