"""``veil model …``: the platform's model registry (administrators) and the demo model.

    veil model import model.json --config admin.toml [--approve]
    veil model list [--model ID] --config admin.toml
    veil model show ID [--version N] [--json] --config admin.toml
    veil model approve ID VERSION --config admin.toml
    veil model retire ID VERSION --config admin.toml
    veil model deploy ID [--version N] --config admin.toml
    veil model fit-demo --data DIR --out model.json [--model-id ID]

The JSON format is ``veil-model/1`` (:mod:`veil.scoring.spec`, docs/scoring.md); training
writes the same format.  Import validates it against the catalog and stores a new version
(state ``imported``); approval records who and when and pushes each provider its part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from veil.errors import InvalidArgument
from veil.v1 import scoring_pb2 as pb
from veil.v1 import scoring_pb2_grpc
from veil_cli.calls import call_platform
from veil_cli.client import add_config_argument
from veil_cli.render import console, kv_table

TIMEOUT_S = 60.0


def _admin(args: argparse.Namespace, method: str, request: Any) -> Any:
    return asyncio.run(
        call_platform(args.config, scoring_pb2_grpc.ModelAdminStub, method, request, TIMEOUT_S)
    )


def show_info(info: pb.ModelInfo) -> None:
    card = json.loads(info.card_json)
    rows = {
        "state": info.state,
        "sha256": info.sha256,
        "kind": card.get("kind", ""),
        "description": card.get("description", ""),
        "providers": ", ".join(card.get("providers", [])),
        "on provider drop-out": card.get("on_provider_unavailable", ""),
        "imported": f"{card['imported']['by']} at {card['imported']['at']}",
        "approved": (
            f"{card['approved']['by']} at {card['approved']['at']}" if card.get("approved") else "—"
        ),
    }
    if "training_window" in card:
        rows["training window"] = (
            f"{card['training_window']['start']} … {card['training_window']['end']}"
        )
    for name, value in card.get("metrics", {}).items():
        rows[f"metric {name}"] = str(value)
    console.print(kv_table(f"model {info.model_id} v{info.version}", rows))
    table = Table(title="features by provider")
    for col in ("provider", "feature", "field", "aggregate", "encoding"):
        table.add_column(col)
    for provider, features in card.get("features_by_provider", {}).items():
        for f in features:
            table.add_row(provider, f["name"], f["field"], f["aggregate"], f["encoding"])
            provider = ""
    console.print(table)


def run_import(args: argparse.Namespace) -> int:
    text = Path(args.file).read_text(encoding="utf-8")
    info = _admin(
        args, "ImportModel", pb.ImportModelRequest(document_json=text, approve=args.approve)
    )
    show_info(info)
    return 0


def run_list(args: argparse.Namespace) -> int:
    answer = _admin(args, "ListAllModels", pb.ListModelsRequest(model_id=args.model or ""))
    table = Table(title="models")
    for col in ("model", "version", "state", "approved by", "sha256"):
        table.add_column(col)
    for m in answer.models:
        card = json.loads(m.card_json)
        approved = card.get("approved") or {}
        table.add_row(m.model_id, str(m.version), m.state, approved.get("by", "—"), m.sha256[:16])
    console.print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    info = _admin(args, "GetModel", pb.ModelRef(model_id=args.model_id, version=args.version))
    if args.json:
        print(info.document_json)
    else:
        show_info(info)
    return 0


def run_transition(args: argparse.Namespace) -> int:
    method = {"approve": "ApproveModel", "retire": "RetireModel"}[args.model_command]
    info = _admin(args, method, pb.ModelRef(model_id=args.model_id, version=args.version))
    console.print(f"model {info.model_id} v{info.version}: {info.state}")
    return 0


def run_deploy(args: argparse.Namespace) -> int:
    answer = _admin(args, "DeployModel", pb.ModelRef(model_id=args.model_id, version=args.version))
    console.print(f"installed at {', '.join(answer.providers)}")
    return 0


def run_fit_demo(args: argparse.Namespace) -> int:
    from platform_node.models.demo import fit_demo_model
    from veil_cli.score_demo import write_model

    data = Path(args.data)
    if not (data / "labels.csv").exists():
        raise InvalidArgument(f"{data} holds no labels.csv: run veil data generate first")
    document = fit_demo_model(data, model_id=args.model_id)
    write_model(Path(args.out), document)
    metrics = document["card"]["metrics"]
    console.print(
        f"wrote {args.out}: {len(document['features'])} features, in-sample AUC "
        f"{metrics['auc_in_sample']:.3f}, KS {metrics['ks_in_sample']:.3f}"
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="the platform's model registry")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    p = sub.add_parser("import", help="import a veil-model/1 JSON file as a new version")
    p.add_argument("file")
    p.add_argument("--approve", action="store_true", help="approve it at once")
    add_config_argument(p)
    p.set_defaults(run=run_import)

    p = sub.add_parser("list", help="every model version")
    p.add_argument("--model", help="only this model id")
    add_config_argument(p)
    p.set_defaults(run=run_list)

    p = sub.add_parser("show", help="a version's model card (or --json: its document)")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="default: the latest")
    p.add_argument("--json", action="store_true")
    add_config_argument(p)
    p.set_defaults(run=run_show)

    for action in ("approve", "retire"):
        p = sub.add_parser(action, help=f"{action} a version")
        p.add_argument("model_id")
        p.add_argument("version", type=int)
        add_config_argument(p)
        p.set_defaults(run=run_transition)

    p = sub.add_parser("deploy", help="(re-)send every provider its encrypted part now")
    p.add_argument("model_id")
    p.add_argument("--version", type=int, default=0, help="default: the latest approved")
    add_config_argument(p)
    p.set_defaults(run=run_deploy)

    p = sub.add_parser("fit-demo", help="fit the demo model on generated data")
    p.add_argument("--data", required=True, help="a directory written by veil data generate")
    p.add_argument("--out", required=True, help="where to write the model JSON")
    p.add_argument("--model-id", default="sme-default")
    p.set_defaults(run=run_fit_demo)
