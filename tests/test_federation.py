"""End to end through the real daemons: separate processes, mutual TLS, loopback."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import veil_cli.federation as federation_module
from tests.conftest import run
from veil.certs import init_dev_pki
from veil.client_auth import assertion_interceptors
from veil.config import TLSConfig
from veil.tls import PeerIdentity, secure_channel
from veil.v1 import gateway_pb2, gateway_pb2_grpc, platform_pb2, platform_pb2_grpc
from veil.values import from_record
from veil_cli.client import load_client_config
from veil_cli.federation import ADMIN, INSTITUTION


def first_uscc(fed: Any) -> str:
    with (fed.data / "labels.csv").open(newline="") as fh:
        return str(next(csv.DictReader(fh))["uscc"])


async def gateway_call(
    fed: Any,
    method: str,
    request: Any,
    who: str = INSTITUTION,
    tls: TLSConfig | None = None,
    timeout: float = 15.0,
) -> Any:
    node = fed.node("gateway")
    interceptors = []
    if tls is None and who == INSTITUTION:  # the bank signs a client assertion per call
        identity = load_client_config(fed.workdir / "client.toml").require_identity()
        interceptors = assertion_interceptors(identity)
    async with secure_channel(
        node.address,
        tls or fed.client_tls(who),
        PeerIdentity("gateway", node.name),
        interceptors=interceptors,
    ) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        return await getattr(stub, method)(request, timeout=timeout)


def test_lookup_returns_public_report(federation: Any) -> None:
    uscc = first_uscc(federation)
    answer = run(
        gateway_call(federation, "LookupEnterprise", gateway_pb2.GatewayLookupRequest(uscc=uscc))
    )
    assert answer.uscc == uscc
    assert answer.name
    by_id = {d.dataset_id: d for d in answer.datasets}
    registration = by_id["samr_basic"]
    assert registration.source == "platform"  # physically aggregated
    assert len(registration.records) == 1
    # live public interface calls reached the providers that hold them
    assert any(d.source == "samr" for d in answer.datasets)
    assert any(d.source == "court" for d in answer.datasets)
    # nothing that needs authorization, nothing verification-only, left a provider
    from veil.catalog import Classification, load_catalog

    catalog = load_catalog()
    for ds in answer.datasets:
        subset = catalog.dataset(ds.dataset_id).public_subset
        for record in ds.records:
            values = from_record(record)
            if subset is not None:  # a public subset: only its rows, e.g. A-grade taxpayers
                assert str(values[subset.field]) in subset.values
                continue
            for field_id in values:
                if field_id in catalog.keys:  # the identity keys (uscc, enterprise_name)
                    continue
                assert catalog.field(field_id).classification == Classification.PUBLIC, field_id


def test_a_grade_taxpayers_are_aggregated_and_no_other_grade(federation: Any) -> None:
    from veil.values import from_record as decode

    node = federation.node("platform")

    async def status() -> Any:
        async with secure_channel(
            node.address, federation.client_tls(ADMIN), PeerIdentity("platform", node.name)
        ) as channel:
            stub = platform_pb2_grpc.PlatformServiceStub(channel)
            return await stub.ListProviders(platform_pb2.ListProvidersRequest(), timeout=10)

    tax = next(p for p in run(status()).providers if p.name == "tax")
    assert tax.aggregated_records > 0  # the A-grade list arrived by physical aggregation
    from platform_node.public_store import PublicStore
    from veil.store import make_engine

    store = PublicStore(make_engine(f"sqlite:///{federation.data / 'platform.db'}"))
    from sqlalchemy import select

    from platform_node.public_store import public_records
    from veil.v1 import common_pb2

    with store.engine.connect() as conn:
        blobs = (
            conn.execute(
                select(public_records.c.record).where(
                    public_records.c.dataset_id == "tax_credit_grade"
                )
            )
            .scalars()
            .all()
        )
    grades = {decode(common_pb2.Record.FromString(b))["tax_grade"] for b in blobs}
    assert grades == {"A"}


def test_invalid_uscc_is_invalid_argument_naming_the_check(federation: Any) -> None:
    uscc = first_uscc(federation)
    broken = uscc[:-1] + ("0" if uscc[-1] != "0" else "1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(
            gateway_call(
                federation, "LookupEnterprise", gateway_pb2.GatewayLookupRequest(uscc=broken)
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "check character" in (info.value.details() or "")


def test_unknown_enterprise_is_not_found(federation: Any) -> None:
    from veil_cli.commands.demo import unknown_uscc

    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(
            gateway_call(
                federation,
                "LookupEnterprise",
                gateway_pb2.GatewayLookupRequest(uscc=unknown_uscc()),
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown_uscc() in (info.value.details() or "")


def test_catalog_is_published(federation: Any) -> None:
    answer = run(gateway_call(federation, "GetCatalog", gateway_pb2.GetCatalogRequest()))
    assert len({d.category_id for d in answer.datasets}) == 14
    assert len(answer.digest) == 64


def test_client_with_foreign_ca_is_refused_at_tls(federation: Any, tmp_path: Path) -> None:
    rogue = init_dev_pki(tmp_path, [("institution", INSTITUTION)])[INSTITUTION]
    tls = TLSConfig(ca=federation.certs / "ca.pem", cert=rogue.cert, key=rogue.key)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(
            gateway_call(
                federation, "GetCatalog", gateway_pb2.GetCatalogRequest(), tls=tls, timeout=5.0
            )
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # ... and the gateway logged the refused handshake (gRPC core writes it to the
    # daemon's stderr, i.e. its log file, unless GRPC_VERBOSITY silences it).
    if os.environ.get("GRPC_VERBOSITY", "").upper() not in ("ERROR", "NONE"):
        log = federation.logs / "gateway.log"
        deadline = time.monotonic() + 5.0
        while "Handshake failed" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the refused handshake is not in the gateway log"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("caller", "target", "method"),
    [
        (INSTITUTION, "platform", "/veil.v1.PlatformService/ListProviders"),
        (INSTITUTION, "tax", "/veil.v1.ProviderService/Describe"),
        ("gateway", "tax", "/veil.v1.ProviderService/Describe"),  # only the platform may
    ],
)
def test_a_peer_of_the_wrong_role_is_refused_and_logged(
    federation: Any, caller: str, target: str, method: str
) -> None:
    node = federation.node(target)
    request = platform_pb2.ListProvidersRequest() if target == "platform" else b""

    async def call() -> Any:
        async with secure_channel(
            node.address, federation.client_tls(caller), PeerIdentity(node.role, node.name)
        ) as channel:
            if target == "platform":
                stub = platform_pb2_grpc.PlatformServiceStub(channel)
                return await stub.ListProviders(request, timeout=5.0)
            return await channel.unary_unary(method)(request, timeout=5.0)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(call())
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # the node logged the refusal, naming the method and the peer's certificate identity
    role = "institution" if caller == INSTITUTION else "gateway"
    expected = f"refused {method} from veil://{role}/{caller}"
    deadline = time.monotonic() + 5.0
    while expected not in (federation.logs / f"{target}.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"the refusal is not in the {target} log"
        time.sleep(0.2)


def test_every_daemon_serves_reflection(federation: Any) -> None:
    async def services(node: Any) -> set[str]:
        async with secure_channel(
            node.address, federation.client_tls(ADMIN), PeerIdentity(node.role, node.name)
        ) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)

            async def requests() -> Any:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            async for response in stub.ServerReflectionInfo(requests(), timeout=5.0):
                return {s.name for s in response.list_services_response.service}
        return set()

    expected = {
        "provider": "veil.v1.ProviderService",
        "platform": "veil.v1.PlatformService",
        "gateway": "veil.v1.GatewayService",
    }
    for node in federation.nodes:
        names = run(services(node))
        assert expected[node.role] in names
        assert "grpc.health.v1.Health" in names


def test_hanging_provider_is_unavailable_within_the_deadline(federation: Any) -> None:
    import os
    import signal

    uscc = first_uscc(federation)
    pid = federation.processes["court"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            run(
                gateway_call(
                    federation, "LookupEnterprise", gateway_pb2.GatewayLookupRequest(uscc=uscc)
                )
            )
        elapsed = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "court" in (info.value.details() or "")
    assert "deadline" in (info.value.details() or "")
    assert elapsed < 9.0  # the platform's 5 s provider deadline, well inside the gateway's 10 s


def test_unreachable_provider_is_unavailable_naming_it(federation: Any) -> None:
    """Runs last in this module: it stops the court provider."""
    uscc = first_uscc(federation)
    proc = federation.processes["court"]
    proc.terminate()
    proc.wait(timeout=20)
    t0 = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(
            gateway_call(
                federation, "LookupEnterprise", gateway_pb2.GatewayLookupRequest(uscc=uscc)
            )
        )
    elapsed = time.monotonic() - t0
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "court" in (info.value.details() or "")
    assert elapsed < 10.0
    assert proc.returncode == 0  # graceful shutdown on SIGTERM


def test_settle_waits_out_a_nodes_background_work(tmp_path: Path) -> None:
    """``Federation.settle`` (what the benchmarks wait on between rows) returns only
    once the nodes are idle, and ``cpu_seconds`` counts what each node used."""
    import subprocess
    import sys

    from veil_cli.federation import Federation

    fed = Federation(tmp_path)
    busy = (
        "import time\n"
        "end = time.process_time() + 1.0\n"
        "while time.process_time() < end: pass\n"
        "time.sleep(30)"
    )
    fed.processes["busy"] = subprocess.Popen([sys.executable, "-c", busy])
    fed.processes["idle"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        waited = run(fed.settle(interval_s=0.25, limit_s=15.0))
        used = fed.cpu_seconds()
        assert used["busy"] >= 0.9  # its second of work was over before settle returned
        assert used["idle"] < 0.5
        assert 0.5 <= waited < 15.0
        assert run(fed.settle(interval_s=0.25)) < 1.0  # already idle: two quiet intervals
    finally:
        for proc in fed.processes.values():
            proc.kill()
            proc.wait()
    assert fed.cpu_seconds() == {}  # exited nodes are skipped


def test_free_ports_are_distinct_free_and_outside_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A federation draws all its nodes' ports at once: two nodes told the same free
    port would both start, and the second would fail to bind (seen in CI)."""
    low, high = federation_module._unassigned_range()
    ports = federation_module.free_ports(40, taken={low})
    assert len(set(ports)) == 40 and low not in ports
    assert all(low <= p <= high for p in ports)
    # a draw that repeats itself (or offers a taken port) still yields distinct ports
    draws = iter([low + 5, low + 5, low + 7, low + 5, low + 9])
    monkeypatch.setattr(federation_module.random, "randint", lambda a, b: next(draws))
    assert federation_module.free_ports(2, taken={low + 7}) == [low + 5, low + 9]
