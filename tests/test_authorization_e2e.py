"""Enterprise authorization end to end, through the real daemons (issue 3).

Every refusal the issue lists is tried here against running processes: at the gateway
(client assertions), at the platform (grants, purposes, quotas) and — playing a
compromised platform that holds the platform's own TLS certificate and token key — at
a provider, which must answer nothing without a valid enterprise grant.
"""

from __future__ import annotations

import base64
import csv
import json
import time
import uuid
from typing import Any

import grpc
import pytest

from tests.conftest import run
from veil.client_auth import AssertionSigner, assertion_interceptors
from veil.errors import VeilError
from veil.sealed import OneTimeKey, open_answers, recipient_text
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import (
    CLOCK_SKEW_S,
    Grant,
    RequestClaims,
    SigningKey,
    gateway_audience,
    issue_enterprise_certificate,
    issue_request_token,
    make_client_assertion,
    sign_grant,
)
from veil.v1 import authorization_pb2 as apb
from veil.v1 import (
    authorization_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    institution_pb2,
    institution_pb2_grpc,
    provider_pb2,
    provider_pb2_grpc,
)
from veil_cli.authz_setup import enroll_enterprise
from veil_cli.calls import call_platform
from veil_cli.client import load_client_config
from veil_cli.commands.enterprise import make_grant_jws, make_revocation_jws
from veil_cli.federation import INSTITUTION

FIELDS = ("tax_grade", "tax_consecutive_normal_months", "si_in_arrears")
TAX_FIELDS = ("tax_grade", "tax_consecutive_normal_months")
PURPOSE = "loan_origination"
LOAN = "LOAN-E2E-1"
REVOCATION_BOUND_S = 5.0


# --- helpers -------------------------------------------------------------------------


def usccs(fed: Any, n: int) -> list[str]:
    with (fed.data / "labels.csv").open(newline="") as fh:
        return [row["uscc"] for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


def bank(fed: Any) -> AssertionSigner:
    return load_client_config(fed.workdir / "client.toml").require_identity()


async def gateway(
    fed: Any,
    method: str,
    request: Any,
    *,
    signer: AssertionSigner | None = None,
    token: str | None = None,
    cert: str = INSTITUTION,
    service: Any = gateway_pb2_grpc.GatewayServiceStub,
) -> Any:
    """Call the gateway with ``signer``'s fresh assertions, or one fixed ``token``."""
    node = fed.node("gateway")
    interceptors = assertion_interceptors(signer) if signer else []
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with secure_channel(
        node.address,
        fed.client_tls(cert),
        PeerIdentity("gateway", node.name),
        interceptors=interceptors,
    ) as channel:
        return await getattr(service(channel), method)(request, timeout=15.0, metadata=metadata)


BANK_KEY = OneTimeKey()  # the bank's one-time recipient key for these tests


def fetch_request(uscc: str, grant_id: str, fields: tuple[str, ...] = FIELDS, **kw: str) -> Any:
    return gateway_pb2.GatewayFetchAuthorizedRequest(
        uscc=uscc,
        fields=list(fields),
        grant_id=grant_id,
        purpose=kw.get("purpose", PURPOSE),
        loan_ref=kw.get("loan_ref", LOAN),
        recipient_public_key=BANK_KEY.public_bytes,
    )


def opened(answer: Any, uscc: str) -> list[Any]:
    return open_answers(BANK_KEY, answer.sealed, request_id=answer.request_id, uscc=uscc)


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(call)
    return info.value.code(), info.value.details() or ""


def admin_call(fed: Any, method: str, request: Any) -> Any:
    return run(
        call_platform(
            str(fed.workdir / "admin.toml"),
            institution_pb2_grpc.InstitutionRegistryStub,
            method,
            request,
        )
    )


class Enterprise:
    def __init__(self, fed: Any, uscc: str) -> None:
        self.fed = fed
        self.uscc = uscc
        self.config = str(enroll_enterprise(fed, uscc, f"企业{uscc[-4:]}"))
        self.signer = load_client_config(self.config).require_identity()

    def grant(self, fields: tuple[str, ...] = FIELDS, **kw: Any) -> apb.GrantInfo:
        jws = make_grant_jws(
            self.config,
            institution=kw.get("institution", INSTITUTION),
            fields=list(fields),
            uses=kw.get("uses", ["fetch"]),
            purpose=kw.get("purpose", PURPOSE),
            loan_ref=kw.get("loan_ref", LOAN),
            days=kw.get("days", 30),
        )
        return run(
            gateway(
                self.fed,
                "CreateGrant",
                apb.CreateGrantRequest(grant_jws=jws),
                signer=self.signer,
                cert=self.uscc.lower(),
                service=authorization_pb2_grpc.AuthorizationServiceStub,
            )
        )

    def revoke(self, grant_id: str) -> apb.GrantInfo:
        return run(
            gateway(
                self.fed,
                "RevokeGrant",
                apb.RevokeGrantRequest(revocation_jws=make_revocation_jws(self.config, grant_id)),
                signer=self.signer,
                cert=self.uscc.lower(),
                service=authorization_pb2_grpc.AuthorizationServiceStub,
            )
        )

    def call(self, method: str, request: Any) -> Any:
        return run(
            gateway(
                self.fed,
                method,
                request,
                signer=self.signer,
                cert=self.uscc.lower(),
                service=authorization_pb2_grpc.AuthorizationServiceStub,
            )
        )


@pytest.fixture(scope="module")
def ent(federation: Any) -> Enterprise:
    return Enterprise(federation, usccs(federation, 1)[0])


@pytest.fixture(scope="module")
def granted(ent: Enterprise) -> apb.GrantInfo:
    return ent.grant()


# --- the happy path ------------------------------------------------------------------


def test_grant_then_fetch_returns_only_the_granted_fields(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    answer = run(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, granted.grant_id),
            signer=bank(federation),
        )
    )
    datasets = opened(answer, ent.uscc)
    seen = {f for ds in datasets for r in ds.records for f in r.fields}
    assert seen <= set(FIELDS) and seen
    assert {ds.source for ds in datasets} == {"tax", "social_insurance"}
    # what the platform relayed is ciphertext: another key cannot open it
    with pytest.raises(VeilError):
        open_answers(OneTimeKey(), answer.sealed, request_id=answer.request_id, uscc=ent.uscc)
    # nor can a sealed answer be passed off as another request's or provider's
    with pytest.raises(VeilError):
        open_answers(BANK_KEY, answer.sealed, request_id="other-request", uscc=ent.uscc)
    uses = ent.call("ListGrantUses", apb.ListGrantUsesRequest(grant_id=granted.grant_id))
    assert any(u.request_id == answer.request_id and u.outcome == "OK" for u in uses.uses)


def test_provider_ledger_names_institution_and_purpose(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    from provider_node.ledger import Ledger

    answer = run(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, granted.grant_id),
            signer=bank(federation),
        )
    )
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    row = next(e for e in ledger.entries() if e.request_id == answer.request_id)
    assert row.outcome == "answered"
    assert f"institution={INSTITUTION}" in row.detail and f"purpose={PURPOSE}" in row.detail


# --- the gateway: client assertions ----------------------------------------------------


def lookup(fed: Any, uscc: str, **kw: Any) -> Any:
    return gateway(fed, "LookupEnterprise", gateway_pb2.GatewayLookupRequest(uscc=uscc), **kw)


def test_no_assertion_is_unauthenticated(federation: Any) -> None:
    code, why = code_of(lookup(federation, usccs(federation, 1)[0]))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "client assertion" in why


def test_forged_signature_is_refused(federation: Any) -> None:
    real = bank(federation)
    rogue = SigningKey.generate("EdDSA", kid=real.key.kid)  # same kid, another key
    token = make_client_assertion(rogue, issuer=INSTITUTION, audience=gateway_audience("gateway"))
    code, _ = code_of(lookup(federation, usccs(federation, 1)[0], token=token))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_audience_is_refused(federation: Any) -> None:
    token = make_client_assertion(
        bank(federation).key, issuer=INSTITUTION, audience=gateway_audience("other-gateway")
    )
    code, why = code_of(lookup(federation, usccs(federation, 1)[0], token=token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "aud" in why


def test_expired_assertion_is_refused(federation: Any) -> None:
    token = make_client_assertion(
        bank(federation).key,
        issuer=INSTITUTION,
        audience=gateway_audience("gateway"),
        now=time.time() - 600,
    )
    code, why = code_of(lookup(federation, usccs(federation, 1)[0], token=token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in why


def test_clock_skew_beyond_allowance_is_refused_within_is_accepted(federation: Any) -> None:
    key = bank(federation).key
    ahead = make_client_assertion(
        key,
        issuer=INSTITUTION,
        audience=gateway_audience("gateway"),
        now=time.time() + CLOCK_SKEW_S + 30,
    )
    code, _ = code_of(lookup(federation, usccs(federation, 1)[0], token=ahead))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    slightly = make_client_assertion(
        key,
        issuer=INSTITUTION,
        audience=gateway_audience("gateway"),
        now=time.time() + CLOCK_SKEW_S / 3,
    )
    assert run(lookup(federation, usccs(federation, 1)[0], token=slightly)).uscc


def test_replayed_jti_is_refused(federation: Any) -> None:
    token = bank(federation).assertion()
    uscc = usccs(federation, 1)[0]
    assert run(lookup(federation, uscc, token=token)).uscc == uscc
    code, why = code_of(lookup(federation, uscc, token=token))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "replay" in why.lower()


def test_unknown_institution_is_refused(federation: Any) -> None:
    key = SigningKey.generate("EdDSA")
    token = make_client_assertion(key, issuer="nobody-bank", audience=gateway_audience("gateway"))
    code, _ = code_of(lookup(federation, usccs(federation, 1)[0], token=token))
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_assertion_must_match_the_tls_certificate(federation: Any, ent: Enterprise) -> None:
    # the bank's assertion presented over the enterprise's TLS certificate
    code, why = code_of(
        lookup(federation, ent.uscc, signer=bank(federation), cert=ent.uscc.lower())
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "certificate" in why


def test_suspended_institution_is_refused_at_once_and_restored(federation: Any) -> None:
    uscc = usccs(federation, 1)[0]
    admin_call(
        federation,
        "SetInstitutionState",
        institution_pb2.SetInstitutionStateRequest(
            id=INSTITUTION, state=institution_pb2.INSTITUTION_STATE_SUSPENDED, reason="e2e test"
        ),
    )
    try:
        code, why = code_of(lookup(federation, uscc, signer=bank(federation)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "suspended" in why
    finally:
        admin_call(
            federation,
            "SetInstitutionState",
            institution_pb2.SetInstitutionStateRequest(
                id=INSTITUTION, state=institution_pb2.INSTITUTION_STATE_ACTIVE, reason="e2e restore"
            ),
        )
    assert run(lookup(federation, uscc, signer=bank(federation))).uscc == uscc


def test_illegal_institution_transition_is_failed_precondition(federation: Any) -> None:
    with pytest.raises(Exception) as info:
        admin_call(
            federation,
            "SetInstitutionState",
            institution_pb2.SetInstitutionStateRequest(
                id=INSTITUTION, state=institution_pb2.INSTITUTION_STATE_ASSESSED, reason="back"
            ),
        )
    assert "active" in str(info.value) and "assessed" in str(info.value)


# --- the platform: grants, purposes ------------------------------------------------------


def test_scope_wider_than_grant_is_refused(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    wider = (*FIELDS, "hf_avg_monthly_contributors")
    code, why = code_of(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, granted.grant_id, wider),
            signer=bank(federation),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "hf_avg_monthly_contributors" in why


def test_purpose_not_granted_is_refused(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    code, _ = code_of(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, granted.grant_id, purpose="post_loan_monitoring"),
            signer=bank(federation),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, _ = code_of(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, granted.grant_id, loan_ref="OTHER-LOAN"),
            signer=bank(federation),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_verification_only_field_never_leaves(federation: Any, ent: Enterprise) -> None:
    # not even an enterprise can grant fetching a commercial secret
    with pytest.raises(grpc.aio.AioRpcError) as info:
        ent.grant(("tax_vat_paid_last_year",))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grant_for_another_enterprise_is_refused(federation: Any, ent: Enterprise) -> None:
    other = usccs(federation, 2)[1]
    identity = ent.signer
    assert identity.eia_certificate is not None
    now = int(time.time())
    grant = Grant(
        grant_id=str(uuid.uuid4()),
        uscc=other,
        institution=INSTITUTION,
        fields=FIELDS,
        uses=("fetch",),
        purpose=PURPOSE,
        loan_ref=LOAN,
        not_before=now,
        expires=now + 3600,
        issued_at=now,
    )
    # Signing refuses outright (the certificate is for ent.uscc); a grant forced through
    # anyway must be refused by the platform: the signer's certificate names another USCC.
    with pytest.raises(VeilError):
        sign_grant(identity.key, identity.eia_certificate, grant)


# --- revocation -------------------------------------------------------------------------


def test_revocation_is_immediate_at_platform_and_within_bound_at_providers(
    federation: Any, ent: Enterprise
) -> None:
    info = ent.grant(TAX_FIELDS)
    t_fetch = run(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, info.grant_id, TAX_FIELDS),
            signer=bank(federation),
        )
    )
    assert opened(t_fetch, ent.uscc)
    revoked_at = time.monotonic()
    ent.revoke(info.grant_id)
    code, why = code_of(
        gateway(
            federation,
            "FetchAuthorized",
            fetch_request(ent.uscc, info.grant_id, TAX_FIELDS),
            signer=bank(federation),
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in why
    # a (compromised) platform ignoring the revocation: the provider refuses on its own
    deadline = revoked_at + REVOCATION_BOUND_S
    while True:
        code, why = provider_fetch(federation, ent, info.grant_jws, TAX_FIELDS)
        if code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in why:
            break
        assert time.monotonic() < deadline, f"provider still answers: {code} {why}"
        time.sleep(0.25)


# --- a compromised platform calling a provider directly ----------------------------------


def platform_key(fed: Any) -> SigningKey:
    return SigningKey.load(fed.workdir / "keys" / "platform-token.key")


def claims(uscc: str, grant_id: str | None, fields: tuple[str, ...], **kw: Any) -> RequestClaims:
    now = int(kw.get("now", time.time()))
    return RequestClaims(
        provider=kw.get("provider", "tax"),
        uscc=uscc,
        institution=kw.get("institution", INSTITUTION),
        fields=fields,
        use=kw.get("use", "fetch"),
        purpose=kw.get("purpose", PURPOSE),
        loan_ref=LOAN,
        grant_id=grant_id,
        request_id=kw.get("request_id", uuid.uuid4().hex),
        issued_at=now,
        expires=now + kw.get("lifetime", 60),
        recipient=kw.get("recipient", recipient_text(BANK_KEY.public_bytes)),
    )


def unverified_claims(jws: str) -> dict[str, Any]:
    body = jws.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def provider_fetch(
    fed: Any,
    ent: Enterprise,
    grant_jws: str,
    fields: tuple[str, ...],
    *,
    token: str | None = None,
    request_id: str | None = None,
    uscc: str | None = None,
) -> tuple[grpc.StatusCode, str]:
    """Call the tax provider as the platform would: platform certificate and token key."""
    rid = request_id or uuid.uuid4().hex
    # the grant id as written in the grant (unverified: the provider does the verifying)
    grant_id = unverified_claims(grant_jws)["grant_id"] if grant_jws else None
    token = token or issue_request_token(
        platform_key(fed),
        claims(uscc or ent.uscc, grant_id or str(uuid.uuid4()), fields, request_id=rid),
    )
    node = fed.node("tax")

    async def call() -> Any:
        async with secure_channel(
            node.address, fed.client_tls("platform"), PeerIdentity("provider", "tax")
        ) as channel:
            return await provider_pb2_grpc.ProviderServiceStub(channel).FetchAuthorized(
                provider_pb2.ProviderFetchAuthorizedRequest(
                    request_id=rid,
                    uscc=uscc or ent.uscc,
                    fields=list(fields),
                    request_token=token,
                    grant_jws=grant_jws,
                ),
                timeout=10.0,
            )

    try:
        run(call())
    except grpc.aio.AioRpcError as err:
        assert_refusal_recorded(fed, rid, err.details() or "")
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def assert_refusal_recorded(fed: Any, rid: str, why: str) -> None:
    """The tax provider's ledger has the refusal of ``rid`` with its reason (and the
    provider read nothing for it: no newer "answered" entry under that request id)."""
    from provider_node.ledger import Ledger

    ledger = Ledger.open(f"sqlite:///{fed.data / 'tax-ledger.db'}")
    latest = next(e for e in ledger.entries(limit=200) if e.request_id == rid)
    assert latest.outcome == "refused" and latest.detail == why, (latest, why)


@pytest.fixture(scope="module")
def tax_grant(ent: Enterprise) -> apb.GrantInfo:
    return ent.grant(TAX_FIELDS)


def test_compromised_platform_valid_path_works(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    # sanity: the same direct call with everything valid is answered
    assert provider_fetch(federation, ent, tax_grant.grant_jws, TAX_FIELDS)[0] == grpc.StatusCode.OK


def test_compromised_platform_without_grant_gets_nothing(federation: Any, ent: Enterprise) -> None:
    code, _ = provider_fetch(federation, ent, "", TAX_FIELDS)
    assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def test_compromised_platform_forged_grant_gets_nothing(federation: Any, ent: Enterprise) -> None:
    rogue_eia = SigningKey.generate("EdDSA")
    key = SigningKey.generate("EdDSA")
    cert = issue_enterprise_certificate(
        rogue_eia, uscc=ent.uscc, name="x", enterprise_jwk=key.public_jwk()
    )
    now = int(time.time())
    forged = sign_grant(
        key,
        cert,
        Grant(
            grant_id=str(uuid.uuid4()),
            uscc=ent.uscc,
            institution=INSTITUTION,
            fields=TAX_FIELDS,
            uses=("fetch",),
            purpose=PURPOSE,
            loan_ref=LOAN,
            not_before=now,
            expires=now + 3600,
            issued_at=now,
        ),
    )
    code, _ = provider_fetch(federation, ent, forged, TAX_FIELDS)
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_compromised_platform_wider_scope_gets_nothing(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    wider = (*TAX_FIELDS, "tax_in_arrears")
    code, why = provider_fetch(federation, ent, tax_grant.grant_jws, wider)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "tax_in_arrears" in why


def test_compromised_platform_other_enterprise_gets_nothing(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    other = usccs(federation, 2)[1]
    code, _ = provider_fetch(federation, ent, tax_grant.grant_jws, TAX_FIELDS, uscc=other)
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_compromised_platform_replay_gets_nothing(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    rid = uuid.uuid4().hex
    assert (
        provider_fetch(federation, ent, tax_grant.grant_jws, TAX_FIELDS, request_id=rid)[0]
        == grpc.StatusCode.OK
    )
    code, why = provider_fetch(federation, ent, tax_grant.grant_jws, TAX_FIELDS, request_id=rid)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "already" in why


def test_token_for_another_provider_or_forged_or_altered_gets_nothing(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    rid = uuid.uuid4().hex
    for token in (
        # audience: a token made out to the social-insurance provider
        issue_request_token(
            platform_key(federation),
            claims(
                ent.uscc,
                tax_grant.grant_id,
                TAX_FIELDS,
                provider="social_insurance",
                request_id=rid,
            ),
        ),
        # forged: another key under the platform's kid
        issue_request_token(
            SigningKey.generate("EdDSA", kid=platform_key(federation).kid),
            claims(ent.uscc, tax_grant.grant_id, TAX_FIELDS, request_id=rid),
        ),
        # expired
        issue_request_token(
            platform_key(federation),
            claims(ent.uscc, tax_grant.grant_id, TAX_FIELDS, request_id=rid, now=time.time() - 600),
        ),
        # issued beyond the clock-skew allowance in the future
        issue_request_token(
            platform_key(federation),
            claims(
                ent.uscc,
                tax_grant.grant_id,
                TAX_FIELDS,
                request_id=rid,
                now=time.time() + CLOCK_SKEW_S + 60,
            ),
        ),
    ):
        code, _ = provider_fetch(
            federation, ent, tax_grant.grant_jws, TAX_FIELDS, token=token, request_id=rid
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
    good = issue_request_token(
        platform_key(federation), claims(ent.uscc, tax_grant.grant_id, TAX_FIELDS, request_id=rid)
    )
    head, body, sig = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["fields"] = [*TAX_FIELDS, "tax_in_arrears"]
    altered_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    code, _ = provider_fetch(
        federation,
        ent,
        tax_grant.grant_jws,
        (*TAX_FIELDS, "tax_in_arrears"),
        token=f"{head}.{altered_body}.{sig}",
        request_id=rid,
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_compromised_platform_gets_no_verification_only_value_even_under_a_signed_grant(
    federation: Any, ent: Enterprise
) -> None:
    secret = ("tax_vat_paid_last_year",)  # a commercial secret: verification or model only
    # the enterprise really signed a grant naming it (the platform would refuse to store it,
    # but a compromised platform needs only the signed JWS)
    jws = make_grant_jws(
        ent.config,
        institution=INSTITUTION,
        fields=list(secret),
        uses=["fetch"],
        purpose=PURPOSE,
        loan_ref=LOAN,
        days=1,
    )
    code, why = provider_fetch(federation, ent, jws, secret)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "verification-only" in why


def test_provider_refuses_to_fetch_under_a_score_token(federation: Any, ent: Enterprise) -> None:
    """A grant for scoring (and fetching) still yields values only to a 'fetch' token."""
    info = ent.grant(TAX_FIELDS, uses=["fetch", "score"])
    rid = uuid.uuid4().hex
    token = issue_request_token(
        platform_key(federation),
        claims(ent.uscc, info.grant_id, TAX_FIELDS, request_id=rid, use="score"),
    )
    code, why = provider_fetch(
        federation, ent, info.grant_jws, TAX_FIELDS, token=token, request_id=rid
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "fetch" in why


def test_fetch_without_recipient_key_is_refused(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    request = fetch_request(ent.uscc, granted.grant_id)
    request.recipient_public_key = b""
    code, why = code_of(gateway(federation, "FetchAuthorized", request, signer=bank(federation)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "recipient_public_key" in why


def test_provider_refuses_a_token_naming_no_recipient(
    federation: Any, ent: Enterprise, tax_grant: apb.GrantInfo
) -> None:
    rid = uuid.uuid4().hex
    token = issue_request_token(
        platform_key(federation),
        claims(ent.uscc, tax_grant.grant_id, TAX_FIELDS, request_id=rid, recipient=None),
    )
    code, why = provider_fetch(
        federation, ent, tax_grant.grant_jws, TAX_FIELDS, token=token, request_id=rid
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "sealed" in why


def test_refusals_are_in_the_provider_ledger(federation: Any, ent: Enterprise) -> None:
    from provider_node.ledger import Ledger

    rid = uuid.uuid4().hex
    provider_fetch(federation, ent, "", TAX_FIELDS, request_id=rid)
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    row = next(e for e in ledger.entries() if e.request_id == rid)
    assert row.outcome == "refused" and row.detail


# --- the written form: an authorization letter (授权书) confirmed online ---------------


def test_letter_uploaded_by_bank_is_confirmed_by_the_enterprise_grant(
    federation: Any, ent: Enterprise
) -> None:
    import hashlib

    digest = hashlib.sha256(
        b"%PDF-1.7 signed authorization letter " + ent.uscc.encode()
    ).hexdigest()
    letter = run(
        gateway(
            federation,
            "UploadLetter",
            apb.UploadLetterRequest(
                uscc=ent.uscc,
                sha256=digest,
                title="授权书 (loan application)",
                signed_on="2026-11-20",
                purpose=PURPOSE,
                loan_ref=LOAN,
                fields=list(TAX_FIELDS),
            ),
            signer=bank(federation),
            service=authorization_pb2_grpc.AuthorizationServiceStub,
        )
    )
    assert letter.state == "pending" and letter.sha256 == digest
    pending = ent.call("ListLetters", apb.ListLettersRequest())
    assert any(x.sha256 == digest and x.state == "pending" for x in pending.letters)
    jws = make_grant_jws(
        ent.config,
        institution=INSTITUTION,
        fields=list(TAX_FIELDS),
        uses=["fetch"],
        purpose=PURPOSE,
        loan_ref=LOAN,
        days=30,
        letter_sha256=digest,
    )
    info = ent.call("CreateGrant", apb.CreateGrantRequest(grant_jws=jws))
    assert info.letter_sha256 == digest
    after = ent.call("ListLetters", apb.ListLettersRequest())
    confirmed = next(x for x in after.letters if x.sha256 == digest)
    assert confirmed.state == "confirmed" and confirmed.grant_id == info.grant_id


def test_letter_with_malformed_hash_is_invalid_argument(federation: Any, ent: Enterprise) -> None:
    code, why = code_of(
        gateway(
            federation,
            "UploadLetter",
            apb.UploadLetterRequest(
                uscc=ent.uscc,
                sha256="not-a-hash",
                title="t",
                signed_on="2026-11-20",
                purpose=PURPOSE,
                loan_ref=LOAN,
                fields=list(TAX_FIELDS),
            ),
            signer=bank(federation),
            service=authorization_pb2_grpc.AuthorizationServiceStub,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in why


# --- more institutions: ES256 and EdDSA keys, key rotation, daily quotas -----------------


class Bank:
    """Another institution, onboarded through the real admin API with its own keys."""

    def __init__(
        self,
        fed: Any,
        inst_id: str,
        keys: list[SigningKey],
        *,
        quota: int = 100,
        purposes: tuple[str, ...] = (PURPOSE,),
    ) -> None:
        from veil.certs import init_dev_pki

        self.fed, self.id = fed, inst_id
        init_dev_pki(fed.certs, [("institution", inst_id)])
        admin_call(
            fed,
            "RegisterInstitution",
            institution_pb2.RegisterInstitutionRequest(
                id=inst_id,
                name=f"Bank {inst_id}",
                type=institution_pb2.INSTITUTION_TYPE_BANK,
                purposes=list(purposes),
                daily_quota=quota,
                reason="e2e application",
            ),
        )
        for state in (
            institution_pb2.INSTITUTION_STATE_ASSESSED,
            institution_pb2.INSTITUTION_STATE_ACTIVE,
        ):
            admin_call(
                fed,
                "SetInstitutionState",
                institution_pb2.SetInstitutionStateRequest(id=inst_id, state=state, reason="e2e"),
            )
        for key in keys:
            admin_call(
                fed,
                "AddInstitutionKey",
                institution_pb2.AddInstitutionKeyRequest(
                    id=inst_id, jwk_json=json.dumps(key.public_jwk())
                ),
            )

    def token(self, key: SigningKey) -> str:
        return make_client_assertion(key, issuer=self.id, audience=gateway_audience("gateway"))

    def call(self, key: SigningKey, method: str, request: Any, service: Any = None) -> Any:
        return gateway(
            self.fed,
            method,
            request,
            token=self.token(key),
            cert=self.id,
            service=service or gateway_pb2_grpc.GatewayServiceStub,
        )


def test_es256_and_eddsa_keys_are_both_accepted_and_a_removed_kid_is_refused(
    federation: Any, ent: Enterprise, granted: apb.GrantInfo
) -> None:
    from gateway.auth import INSTITUTION_KEYS_TTL_S

    ed, es = SigningKey.generate("EdDSA"), SigningKey.generate("ES256")
    bank2 = Bank(federation, "rotation-bank", [ed, es])
    shown = admin_call(
        federation, "GetInstitution", institution_pb2.GetInstitutionRequest(id=bank2.id)
    )
    published = {k["kid"]: k for k in json.loads(shown.jwks_json)["keys"]}
    assert set(published) == {ed.kid, es.kid}
    assert {published[ed.kid]["crv"], published[es.kid]["crv"]} == {"Ed25519", "P-256"}
    uscc = usccs(federation, 1)[0]
    request = gateway_pb2.GatewayLookupRequest(uscc=uscc)
    for key in (ed, es):
        assert run(bank2.call(key, "LookupEnterprise", request)).uscc == uscc
    # authenticated, but the grant it names was given to another institution
    code, why = code_of(
        bank2.call(es, "FetchAuthorized", fetch_request(ent.uscc, granted.grant_id))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and bank2.id in why
    # rotation: the old key is withdrawn; the new one keeps working, the old one stops
    admin_call(
        federation,
        "RemoveInstitutionKey",
        institution_pb2.RemoveInstitutionKeyRequest(id=bank2.id, kid=ed.kid),
    )
    deadline = time.monotonic() + INSTITUTION_KEYS_TTL_S + 3.0
    while True:
        try:
            run(bank2.call(ed, "LookupEnterprise", request))
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert ed.kid in (err.details() or "")
            break
        assert time.monotonic() < deadline, "a withdrawn key is still accepted"
        time.sleep(0.25)
    assert run(bank2.call(es, "LookupEnterprise", request)).uscc == uscc
    history = admin_call(
        federation, "GetInstitution", institution_pb2.GetInstitutionRequest(id=bank2.id)
    ).history
    assert [(h.to_state, bool(h.decided_by), bool(h.at)) for h in history] == [
        (institution_pb2.INSTITUTION_STATE_APPLIED, True, True),
        (institution_pb2.INSTITUTION_STATE_ASSESSED, True, True),
        (institution_pb2.INSTITUTION_STATE_ACTIVE, True, True),
    ]


def test_assertion_living_longer_than_five_minutes_is_refused(federation: Any) -> None:
    from veil.tokens import MAX_ASSERTION_LIFETIME_S, _jws

    key = bank(federation).key
    now = int(time.time())
    for lifetime, accepted in (
        (MAX_ASSERTION_LIFETIME_S, True),
        (MAX_ASSERTION_LIFETIME_S + 1, False),
    ):
        token = _jws.sign(
            key,
            "veil-client+jwt",
            {
                "iss": INSTITUTION,
                "sub": INSTITUTION,
                "aud": gateway_audience("gateway"),
                "iat": now,
                "exp": now + lifetime,
                "jti": uuid.uuid4().hex,
            },
            {},
        )
        call = lookup(federation, usccs(federation, 1)[0], token=token)
        if accepted:
            assert run(call).uscc
        else:
            code, why = code_of(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED and "lifetime" in why


def test_daily_quota_is_enforced_and_the_refusal_recorded(federation: Any, ent: Enterprise) -> None:
    key = SigningKey.generate("ES256")
    small = Bank(federation, "quota-bank", [key], quota=2)
    info = ent.grant(TAX_FIELDS, institution=small.id)
    service = gateway_pb2_grpc.GatewayServiceStub
    request = fetch_request(ent.uscc, info.grant_id, TAX_FIELDS)
    for _ in range(2):
        assert opened(run(small.call(key, "FetchAuthorized", request, service)), ent.uscc)
    rid = uuid.uuid4().hex
    request.request_id = rid
    code, why = code_of(small.call(key, "FetchAuthorized", request, service))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in why
    uses = ent.call("ListGrantUses", apb.ListGrantUsesRequest(grant_id=info.grant_id)).uses
    assert [u.outcome for u in uses] == ["OK", "OK", "RESOURCE_EXHAUSTED"]
    assert uses[-1].request_id == rid and not uses[-1].providers
    # an administrator raises the quota (recorded with who and why): the next call passes
    raised = institution_pb2.UpdateInstitutionRequest(id=small.id, reason="e2e: more volume")
    raised.daily_quota = 3
    assert admin_call(federation, "UpdateInstitution", raised).daily_quota == 3
    request.request_id = uuid.uuid4().hex
    assert opened(run(small.call(key, "FetchAuthorized", request, service)), ent.uscc)


# --- every refusal is recorded, and nothing is read -------------------------------------


def test_platform_refusals_are_recorded_against_the_grant_and_ask_no_provider(
    federation: Any, ent: Enterprise
) -> None:
    from provider_node.ledger import Ledger

    # a purpose the enterprise granted but the institution was never admitted for
    outside = ent.grant(TAX_FIELDS, purpose="credit_guarantee", loan_ref="LOAN-CG-1")
    info = ent.grant(TAX_FIELDS)
    cases = [
        (outside.grant_id, {"purpose": "credit_guarantee", "loan_ref": "LOAN-CG-1"}, ()),
        (info.grant_id, {"purpose": "post_loan_monitoring"}, ()),  # purpose not granted
        (info.grant_id, {}, (*TAX_FIELDS, "tax_in_arrears")),  # scope wider than the grant
    ]
    rids = []
    for grant_id, kw, fields in cases:
        request = fetch_request(ent.uscc, grant_id, tuple(fields) or TAX_FIELDS, **kw)
        request.request_id = uuid.uuid4().hex
        rids.append(request.request_id)
        code, why = code_of(
            gateway(federation, "FetchAuthorized", request, signer=bank(federation))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED and why
    # revoked
    ent.revoke(info.grant_id)
    request = fetch_request(ent.uscc, info.grant_id, TAX_FIELDS)
    request.request_id = uuid.uuid4().hex
    rids.append(request.request_id)
    code, why = code_of(gateway(federation, "FetchAuthorized", request, signer=bank(federation)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in why
    recorded = {
        u.request_id: u
        for g in (outside.grant_id, info.grant_id)
        for u in ent.call("ListGrantUses", apb.ListGrantUsesRequest(grant_id=g)).uses
    }
    for rid in rids:
        assert recorded[rid].outcome == "PERMISSION_DENIED" and not recorded[rid].providers
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    assert not {e.request_id for e in ledger.entries()} & set(rids)  # no provider was asked


def test_gateway_and_platform_log_each_refusal_with_its_reason(federation: Any) -> None:
    uscc = usccs(federation, 1)[0]
    key = bank(federation).key
    aud = gateway_audience("gateway")
    stranger = f"stranger-{uuid.uuid4().hex[:8]}"
    wrong_aud = f"veil://gateway/elsewhere-{uuid.uuid4().hex[:6]}"
    replayed = bank(federation).assertion()
    run(lookup(federation, uscc, token=replayed))
    attempts = [
        (make_client_assertion(key, issuer=INSTITUTION, audience=wrong_aud), wrong_aud, "gateway"),
        (
            make_client_assertion(SigningKey.generate("EdDSA"), issuer=stranger, audience=aud),
            stranger,
            "gateway",
        ),
        (replayed, "replay", "platform"),
    ]
    for token, _, _ in attempts:
        code, _ = code_of(lookup(federation, uscc, token=token))
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    time.sleep(0.5)  # the daemons write their logs unbuffered; give the OS a moment
    for _, marker, node in attempts:
        lines = (federation.logs / f"{node}.log").read_text(errors="replace").splitlines()
        refused = [line for line in lines if "refused /veil.v1." in line and "WARNING" in line]
        assert any(marker in line.lower() or marker in line for line in refused), (node, marker)
