"""veil.crypto.masks: HKDF mask vectors, cancellation, secure sums, signed mask keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.certs import NodePaths, init_dev_pki
from veil.crypto import (
    MaskKey,
    SignedMaskKey,
    centred,
    combine,
    mask_contribution,
    my_mask,
    pairwise_mask,
    sign_mask_key,
    verify_mask_key,
)
from veil.errors import ConfigError, InsecureKeyFile, InvalidArgument, InvalidMaskKey
from veil.tls import PeerIdentity

SK_A = bytes(range(32))
SK_B = bytes(range(32, 64))
REQUEST_ID = "req-0001"
CONTEXT = "score/v1"
MODULUS = 2**255 - 19
# Pinned: HKDF-SHA256(X25519(SK_A, pub(SK_B)), salt=SHA-256("veil-mask-salt-v1\0" ‖ REQUEST_ID),
#                     info="veil-mask-v1|score/v1|alpha|beta", 48 bytes) mod 2^255 − 19.
MASK_VECTOR = 0x12A611417EE44928C1269555A7E1776E2847A3CA89471A3934142A563490173E

# A 2048-bit odd modulus standing in for a Paillier n (masks only need a modulus).
N_2048 = 2**2048 - 1942289


def fixed_key(raw: bytes) -> MaskKey:
    return MaskKey(x25519.X25519PrivateKey.from_private_bytes(raw))


def test_hkdf_mask_vector() -> None:
    a, b = fixed_key(SK_A), fixed_key(SK_B)
    # Independent derivation straight from `cryptography`.
    priv_a = x25519.X25519PrivateKey.from_private_bytes(SK_A)
    pub_b = x25519.X25519PrivateKey.from_private_bytes(SK_B).public_key()
    shared = priv_a.exchange(pub_b)
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=(255 + 128 + 7) // 8,
        salt=hashlib.sha256(b"veil-mask-salt-v1\x00" + REQUEST_ID.encode()).digest(),
        info=b"veil-mask-v1|score/v1|alpha|beta",
    ).derive(shared)
    expected = int.from_bytes(okm, "big") % MODULUS
    assert expected == MASK_VECTOR
    got_a = pairwise_mask(
        a,
        "alpha",
        b.public_bytes(),
        "beta",
        request_id=REQUEST_ID,
        context=CONTEXT,
        modulus=MODULUS,
    )
    got_b = pairwise_mask(
        b,
        "beta",
        a.public_bytes(),
        "alpha",
        request_id=REQUEST_ID,
        context=CONTEXT,
        modulus=MODULUS,
    )
    assert got_a == got_b == MASK_VECTOR


def test_mask_depends_on_request_context_and_modulus() -> None:
    a, b = fixed_key(SK_A), fixed_key(SK_B)

    def m(rid: str | bytes = REQUEST_ID, ctx: str = CONTEXT, mod: int = MODULUS) -> int:
        return pairwise_mask(
            a, "alpha", b.public_bytes(), "beta", request_id=rid, context=ctx, modulus=mod
        )

    values = {m(), m(rid="req-0002"), m(ctx="verify/v1"), m(mod=N_2048)}
    assert len(values) == 4
    # HMAC zero-pads short keys: a raw salt would make these two ids share masks.
    assert m(rid=b"req-0001\x00") != m()
    assert m(rid=b"x" * 100) != m(rid=hashlib.sha256(b"x" * 100).digest())
    assert m(rid=REQUEST_ID.encode()) == m()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_id": ""}, "request_id"),
        ({"modulus": 1}, "modulus"),
    ],
)
def test_mask_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    a, b = fixed_key(SK_A), fixed_key(SK_B)
    args: dict[str, object] = {"request_id": REQUEST_ID, "context": CONTEXT, "modulus": MODULUS}
    args.update(kwargs)
    with pytest.raises(InvalidArgument, match=match):
        pairwise_mask(a, "alpha", b.public_bytes(), "beta", **args)  # type: ignore[arg-type]


def test_mask_bad_peers() -> None:
    a, b = fixed_key(SK_A), fixed_key(SK_B)
    kw = {"request_id": REQUEST_ID, "context": CONTEXT, "modulus": MODULUS}
    with pytest.raises(InvalidArgument, match="itself"):
        pairwise_mask(a, "alpha", b.public_bytes(), "alpha", **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="'\\|'"):
        pairwise_mask(a, "al|pha", b.public_bytes(), "beta", **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidMaskKey, match="32"):
        pairwise_mask(a, "alpha", b"\x01" * 31, "beta", **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidMaskKey, match="low-order"):
        pairwise_mask(a, "alpha", bytes(32), "beta", **kw)  # type: ignore[arg-type]
    with pytest.raises(InvalidMaskKey, match="not mine"):
        my_mask(a, "alpha", {"alpha": b.public_bytes()}, **kw)  # type: ignore[arg-type]


# --- cancellation and secure sums -------------------------------------------------------


def roster(count: int) -> tuple[list[str], dict[str, MaskKey], dict[str, bytes]]:
    names = [f"p{i:02d}" for i in range(count)]
    keys = {name: MaskKey.generate() for name in names}
    return names, keys, {name: k.public_bytes() for name, k in keys.items()}


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=8),
    modulus=st.one_of(st.just(N_2048), st.integers(min_value=2, max_value=2**300)),
    request_id=st.text(min_size=1, max_size=20),
)
def test_masks_sum_to_zero(count: int, modulus: int, request_id: str) -> None:
    names, keys, publics = roster(count)
    masks = [
        my_mask(keys[n], n, publics, request_id=request_id, context="sum", modulus=modulus)
        for n in names
    ]
    assert sum(masks) % modulus == 0
    assert all(0 <= m < modulus for m in masks)
    if count >= 2 and modulus > 2**64:
        assert len(set(masks)) == count  # the masks themselves are not trivial


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.integers(min_value=-(2**1000), max_value=2**1000), min_size=2, max_size=8)
)
def test_secure_sum_recovers_exact_sum(values: list[int]) -> None:
    names, keys, publics = roster(len(values))
    contributions = [
        mask_contribution(
            v,
            my_mask(keys[n], n, publics, request_id="r1", context="sum", modulus=N_2048),
            N_2048,
        )
        for n, v in zip(names, values, strict=True)
    ]
    assert centred(combine(contributions, N_2048), N_2048) == sum(values)


def test_missing_participant_does_not_cancel() -> None:
    names, keys, publics = roster(4)
    contributions = [
        mask_contribution(
            1, my_mask(keys[n], n, publics, request_id="r", context="c", modulus=N_2048), N_2048
        )
        for n in names
    ]
    assert combine(contributions, N_2048) == 4
    assert combine(contributions[:3], N_2048) != 3  # a drop-out gives garbage, never a sum


# --- key files --------------------------------------------------------------------------


def test_mask_key_file_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = MaskKey.generate()
    path = tmp_path / "mask.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = MaskKey.load(path)
    assert loaded.public_bytes() == key.public_bytes()
    logging.getLogger("test").info("key=%s %r", key, loaded)
    raw = key._private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = path.read_text()
    body = "".join(pem.splitlines()[1:-1])
    for text in (repr(key), str(key), caplog.text):
        assert raw.hex() not in text and body not in text
    assert key.key_id in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(ConfigError, match="already exists"):
        key.save(path)
    path.chmod(0o640)
    with pytest.raises(InsecureKeyFile):
        MaskKey.load(path)


def test_mask_key_file_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "not-x25519.key"
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="X25519"):
        MaskKey.load(path)


# --- signed mask keys -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodePaths]:
    return init_dev_pki(
        tmp_path_factory.mktemp("pki"),
        [("provider", "tax"), ("provider", "hf"), ("platform", "plat")],
    )


def test_signed_mask_key_round_trip(pki: dict[str, NodePaths]) -> None:
    key = MaskKey.generate()
    tax = pki["tax"]
    signed = sign_mask_key(key, tax.key, tax.cert.read_bytes())
    ca = tax.ca.read_bytes()
    assert verify_mask_key(signed, ca, PeerIdentity("provider", "tax")) == key.public_bytes()
    again = SignedMaskKey.from_bytes(signed.to_bytes())
    assert again == signed
    assert verify_mask_key(again, ca.decode(), PeerIdentity("provider", "tax"))


def test_signed_mask_key_checks(pki: dict[str, NodePaths]) -> None:
    key = MaskKey.generate()
    tax = pki["tax"]
    signed = sign_mask_key(key, tax.key, tax.cert.read_bytes())
    ca = tax.ca.read_bytes()
    who = PeerIdentity("provider", "tax")

    def check(s: SignedMaskKey, expected: PeerIdentity, name: str, **kw: object) -> None:
        with pytest.raises(InvalidMaskKey) as err:
            verify_mask_key(s, ca, expected, **kw)  # type: ignore[arg-type]
        assert err.value.details["check"] == name

    check(signed, PeerIdentity("provider", "hf"), "identity")
    check(signed, who, "validity", now=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    check(signed, who, "validity", now=dt.datetime(2000, 1, 1))
    flipped = bytearray(signed.signature)
    flipped[-1] ^= 1
    check(SignedMaskKey(signed.public_key, bytes(flipped), signed.cert_pem), who, "signature")
    check(SignedMaskKey(b"\x00" * 32, signed.signature, signed.cert_pem), who, "signature")
    check(SignedMaskKey(signed.public_key, signed.signature, b"junk"), who, "certificate")
    check(SignedMaskKey(signed.public_key, signed.signature, ca), who, "basic_constraints")
    with pytest.raises(InvalidMaskKey, match="malformed"):
        SignedMaskKey.from_bytes(signed.to_bytes()[:-1])
    with pytest.raises(InvalidArgument, match="does not match"):
        sign_mask_key(key, pki["hf"].key, tax.cert.read_bytes())
