"""The shared server bootstrap: role checks, error mapping, health, reflection, shutdown.

Every test runs a real grpc.aio server on 127.0.0.1 (port 0) with real certificates.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Collection, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from veil.certs import NodePaths, init_dev_pki
from veil.config import TLSConfig
from veil.errors import (
    InvalidArgument,
    InvalidUSCC,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from veil.server import (
    ServiceBinding,
    call_with_deadline,
    connect,
    create_server,
    current_peer,
    require_peer,
    run_daemon,
    wait_healthy,
)
from veil.tls import PeerIdentity, secure_channel

T = TypeVar("T")
Ctx = grpc.aio.ServicerContext[Any, Any]
SERVICE = "veil.test.Echo"
GW = PeerIdentity("gateway", "gw1")
REPO = Path(__file__).resolve().parents[1]

NODES = [
    ("gateway", "gw1"),
    ("provider", "prov1"),
    ("institution", "bank1"),
    ("institution", "bank2"),
    ("auditor", "aud1"),
    ("admin", "adm1"),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def tls_of(p: NodePaths) -> TLSConfig:
    return TLSConfig(ca=p.ca, cert=p.cert, key=p.key)


def who() -> str:
    peer = current_peer.get()
    return peer.uri if peer else "-"


# --------------------------------------------------------------------------- the test service


async def say(request: bytes, context: Ctx) -> bytes:
    if request == b"notfound":
        raise NotFound("enterprise X", details={"uscc": "91350100M000100Y43"})
    if request == b"uscc":
        raise InvalidUSCC("统一社会信用代码校验位错误")
    if request == b"quota":
        violation = error_details_pb2.QuotaFailure.Violation(subject="bank1", description="3/day")
        raise ResourceExhausted(
            "daily quota used up", extra=[error_details_pb2.QuotaFailure(violations=[violation])]
        )
    if request == b"boom":
        raise RuntimeError("secret /var/lib/veil/keys/paillier.key is unreadable")
    if request == b"abort":
        await context.abort(grpc.StatusCode.ABORTED, "handler chose this")
    if request == b"admin":
        return f"admin ok {require_peer(context, roles={'admin'})}".encode()
    if request.startswith(b"sleep:"):
        await asyncio.sleep(float(request[6:]))
    return request + b" from " + who().encode()


async def count(request: bytes, context: Ctx) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield f"{i}:{who()}".encode()
    raise InvalidArgument("stream ended badly")


async def write(request: bytes, context: Ctx) -> None:
    """A coroutine streaming handler (context.write style, like health Watch)."""
    await context.write(who().encode())
    await context.write(request)


async def total(requests: AsyncIterator[bytes], context: Ctx) -> bytes:
    n = 0
    async for item in requests:
        n += len(item)
    return f"{n} from {who()}".encode()


async def chat(requests: AsyncIterator[bytes], context: Ctx) -> AsyncIterator[bytes]:
    async for item in requests:
        yield item.upper() + b" " + who().encode()


ECHO = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Write": grpc.unary_stream_rpc_method_handler(write),
        "Total": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    },
)
BINDING = ServiceBinding(SERVICE, lambda s: s.add_generic_rpc_handlers((ECHO,)))


@asynccontextmanager
async def serving(
    tls: TLSConfig, allowed: Collection[str] | None = ("institution",)
) -> AsyncIterator[int]:
    server, port, _health = await create_server(
        "127.0.0.1:0", tls, [BINDING], allowed_roles=allowed
    )
    try:
        yield port
    finally:
        await server.stop(None)


@asynccontextmanager
async def channel_to(port: int, tls: TLSConfig) -> AsyncIterator[grpc.aio.Channel]:
    async with secure_channel(f"127.0.0.1:{port}", tls, GW) as channel:
        yield channel


def method(channel: grpc.aio.Channel, name: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{name}", None, None)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodePaths]:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), NODES)


@pytest.fixture(scope="module")
def anonymous(pki: dict[str, NodePaths], tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    """A client certificate from the right CA that carries no veil:// identity."""
    ca_dir = pki["gw1"].ca.parent
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("nobody.veil")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    out = tmp_path_factory.mktemp("anon")
    (out / "anon.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "anon.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TLSConfig(ca=ca_dir / "ca.pem", cert=out / "anon.pem", key=out / "anon.key")


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "server sent no rich status"
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    return info


# --------------------------------------------------------------------------- peer roles


@pytest.mark.parametrize(("choice", "package"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_a_daemon_runs_on_the_event_loop_its_node_names(choice: str, package: str) -> None:
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run_daemon(main(), event_loop=choice)
    assert seen == [package]


def test_allowed_role_succeeds_and_handler_sees_identity(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with (
            serving(tls_of(pki["gw1"])) as port,
            channel_to(port, tls_of(pki["bank1"])) as ch,
        ):
            assert await method(ch, "Say")(b"hi", timeout=5) == b"hi from veil://institution/bank1"

    run(main())


def test_disallowed_role_is_permission_denied(
    pki: dict[str, NodePaths], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> grpc.RpcError:
        async with serving(tls_of(pki["gw1"])) as port, channel_to(port, tls_of(pki["aud1"])) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"hi", timeout=5)
            return err.value

    with caplog.at_level("WARNING", logger="veil.server"):
        err = run(main())
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "veil://auditor/aud1" in (err.details() or "")
    assert error_info(err).reason == "PermissionDenied"
    assert isinstance(from_rpc_error(err), PermissionDenied)
    refusals = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("veil://auditor/aud1" in m and f"/{SERVICE}/Say" in m for m in refusals)


def test_no_identity_is_unauthenticated_but_may_check_health(
    pki: dict[str, NodePaths], anonymous: TLSConfig
) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port, channel_to(port, anonymous) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"hi", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(from_rpc_error(err.value), Unauthenticated)
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    run(main())


def test_require_peer_finer_roles(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"]), allowed=("institution", "admin")) as port:
            async with channel_to(port, tls_of(pki["adm1"])) as ch:
                assert await method(ch, "Say")(b"admin", timeout=5) == b"admin ok veil://admin/adm1"
            async with channel_to(port, tls_of(pki["bank1"])) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await method(ch, "Say")(b"admin", timeout=5)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    run(main())


def test_any_role_when_allowed_roles_is_none(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with (
            serving(tls_of(pki["gw1"]), allowed=None) as port,
            channel_to(port, tls_of(pki["aud1"])) as ch,
        ):
            assert await method(ch, "Say")(b"x", timeout=5) == b"x from veil://auditor/aud1"

    run(main())


def test_concurrent_calls_see_their_own_peer(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with (
            serving(tls_of(pki["gw1"])) as port,
            channel_to(port, tls_of(pki["bank1"])) as a,
            channel_to(port, tls_of(pki["bank2"])) as b,
        ):
            replies = await asyncio.gather(
                *(method(ch, "Say")(b"sleep:0.2", timeout=5) for ch in (a, b, a, b))
            )
            assert [r.split(b" from ")[1] for r in replies] == [
                b"veil://institution/bank1",
                b"veil://institution/bank2",
            ] * 2

    run(main())


# --------------------------------------------------------------------------- health, reflection


def test_health_and_reflection(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port, channel_to(port, tls_of(pki["aud1"])) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            call = refl.ServerReflectionInfo(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="grpc.health.v1.Health"
                        ),
                    ]
                ),
                timeout=5,
            )
            responses = [r async for r in call]
            names = {s.name for s in responses[0].list_services_response.service}
            assert names == {
                SERVICE,
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            assert responses[1].file_descriptor_response.file_descriptor_proto

    run(main())


def test_wait_healthy(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port:
            await wait_healthy(f"127.0.0.1:{port}", tls_of(pki["bank1"]), GW, 5)
            with pytest.raises(Unavailable, match="veil://gateway/other"):
                # The right server, the wrong expected identity: never healthy.
                await wait_healthy(
                    f"127.0.0.1:{port}", tls_of(pki["bank1"]), PeerIdentity("gateway", "other"), 0.5
                )

    run(main())


# --------------------------------------------------------------------------- error mapping


def test_veil_error_maps_to_status_with_error_info(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with (
            serving(tls_of(pki["gw1"])) as port,
            channel_to(port, tls_of(pki["bank1"])) as ch,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"notfound", timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert err.value.details() == "enterprise X"
            info = error_info(err.value)
            assert (info.reason, info.domain) == ("NotFound", "veil.v1")
            assert dict(info.metadata) == {"uscc": "91350100M000100Y43"}
            back = from_rpc_error(err.value)
            assert isinstance(back, NotFound)
            assert back.details == {"uscc": "91350100M000100Y43"}

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"uscc", timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "统一社会信用代码校验位错误"
            assert isinstance(from_rpc_error(err.value), InvalidUSCC)

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"quota", timeout=5)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
            assert status is not None
            quota = error_details_pb2.QuotaFailure()
            assert status.details[1].Unpack(quota)
            assert quota.violations[0].subject == "bank1"

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"abort", timeout=5)
            assert err.value.code() == grpc.StatusCode.ABORTED
            assert err.value.details() == "handler chose this"

    run(main())


def test_unexpected_exception_is_opaque_internal(
    pki: dict[str, NodePaths], caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> grpc.RpcError:
        async with (
            serving(tls_of(pki["gw1"])) as port,
            channel_to(port, tls_of(pki["bank1"])) as ch,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"boom", timeout=5)
            return err.value

    with caplog.at_level("ERROR", logger="veil.server"):
        err = run(main())
    assert err.code() == grpc.StatusCode.INTERNAL
    assert err.details() == "internal error"
    assert "secret" not in repr(err.trailing_metadata())
    assert error_info(err).reason == "Internal"
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret" in str(logged[0].exc_info[1])  # type: ignore[index]


def test_streaming_kinds_see_peer_and_map_errors(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with (
            serving(tls_of(pki["gw1"])) as port,
            channel_to(port, tls_of(pki["bank1"])) as ch,
        ):
            me = "veil://institution/bank1"
            call = ch.unary_stream(f"/{SERVICE}/Count", None, None)(b"2", timeout=5)
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for item in call:
                    got.append(item)
            assert got == [f"0:{me}".encode(), f"1:{me}".encode()]
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(err.value).reason == "InvalidArgument"

            written = [
                m async for m in ch.unary_stream(f"/{SERVICE}/Write", None, None)(b"x", timeout=5)
            ]
            assert written == [me.encode(), b"x"]

            reply = await ch.stream_unary(f"/{SERVICE}/Total", None, None)(
                iter([b"ab", b"cde"]), timeout=5
            )
            assert reply == f"5 from {me}".encode()

            chat = ch.stream_stream(f"/{SERVICE}/Chat", None, None)(iter([b"a", b"b"]), timeout=5)
            assert [m async for m in chat] == [f"A {me}".encode(), f"B {me}".encode()]

    run(main())


def test_role_check_applies_to_streams(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port, channel_to(port, tls_of(pki["aud1"])) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                [
                    m
                    async for m in ch.stream_stream(f"/{SERVICE}/Chat", None, None)(
                        iter([b"a"]), timeout=5
                    )
                ]
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    run(main())


# --------------------------------------------------------------------------- deadlines, binding


def test_deadlines(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port:
            address = f"127.0.0.1:{port}"
            async with connect(address, tls_of(pki["bank1"]), GW, timeout_s=0.3) as ch:
                start = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await method(ch, "Say")(b"sleep:3")  # no timeout given: the default applies
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert time.monotonic() - start < 2
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [
                        m
                        async for m in ch.stream_stream(f"/{SERVICE}/Chat", None, None)(
                            slow_requests()
                        )
                    ]
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                # An explicit timeout wins over the default.
                assert await method(ch, "Say")(b"sleep:0.5", timeout=5) == (
                    b"sleep:0.5 from veil://institution/bank1"
                )
            async with secure_channel(address, tls_of(pki["bank1"]), GW) as ch:
                with pytest.raises(Unavailable, match=r"gw1 unreachable within 0\.2s"):
                    await call_with_deadline(
                        method(ch, "Say"), b"sleep:3", peer="gw1", timeout_s=0.2
                    )
                with pytest.raises(NotFound, match="enterprise X"):
                    await call_with_deadline(method(ch, "Say"), b"notfound", peer="gw1")

    async def slow_requests() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(3)

    run(main())


def test_port_in_use_fails(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        async with serving(tls_of(pki["gw1"])) as port:
            with pytest.raises(Unavailable, match=str(port)):
                await create_server(
                    f"127.0.0.1:{port}", tls_of(pki["gw1"]), [BINDING], allowed_roles=None
                )

    run(main())


def test_insecure_server_has_no_identity(pki: dict[str, NodePaths]) -> None:
    insecure = TLSConfig(insecure=True)

    async def main() -> None:
        async with serving(insecure) as port, channel_to(port, insecure) as ch:
            assert await method(ch, "Say")(b"hi", timeout=5) == b"hi from -"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(ch, "Say")(b"admin", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    run(main())


# --------------------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_drains_in_flight_call(pki: dict[str, NodePaths]) -> None:
    async def main() -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "tests" / "_slow_server.py"),
            str(pki["gw1"].ca.parent),
            "gw1",
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.startswith(b"PORT "), line
            address = f"127.0.0.1:{int(line.split()[1])}"
            async with secure_channel(address, tls_of(pki["bank1"]), GW) as ch:
                watch = health_pb2_grpc.HealthStub(ch).Watch(
                    health_pb2.HealthCheckRequest(service="veil.test.Slow"), timeout=10
                )
                first = await watch.read()
                assert first.status == health_pb2.HealthCheckResponse.SERVING
                slow = asyncio.ensure_future(
                    ch.unary_unary("/veil.test.Slow/Slow", None, None)(b"x", timeout=10)
                )
                assert await asyncio.wait_for(proc.stdout.readline(), 5) == b"STARTED\n"
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                after = await asyncio.wait_for(watch.read(), 5)
                assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING
                watch.cancel()  # a watcher must not hold the drain open
                assert await slow == b"done:x"
            rc = await asyncio.wait_for(proc.wait(), 10)
            assert rc == 0
            assert await proc.stdout.read() == b"STOPPED\n"
            # Drained when the call finished, not after the 5 s grace period.
            assert time.monotonic() - started < 4
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(main())
