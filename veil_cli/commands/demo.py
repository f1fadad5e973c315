"""``veil demo``: a whole local federation on the embedded defaults, and a scripted session.

One command with no prior set-up: certificates and synthetic data into a work
directory, the platform, the gateway and one provider node per unit as separate OS
processes on loopback, a session of a bank through the gateway, then a clean stop.

``--keep-running`` leaves the federation up and writes ``client.toml`` (the demo bank)
and ``enterprise-<USCC>.toml`` (an enrolled enterprise that can grant and revoke);
``--stop --workdir DIR`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import shutil
import tempfile
import time
from pathlib import Path

import grpc
from rich.panel import Panel

from veil.catalog import load_catalog
from veil.errors import VeilError, from_rpc_error
from veil.v1 import gateway_pb2, gateway_pb2_grpc, platform_pb2, platform_pb2_grpc
from veil_cli.audit_demo import audit_session
from veil_cli.authz_demo import authorization_session
from veil_cli.authz_setup import enroll_enterprise, onboard_institution
from veil_cli.calls import call_gateway
from veil_cli.client import load_client_config
from veil_cli.commands.data import generate_to_dir
from veil_cli.federation import INSTITUTION, Federation, stop_detached
from veil_cli.render import console, kv_table, providers_table, report_table
from veil_cli.score_demo import scoring_session
from veil_cli.verify_demo import monitoring_session, verification_session

DEFAULT_ENTERPRISES = 5000
DEFAULT_SEED = 7
AGGREGATION_TIMEOUT_S = 120.0
# A valid code (all checks pass) that the generator never issues: region 000000 is not used.
UNKNOWN_USCC_BODY = ("9", "1", "110105", "MA00000A")


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


async def wait_for_aggregation(admin_config: Path) -> list[platform_pb2.ProviderStatus]:
    config = load_client_config(admin_config)
    deadline = time.monotonic() + AGGREGATION_TIMEOUT_S
    async with config.platform_channel() as channel:
        stub = platform_pb2_grpc.PlatformServiceStub(channel)
        while True:
            answer = await stub.ListProviders(platform_pb2.ListProvidersRequest(), timeout=10.0)
            if all(s.last_aggregated_at for s in answer.providers):
                return list(answer.providers)
            if time.monotonic() > deadline:
                missing = [s.name for s in answer.providers if not s.last_aggregated_at]
                raise VeilError(f"physical aggregation did not finish for {missing}")
            await asyncio.sleep(0.3)


def pick_enterprise(data_dir: Path) -> str:
    with (data_dir / "labels.csv").open(newline="") as fh:
        return next(csv.DictReader(fh))["uscc"]


async def enterprise_name(fed: Federation, uscc: str) -> str:
    """The registered name, from the public report (the bank's own lookup)."""
    answer = await call_gateway(
        str(fed.workdir / "client.toml"),
        gateway_pb2_grpc.GatewayServiceStub,
        "LookupEnterprise",
        gateway_pb2.GatewayLookupRequest(uscc=uscc),
    )
    return str(answer.name)


def unknown_uscc() -> str:
    from veil.uscc import make_uscc

    return make_uscc(*UNKNOWN_USCC_BODY)


async def institution_session(client_config: Path, uscc: str) -> None:
    config = load_client_config(client_config)
    catalog = load_catalog()
    async with config.gateway_channel() as channel:
        gw = gateway_pb2_grpc.GatewayServiceStub(channel)

        step("1. The bank reads the published information-sharing catalog")
        published = await gw.GetCatalog(gateway_pb2.GetCatalogRequest(), timeout=5.0)
        categories = {d.category_id for d in published.datasets}
        fields = sum(len(d.fields) for d in published.datasets)
        console.print(
            f"catalog {published.digest[:16]}…: {len(categories)} categories, "
            f"{len(published.datasets)} datasets, {fields} fields"
        )

        step(f"2. The bank looks up enterprise {uscc} in the public data")
        t0 = time.perf_counter()
        report = await gw.LookupEnterprise(
            gateway_pb2.GatewayLookupRequest(uscc=uscc), timeout=15.0
        )
        ms = (time.perf_counter() - t0) * 1000
        console.print(report_table(report.uscc, report.name, list(report.datasets), catalog))
        console.print(f"request {report.request_id} answered in {ms:.0f} ms")

        step("3. Bad input is refused with a clear status")
        for label, code in (
            ("a code with a wrong check character", uscc[:-1] + ("0" if uscc[-1] != "0" else "1")),
            ("a valid code of an enterprise nobody registered", unknown_uscc()),
        ):
            try:
                await gw.LookupEnterprise(gateway_pb2.GatewayLookupRequest(uscc=code), timeout=15.0)
                raise VeilError(f"{label} was not refused")
            except grpc.aio.AioRpcError as err:
                mapped = from_rpc_error(err)
                console.print(f"{label} ({code}): [yellow]{err.code().name}[/]: {mapped.message}")


async def run_session(fed: Federation, enterprises: int, seed: int) -> None:
    step("Generating certificates and synthetic data")
    fed.prepare()
    summary = generate_to_dir(fed.data, enterprises=enterprises, seed=seed, units=fed.providers)
    console.print(f"{summary}")

    step("Starting the federation (separate processes, mutual TLS on loopback)")
    await fed.launch(detach=False)
    console.print(
        kv_table(
            "Nodes (all healthy)",
            {
                f"{n.role} {n.name}": f"{n.address}  pid {fed.processes[n.name].pid}"
                for n in fed.nodes
            },
        )
    )
    statuses = await wait_for_aggregation(fed.workdir / "admin.toml")
    console.print(providers_table(statuses))
    await onboard_institution(fed, INSTITUTION)
    uscc = pick_enterprise(fed.data)
    await institution_session(fed.workdir / "client.toml", uscc)
    await authorization_session(fed, uscc, await enterprise_name(fed, uscc), INSTITUTION)
    await verification_session(fed, uscc, await enterprise_name(fed, uscc), INSTITUTION)
    await monitoring_session(fed, uscc, INSTITUTION)
    await scoring_session(fed, uscc, await enterprise_name(fed, uscc), INSTITUTION)
    # Last, so that it covers every entry the session wrote (scores and the batch job
    # included): the bank, the auditor, then every provider's reconciliation.
    await audit_session(fed, uscc)


def run(args: argparse.Namespace) -> int:
    if args.stop:
        if not args.workdir:
            raise VeilError("--stop needs --workdir DIR")
        stopped = stop_detached(Path(args.workdir))
        for name, clean in stopped.items():
            console.print(f"{name}: {'stopped' if clean else 'KILLED after timeout'}")
        if not stopped:
            console.print("nothing was running")
        return 0 if all(stopped.values()) else 1

    temp = None
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        if (
            args.keep_running
            and (workdir / "run").exists()
            and any((workdir / "run").glob("*.pid"))
        ):
            raise VeilError(f"a federation is already running in {workdir}; stop it with --stop")
    else:
        if args.keep_running:
            raise VeilError("--keep-running needs --workdir DIR")
        temp = tempfile.mkdtemp(prefix="veil-demo-")
        workdir = Path(temp)
    fed = Federation(workdir)
    ok = False
    try:
        if args.keep_running:
            fed.prepare()
            generate_to_dir(
                fed.data, enterprises=args.enterprises, seed=args.seed, units=fed.providers
            )
            asyncio.run(fed.launch(detach=True))
            asyncio.run(wait_for_aggregation(fed.workdir / "admin.toml"))
            asyncio.run(onboard_institution(fed, INSTITUTION))
            client = workdir / "client.toml"
            uscc = pick_enterprise(fed.data)
            name = asyncio.run(enterprise_name(fed, uscc))
            enterprise = enroll_enterprise(fed, uscc, name)
            fields = "tax_grade,tax_consecutive_normal_months"
            loan = "LOAN-DEMO-1"
            console.print(
                Panel(
                    f"The federation is running in {workdir}.\n"
                    f"Client configuration: {client} (institution {INSTITUTION})\n"
                    f"Enterprise configuration: {enterprise} ({uscc}, {name})\n"
                    f"Administrator configuration: {workdir / 'admin.toml'}\n\n"
                    f"  veil catalog --config {client}\n"
                    f"  veil lookup {uscc} --config {client}\n"
                    f"  veil status --config {workdir / 'admin.toml'}\n"
                    f"  veil institution show {INSTITUTION} --config {workdir / 'admin.toml'}\n"
                    f"  veil audit follow --config {workdir / 'auditor.toml'}\n\n"
                    "The enterprise authorizes the bank, which fetches; the enterprise revokes:\n"
                    f"  veil enterprise grant --config {enterprise} --institution {INSTITUTION} "
                    f"--fields {fields} --purpose loan_origination --loan-ref {loan}\n"
                    f"  veil fetch {uscc} --config {client} --fields {fields} --grant GRANT_ID "
                    f"--purpose loan_origination --loan-ref {loan}\n"
                    f"  veil enterprise uses GRANT_ID --config {enterprise}\n"
                    f"  veil enterprise revoke GRANT_ID --config {enterprise}\n\n"
                    "Verification (only yes / no / no record leaves the tax bureau):\n"
                    f"  veil enterprise grant --config {enterprise} --institution {INSTITUTION} "
                    f"--use verify --fields tax_vat_paid_last_year --purpose loan_origination "
                    f"--loan-ref {loan}\n"
                    f"  veil verify {uscc} --config {client} --grant GRANT_ID "
                    "--purpose loan_origination "
                    f"--loan-ref {loan} --claim "
                    '\'{"field":"tax_vat_paid_last_year","op":"ge",'
                    '"value":"10000","unit":"CNY"}\'\n\n'
                    "Joint modelling on the providers' stores, then scoring under a grant:\n"
                    f"  veil train --federation {workdir} --model-name sme-joint --approve\n"
                    f"  veil score models --config {client} --json   # the fields to grant\n"
                    f"  veil enterprise grant --config {enterprise} --institution {INSTITUTION} "
                    "--use score --fields FIELDS --purpose loan_origination "
                    f"--loan-ref {loan}\n"
                    f"  veil score enterprise {uscc} --model sme-joint --grant GRANT_ID "
                    f"--purpose loan_origination --loan-ref {loan} --config {client}\n\n"
                    f"Stop it with: veil demo --stop --workdir {workdir}",
                    title="veil demo --keep-running",
                )
            )
            ok = True
            return 0
        asyncio.run(run_session(fed, args.enterprises, args.seed))
        ok = True
    finally:
        if not (args.keep_running and ok):
            step("Stopping every process (SIGTERM, graceful drain)")
            codes = fed.stop()
            for name, code in codes.items():
                console.print(f"{name}: exit {code if code is not None else 'KILLED'}")
            if any(code != 0 for code in codes.values()):
                ok = False
            if temp and ok:
                shutil.rmtree(temp, ignore_errors=True)
            elif temp:
                console.print(f"logs kept in {workdir / 'logs'}")
    return 0 if ok else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run a whole local federation and a session")
    parser.add_argument("--workdir", help="work directory (default: a temporary one)")
    parser.add_argument(
        "--enterprises", type=int, default=DEFAULT_ENTERPRISES, help="synthetic population size"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the federation up (needs --workdir)"
    )
    parser.add_argument("--stop", action="store_true", help="stop a kept-running federation")
    parser.set_defaults(run=run)
