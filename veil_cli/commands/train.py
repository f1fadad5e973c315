"""``veil train``: joint modelling (联合建模) from files, through real party processes.

    veil train --labels labels.csv --party NAME=features.csv [--party ...]
               --id-column ID --label-column y [--test-size 0.3] [--seed 0] [--out model.json]

Each ``--party`` becomes its own process (mTLS on loopback, a throw-away development PKI)
that reads only its own CSV; this process is the label party and reads only the labels
CSV (its extra columns, if any, are the label party's own features).  Progress goes to
stderr, one line per epoch; the last line on stdout is a JSON summary.

``--out model.json`` writes the trained model (``veil-vfl/1``); with
``--features NAME=defs.json`` for every party (column → catalog feature definition) it also
writes the scoring registry's ``veil-model/1`` next to it (``model.veil-model.json``).
A report (Markdown and PNG plots) goes to ``--report DIR`` (default: next to ``--out``).
A failed job keeps its work directory; rerun the same command with
``--resume --work-dir DIR`` to continue from the last completed epoch.

    veil train --federation DIR --model-name ID [--approve] [--units samr,tax,...]

trains on a running local federation's provider stores (one party process per provider,
with that provider's certificate, reading its own store) and imports the ``veil-model/1``
result into the platform's registry (docs/training.md, "Training on a live federation").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from veil.errors import InvalidArgument, VeilError
from veil.training.config import JobConfig
from veil.training.model import build_document, to_veil_model
from veil.training.report import write_report
from veil_cli.training_run import LABEL_NODE, PartySpec, TrainingRun, node_name, train_files


def parse_party(text: str) -> PartySpec:
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise InvalidArgument(f"--party {text!r}: expected NAME=features.csv")
    node = node_name(name)
    if not node or not all(c.isalnum() or c == "-" for c in node) or node[0] == "-":
        raise InvalidArgument(f"--party {name!r}: use letters, digits, '-' or '_'")
    return PartySpec(name, Path(path))


def _config(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        test_size=args.test_size,
        validation_size=args.validation_size,
        seed=args.seed,
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        lr_decay=args.lr_decay,
        l2=None if args.l2 == "auto" else float(args.l2),
        patience=args.patience,
        encoding=args.encoding,
        binning=not args.no_binning,
        iv_threshold=args.iv_threshold,
        paillier_bits=args.paillier_bits,
        allow_single_feature_party=args.allow_single_feature_party,
    )


def _progress(event: str, data: dict[str, Any], epochs: int) -> None:
    if event == "epoch":
        star = "  *" if data["improved"] else ""
        print(
            f"epoch {data['epoch'] + 1}/{epochs}: train loss {data['train_loss']:.4f}  "
            f"validation loss {data['validation_loss']:.4f}  validation AUC "
            f"{data['validation_auc']:.4f}  lr {data['learning_rate']:.4g}  "
            f"{data['seconds']:.2f}s{star}",
            file=sys.stderr,
            flush=True,
        )
    elif event == "aligned":
        print(
            "aligned: " + ", ".join(f"{k} {v}" for k, v in data.items()),
            file=sys.stderr,
            flush=True,
        )
    elif event == "setup":
        print(f"setup done in {data['seconds']:.1f}s", file=sys.stderr, flush=True)
    elif event == "resumed":
        print(f"resumed after epoch {data['epoch'] + 1}", file=sys.stderr, flush=True)


def _rename(result: Any, names: dict[str, str]) -> None:
    """Report parties under the names the user gave (nodes are DNS labels)."""
    result.parts = {
        names.get(k, k): {**v, "party": names.get(k, k)} for k, v in result.parts.items()
    }
    for row in result.iv_table:
        row["party"] = names.get(row["party"], row["party"])
    result.counts = {
        (f"party:{names.get(k[6:], k[6:])}" if k.startswith("party:") else k): v
        for k, v in result.counts.items()
    }
    result.features = {names.get(k, k): v for k, v in result.features.items()}


def document(result: Any) -> dict[str, Any]:
    return build_document(
        job_id=result.job_id,
        label_party=result.label_party,
        intercept=result.intercept,
        parts=result.parts,
        metrics=result.metrics,
        iv_table=result.iv_table,
        training={
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "seconds": round(result.seconds, 3),
            "setup_seconds": round(result.setup_seconds, 3),
            "batch_size": result.batch_size,
            "resumed_from_epoch": result.resumed_from,
            "rows": result.counts,
            "features": result.features,
            "config": json.loads(result.config.to_json()),
            "history": [dataclasses.asdict(h) for h in result.history],
        },
    )


def load_definitions(specs: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for text in specs:
        name, sep, path = text.partition("=")
        if not sep:
            raise InvalidArgument(f"--features {text!r}: expected NAME=definitions.json")
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"--features {name}: cannot read {path} ({exc})") from None
        if not isinstance(raw, dict):
            raise InvalidArgument(f"--features {name}: {path} must map columns to definitions")
        out[name] = raw
    return out


FEDERATION_UNITS = ("samr", "social_insurance", "tax", "utilities")
"""Default units for ``--federation``: registries that hold (nearly) every enterprise, so
the intersection stays large; courts, real estate, … hold only some enterprises."""


def demo_definitions() -> dict[str, dict[str, dict[str, Any]]]:
    """The demo credit model's features (``platform_node.models.demo``) by provider unit."""
    from platform_node.models.demo import TEMPLATE

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for t in TEMPLATE:
        d: dict[str, Any] = {"name": t.name, "provider": t.provider, "field": t.field}
        if t.aggregate:
            d["aggregate"] = t.aggregate
        if t.divide_by:
            d["divide_by"] = t.divide_by
        transform = {
            **({"log": True} if t.log else {}),
            **({"clip": list(t.clip)} if t.clip else {}),
        }
        if transform:
            d["transform"] = transform
        d["categorical"] = t.encoding == "one_hot"
        out.setdefault(t.provider, {})[t.name] = d
    return out


def run_federation(args: argparse.Namespace) -> int:
    """Train on a running local federation's provider stores; import into its registry."""
    from veil.training.store_source import model_definition
    from veil_cli.score_demo import import_model

    fed = Path(args.federation)
    fed = fed.parent if fed.is_file() else fed
    admin = fed / "admin.toml"
    if not admin.exists() or not (fed / "config").is_dir():
        raise InvalidArgument(
            f"--federation {args.federation}: not a federation directory (admin.toml, config/)"
        )
    if not args.model_name:
        raise InvalidArgument("--federation needs --model-name (the registry's model id)")
    if args.features:
        definitions: dict[str, dict[str, dict[str, Any]]] = {}
        for name, defs in load_definitions(args.features).items():
            definitions[name] = defs
    else:
        definitions = demo_definitions()
    units = (
        args.units.split(",") if args.units else [u for u in FEDERATION_UNITS if u in definitions]
    )
    missing = [
        u
        for u in units
        if u not in definitions or not (fed / "config" / f"{node_name(u)}.toml").exists()
    ]
    if missing:
        raise InvalidArgument(f"--units: no provider node or feature definitions for {missing}")
    config = _config(args)
    workdir = Path(args.work_dir) if args.work_dir else fed / "training"
    features_dir = workdir / "features"
    features_dir.mkdir(parents=True, exist_ok=True)
    parties = []
    for unit in units:
        path = features_dir / f"{unit}.json"
        path.write_text(json.dumps(definitions[unit], indent=1, sort_keys=True))
        parties.append(
            PartySpec(unit, store_config=fed / "config" / f"{node_name(unit)}.toml", features=path)
        )
    labels = Path(args.labels) if args.labels else fed / "data" / "labels.csv"
    run_ = TrainingRun(
        workdir,
        parties,
        args.id_column or "uscc",
        uscc=True,
        workers=args.workers,
        certs_dir=fed / "certs",
    )
    result = _train(run_, labels, args.label_column or "default", config, args)
    _rename(result, {**{p.node: p.name for p in parties}, LABEL_NODE: LABEL_NODE})
    doc = document(result)
    veil_model = to_veil_model(
        doc,
        {u: {c: model_definition(d) for c, d in definitions[u].items()} for u in units},
        model_id=args.model_name,
    )
    out = Path(args.out) if args.out else workdir / f"{args.model_name}.json"
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    vm_path = out.with_name(out.stem + ".veil-model.json")
    vm_path.write_text(json.dumps(veil_model, indent=1, sort_keys=True) + "\n")
    info = asyncio.run(import_model(str(admin), veil_model, approve=args.approve))
    summary = result.summary()
    summary.update(
        model=str(out),
        veil_model=str(vm_path),
        registry={"model_id": info.model_id, "version": info.version, "state": info.state},
        report=str(
            write_report(
                doc,
                result.curves,
                Path(args.report) if args.report else out.with_name(out.stem + "-report"),
            )
        ),
        work_dir=str(workdir),
    )
    print(json.dumps(summary, sort_keys=True))
    return 0


def _train(
    run_: TrainingRun, labels: Path, label_column: str, config: JobConfig, args: argparse.Namespace
) -> Any:
    try:
        return asyncio.run(
            train_files(
                run_,
                labels,
                label_column,
                config,
                resume=args.resume,
                progress=lambda e, d: _progress(e, d, config.max_epochs),
            )
        )
    except VeilError as exc:
        if "disconnected" in exc.message or "resume" in exc.message:
            exc.message += (
                f"\nveil: the job can be resumed: rerun with --resume --work-dir {run_.workdir}"
            )
        raise
    except KeyboardInterrupt:
        print(f"veil: interrupted; resume with --resume --work-dir {run_.workdir}", file=sys.stderr)
        raise


def run(args: argparse.Namespace) -> int:
    if args.federation:
        return run_federation(args)
    if not args.labels or not args.party or not args.id_column or not args.label_column:
        raise InvalidArgument(
            "give --labels, --party (at least two), --id-column and --label-column"
        )
    parties = [parse_party(p) for p in args.party]
    names = {p.node: p.name for p in parties}
    if len(names) != len(parties):
        raise InvalidArgument("party names must be distinct")
    config = _config(args)
    definitions = load_definitions(args.features or [])
    if args.resume and not args.work_dir:
        raise InvalidArgument("--resume needs the --work-dir of the failed run")
    temporary = not args.work_dir
    workdir = Path(args.work_dir or tempfile.mkdtemp(prefix="veil-train-"))
    run_ = TrainingRun(workdir, parties, args.id_column, uscc=args.uscc, workers=args.workers)
    result = _train(run_, Path(args.labels), args.label_column, config, args)
    _rename(result, {**names, LABEL_NODE: LABEL_NODE})
    doc = document(result)
    summary = result.summary()
    out = Path(args.out) if args.out else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        summary["model"] = str(out)
        if definitions:
            model_id = args.model_id or node_name(out.stem).strip("-") or "joint-model"
            veil_model = to_veil_model(doc, definitions, model_id=model_id)
            vm_path = out.with_name(out.stem + ".veil-model.json")
            vm_path.write_text(json.dumps(veil_model, indent=1, sort_keys=True) + "\n")
            summary["veil_model"] = str(vm_path)
    report_dir = (
        Path(args.report)
        if args.report
        else (out.with_name(out.stem + "-report") if out is not None else workdir / "report")
    )
    summary["report"] = str(write_report(doc, result.curves, report_dir))
    if temporary and out is not None and not args.report:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        summary["work_dir"] = str(workdir)
    print(json.dumps(summary, sort_keys=True))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="joint modelling: vertical federated logistic regression among real party processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--labels", help="the label party's CSV: ID, label, optional own features")
    p.add_argument(
        "--party", action="append", default=[], metavar="NAME=FILE.csv", help="a feature party"
    )
    p.add_argument("--id-column", help="the ID column (the same name in every CSV)")
    p.add_argument("--label-column", help="the label column of --labels (0/1)")
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--validation-size", type=float, default=0.2, help="share of non-test rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the model (veil-vfl/1 JSON) here")
    p.add_argument("--report", help="directory for report.md and PNG plots")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs")
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="rows per mini-batch; 0 (default): about 32 batches per epoch, at most 512 rows",
    )
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--learning-rate", type=float, default=0.02)
    p.add_argument("--lr-decay", type=float, default=0.2, help="lr_e = lr / (1 + decay·e)")
    p.add_argument("--l2", default="auto", help="L2 strength λ, or auto = 1/n_train (C = 1)")
    p.add_argument("--patience", type=int, default=3, help="early stopping patience (epochs)")
    p.add_argument("--encoding", choices=("standard", "woe"), default="standard")
    p.add_argument("--no-binning", action="store_true", help="skip federated WOE/IV binning")
    p.add_argument("--iv-threshold", type=float, default=0.0, help="drop columns with lower IV")
    p.add_argument("--paillier-bits", type=int, default=2048)
    p.add_argument("--uscc", action="store_true", help="IDs are unified social credit codes")
    p.add_argument("--workers", type=int, default=2, help="threads per party for Paillier work")
    p.add_argument("--work-dir", help="keep certificates, checkpoints and logs here")
    p.add_argument("--resume", action="store_true", help="continue the job in --work-dir")
    p.add_argument(
        "--features",
        action="append",
        default=[],
        metavar="NAME=defs.json",
        help="catalog feature definitions per party (also write veil-model/1)",
    )
    p.add_argument("--model-id", help="model id of the veil-model/1 document")
    p.add_argument(
        "--allow-single-feature-party",
        action="store_true",
        help="DANGER: with one feature party the platform learns its per-row partial scores",
    )
    p.add_argument(
        "--federation",
        metavar="DIR",
        help="train on a running local federation's provider stores (its directory or "
        "admin.toml) and import the model into its registry",
    )
    p.add_argument("--model-name", help="(with --federation) the registry's model id")
    p.add_argument(
        "--units",
        help="(with --federation) provider units, comma-separated "
        f"(default {','.join(FEDERATION_UNITS)})",
    )
    p.add_argument("--approve", action="store_true", help="(with --federation) approve on import")
    p.set_defaults(run=run)
