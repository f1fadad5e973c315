"""C2SP signed notes and tlog-checkpoints: golang.org/x/mod/sumdb/note vectors, C2SP
spec examples, key strings and files, and tamper tests."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.checkpoint import (
    Checkpoint,
    NoteSignature,
    Signer,
    Verifier,
    key_id,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from veil.errors import (
    InvalidArgument,
    InvalidKey,
    InvalidSignature,
    MalformedNote,
    NoteError,
    OriginMismatch,
    UnverifiedNote,
)

# --- golang.org/x/mod/sumdb/note note_test.go vectors (data only) ---------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
SIGNED = TEXT + "\n" + PETER_SIG  # the expected output of Sign in TestSign

# --- C2SP spec examples (signatures by keys the spec does not publish) ----------

C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\n"
    "trafitto da un raggio di sole:\n"
    "\n"
    "ed è subito sera.\n"
    "\n"
    "— quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)

PETER = Verifier.parse(PETER_VKEY)
ENOCH = Verifier.parse(ENOCH_VKEY)


def sig(name: str, b64: str) -> NoteSignature:
    raw = base64.b64decode(b64)
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


# --- keys ------------------------------------------------------------------------


def test_verifier_key_vector() -> None:
    assert PETER.name == "PeterNeumann"
    assert PETER.key_id == 0xC74F20A3
    assert PETER.key_string == PETER_VKEY
    assert ENOCH.key_id == 0xAF0CFE78
    # key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4]
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + PETER.public_key_bytes).digest()
    assert int.from_bytes(digest[:4], "big") == PETER.key_id
    assert key_id("PeterNeumann", b"\x01" + PETER.public_key_bytes) == 0xC74F20A3


def test_signer_key_vector() -> None:
    signer = Signer.parse(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert signer.verifier() == PETER
    assert signer.private_key_string() == PETER_SKEY
    assert PETER_SKEY not in repr(signer) and "AYEKFAL" not in repr(signer)


def manglings(key: str) -> list[str]:
    """Every proper substring and every one-character increment (note_test.go)."""
    out = {key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)}
    out.discard(key)
    out.update(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key)))
    return sorted(out)


def test_mangled_verifier_keys_rejected() -> None:
    accepted = []
    for k in manglings(PETER_VKEY):
        try:
            Verifier.parse(k)
        except InvalidKey:
            continue
        accepted.append(k)
    assert accepted == []
    # Wrong key length / unknown algorithm, each with an adjusted key hash.
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(InvalidKey):
            Verifier.parse(bad)


def test_mangled_signer_keys_rejected() -> None:
    accepted = []
    for k in manglings(PETER_SKEY):
        try:
            Signer.parse(k)
        except InvalidKey:
            continue
        accepted.append(k)
    assert accepted == []


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "nl\n", "nbsp\u00a0x"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(InvalidKey):
        Signer.generate(name)


def test_key_file_round_trip_is_owner_only(tmp_path: Path) -> None:
    signer = Signer.generate("veil.example/log")
    path = tmp_path / "log.key"
    path.write_text("old")
    os.chmod(path, 0o644)
    signer.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Signer.load(path)
    assert loaded.verifier() == signer.verifier()
    assert loaded.private_key_string() == signer.private_key_string()
    assert path.read_text().startswith("PRIVATE+KEY+veil.example/log+")


def test_errors_are_invalid_argument() -> None:
    for cls in (InvalidKey, InvalidSignature, MalformedNote, UnverifiedNote, OriginMismatch):
        assert issubclass(cls, NoteError)
        assert issubclass(cls, InvalidArgument)


# --- signing and opening notes (TestSign, TestOpen) -------------------------------


def test_sign_matches_go_vector() -> None:
    assert sign_note(TEXT, Signer.parse(PETER_SKEY)) == SIGNED.encode()


@pytest.mark.parametrize("text", ["abc", "", "no newline\nat end", "ctl\x01char\n"])
def test_sign_rejects_malformed_text(text: str) -> None:
    with pytest.raises(MalformedNote):
        sign_note(text, Signer.parse(PETER_SKEY))


def test_open_one_verified_one_unknown() -> None:
    note = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [PETER])
    assert note.text == TEXT
    assert note.signatures == (sig("PeterNeumann", PETER_B64),)
    assert note.unverified == (sig("EnochRoot", ENOCH_B64),)


def test_open_both_verified() -> None:
    note = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [PETER, ENOCH])
    assert note.signatures == (sig("PeterNeumann", PETER_B64), sig("EnochRoot", ENOCH_B64))
    assert note.unverified == ()


def test_open_without_known_key_is_unverified() -> None:
    with pytest.raises(UnverifiedNote, match="no verifiable signatures"):
        open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [])


def test_open_duplicated_verifier_is_ambiguous() -> None:
    with pytest.raises(InvalidKey, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), [ENOCH, PETER, ENOCH])


def test_open_unused_duplicated_verifier() -> None:
    open_note((TEXT + "\n" + PETER_SIG).encode(), [ENOCH, PETER, ENOCH])


def test_open_too_many_signatures() -> None:
    with pytest.raises(MalformedNote):
        open_note((TEXT + "\n" + PETER_SIG * 101).encode(), [PETER])
    with pytest.raises(MalformedNote):
        open_note((TEXT + "\n" + PETER_SIG * 101).encode(), [])


def test_open_invalid_signature() -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignature, match="PeterNeumann\\+c74f20a3"):
        open_note((TEXT + "\n" + bad).encode(), [PETER])


def test_open_duplicated_verified_and_unverified() -> None:
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    note = open_note(msg.encode(), [PETER])
    assert note.signatures == (sig("PeterNeumann", PETER_B64),)
    assert note.unverified == (
        sig("EnochRoot", ENOCH_B64),
        sig("EnochRoot", enoch_abcd.split(" ")[2].strip()),
    )


@pytest.mark.parametrize(
    "msg",
    [
        TEXT.encode(),
        (TEXT + "\n").encode(),
        (TEXT + "\n" + PETER_SIG[:-1]).encode(),
        ("\x01" + TEXT + "\n" + PETER_SIG).encode(),
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        (TEXT + "\n— Bad Name " + PETER_B64).encode(),
        (TEXT + "\n" + PETER_SIG + "Unexpected line.\n").encode(),
        (TEXT + "\n— PeterNeumann\n").encode(),
        (TEXT + "\n— PeterNeumann AAAA\n").encode(),  # shorter than key ID + 1 byte
        (TEXT + "\n- PeterNeumann " + PETER_B64 + "\n").encode(),  # hyphen, not em dash
    ],
)
def test_open_malformed(msg: bytes) -> None:
    with pytest.raises(MalformedNote):
        open_note(msg, [PETER])


def test_non_canonical_base64_rejected() -> None:
    # 68 bytes encode with two unused low bits in the last data character; setting
    # one decodes to the same bytes, but is a change to the signed text's envelope.
    last = PETER_B64[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = alphabet[alphabet.index(last) ^ 1]
    mangled = PETER_B64[:-2] + twin + "="
    assert base64.b64decode(mangled) == base64.b64decode(PETER_B64)
    with pytest.raises(MalformedNote):
        open_note((TEXT + "\n— PeterNeumann " + mangled + "\n").encode(), [PETER])


def test_c2sp_signed_note_example_parses() -> None:
    """The spec example's text has a blank line; the last one splits off the
    signatures.  Its key is not published, so it parses but stays unverified."""
    with pytest.raises(UnverifiedNote):
        open_note(C2SP_NOTE.encode(), [PETER])
    signer = Signer.generate("quasimodo.example/salvatore")
    text = C2SP_NOTE[: C2SP_NOTE.rindex("\n\n") + 1]
    assert open_note(sign_note(text, signer), [signer.verifier()]).text == text


# --- tamper tests ------------------------------------------------------------------

SIGNER = Signer.generate("veil.example/tamper")

text_st = st.lists(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=["Cs"]),
        min_size=1,
        max_size=20,
    ),
    min_size=1,
    max_size=4,
).map(lambda lines: "".join(line + "\n" for line in lines))


@settings(max_examples=80, deadline=None)
@given(text=text_st, data=st.data())
def test_any_change_to_a_signed_note_is_rejected(text: str, data: st.DataObject) -> None:
    note = sign_note(text, SIGNER).decode()
    assert open_note(note.encode(), [SIGNER.verifier()]).text == text
    pos = data.draw(st.integers(0, len(note) - 1), label="pos")
    op = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="op")
    ch = data.draw(st.sampled_from(list("aZ09+/= \n—-x")), label="char")
    if op == "replace":
        if note[pos] == ch:
            ch = "Q" if ch != "Q" else "R"
        tampered = note[:pos] + ch + note[pos + 1 :]
    elif op == "delete":
        tampered = note[:pos] + note[pos + 1 :]
    else:
        tampered = note[:pos] + ch + note[pos:]
    assert tampered != note
    with pytest.raises(NoteError):
        open_note(tampered.encode(), [SIGNER.verifier()])


# --- checkpoints -------------------------------------------------------------------


def test_c2sp_checkpoint_example_parses() -> None:
    text = C2SP_CHECKPOINT[: C2SP_CHECKPOINT.rindex("\n\n") + 1]
    cp = Checkpoint.parse(text)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.to_text() == text
    with pytest.raises(UnverifiedNote):  # well-formed, signed by an unknown key
        open_note(C2SP_CHECKPOINT.encode(), [PETER])


def test_checkpoint_sign_and_verify() -> None:
    signer = Signer.generate("veil.example/log")
    cp = Checkpoint("veil.example/log", 8, bytes(range(32)), ("ext one",))
    note = sign_checkpoint(cp, signer)
    assert note.decode().startswith(
        "veil.example/log\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\next one\n"
        "\n— veil.example/log "
    )
    assert verify_checkpoint(note, signer.verifier()) == cp
    other = Signer.generate("veil.example/log")
    with pytest.raises(UnverifiedNote):  # same name, different key id: unknown key
        verify_checkpoint(note, other.verifier())
    with pytest.raises(OriginMismatch):
        verify_checkpoint(note, signer.verifier(), origin="veil.example/other")
    foreign = sign_checkpoint(Checkpoint("elsewhere.example", 8, bytes(32)), signer)
    with pytest.raises(OriginMismatch):
        verify_checkpoint(foreign, signer.verifier())


@pytest.mark.parametrize(
    "text",
    [
        "origin\n8\n",  # fewer than three lines
        "origin\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",  # no final newline
        "\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",  # empty origin
        "origin\n08\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",  # leading zero
        "origin\n-8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "origin\n+8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "origin\n８\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",  # non-ASCII digit
        "origin\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n",  # 31-byte root
        "origin\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\n",  # unpadded
        "origin\n8\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n",  # empty extension
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(MalformedNote):
        Checkpoint.parse(text)


def test_zero_size_checkpoint() -> None:
    cp = Checkpoint("o", 0, hashlib.sha256(b"").digest())
    assert Checkpoint.parse(cp.to_text()) == cp
    assert cp.to_text().split("\n")[1] == "0"


@settings(max_examples=60, deadline=None)
@given(
    origin=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
    ),
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
        max_size=3,
    ),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.to_text()) == cp
    note = sign_checkpoint(cp, SIGNER)
    assert verify_checkpoint(note, SIGNER.verifier(), origin=origin) == cp
