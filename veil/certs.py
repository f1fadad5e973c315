"""A development PKI: one ECDSA P-256 CA and one leaf certificate per node.

Identity model.  Every node and every client carries exactly one identity, the URI
``veil://<role>/<name>`` in its certificate's subjectAltName.  Servers are also
reachable under the DNS name ``<name>.<role>.veil``, which is what clients pin with
``grpc.ssl_target_name_override`` (:mod:`veil.tls`), so a certificate issued to
``gw1`` as a *provider* can never impersonate the *gateway* ``gw1``.

Server roles (provider, platform, gateway) get serverAuth + clientAuth, because the
daemons also call each other with their own certificate; client roles (institution,
enterprise, auditor, admin) get clientAuth only, so a client certificate cannot be
used to stand up a fake server.

The CA key is the root of trust for a deployment.  This module is meant for
development and test deployments; a production deployment would keep the CA key
offline and only use :func:`issue_node_cert` style issuance on a separate host.
Private keys are written atomically (temporary file + ``os.replace``) with mode
0600 and are never logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.errors import InvalidArgument

log = logging.getLogger(__name__)

SERVER_ROLES = frozenset({"provider", "platform", "gateway"})
CLIENT_ROLES = frozenset({"institution", "enterprise", "auditor", "admin"})
ALL_ROLES = SERVER_ROLES | CLIENT_ROLES

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_VALID_DAYS = 3650
DEFAULT_VALID_DAYS = 825  # the longest lifetime browsers/OSes accept for TLS leaves
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts
_RENEW_BEFORE = dt.timedelta(days=30)  # init_dev_pki re-issues leaves this close to expiry

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class NodePaths:
    """Where one node's TLS material lives (the shape ``TLSConfig`` wants)."""

    ca: Path
    cert: Path
    key: Path


def identity_uri(role: str, name: str) -> str:
    return f"veil://{role}/{name}"


def dns_name(role: str, name: str) -> str:
    return f"{name}.{role}.veil"


def _check_identity(role: str, name: str) -> None:
    if role not in ALL_ROLES:
        raise InvalidArgument(f"unknown role {role!r}; expected one of {sorted(ALL_ROLES)}")
    if not _LABEL.match(name):
        raise InvalidArgument(
            f"node name {name!r} must be a DNS label: lower-case letters, digits and '-', "
            "1-63 characters, not starting or ending with '-'"
        )


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so readers never see a partial or world-readable file.

    The temporary file is created with ``mode`` from the start (``mkstemp`` uses
    0600, then we chmod down to the requested mode before any byte is written), so a
    private key is never on disk with wider permissions, even briefly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{path} is not an EC private key")
    return key


@dataclass(frozen=True)
class _CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path


def _create_ca(ca_dir: Path, ca_name: str, now: dt.datetime) -> _CA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Veil"),
            x509.NameAttribute(NameOID.COMMON_NAME, ca_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first: a cert without its key is useless, a key without its cert is re-made.
    _write_atomic(ca_dir / CA_KEY_FILE, _key_pem(key), 0o600)
    _write_atomic(ca_dir / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("created development CA %r in %s", ca_name, ca_dir)
    return _CA(cert, key, ca_dir / CA_CERT_FILE)


def _load_ca(ca_dir: Path) -> _CA | None:
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = _load_key(key_path)
    if cert.public_key() != key.public_key():
        raise InvalidArgument(f"{cert_path} does not match {key_path}")
    return _CA(cert, key, cert_path)


def _require_ca(ca_dir: Path) -> _CA:
    ca = _load_ca(ca_dir)
    if ca is None:
        raise InvalidArgument(f"no CA in {ca_dir} (expected {CA_CERT_FILE} and {CA_KEY_FILE})")
    return ca


def _leaf(
    ca: _CA, role: str, name: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int
) -> x509.Certificate:
    dns = dns_name(role, name)
    server = role in SERVER_ROLES
    sans: list[x509.GeneralName] = [
        x509.DNSName(dns),
        x509.UniformResourceIdentifier(identity_uri(role, name)),
    ]
    if server:
        sans += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    not_after = min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Veil"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, dns),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


def _issue(
    ca: _CA, out_dir: Path, role: str, name: str, now: dt.datetime, valid_days: int
) -> NodePaths:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(ca, role, name, key, now, valid_days)
    paths = NodePaths(ca=ca.cert_path, cert=out_dir / f"{name}.pem", key=out_dir / f"{name}.key")
    _write_atomic(paths.key, _key_pem(key), 0o600)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("issued certificate for %s (%s)", identity_uri(role, name), paths.cert)
    return paths


def _existing_is_good(ca: _CA, paths: NodePaths, role: str, name: str, now: dt.datetime) -> bool:
    """True if ``paths`` already hold a live certificate for this identity from ``ca``."""
    if not (paths.cert.exists() and paths.key.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = _load_key(paths.key)
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature, InvalidArgument):
        return False
    if cert.public_key() != key.public_key():
        return False
    if cert.not_valid_after_utc - _RENEW_BEFORE < now:
        return False
    return identity_uri(role, name) in cert_identity_uris(cert)


def cert_identity_uris(cert: x509.Certificate) -> list[str]:
    """All ``veil://`` URIs in a certificate's subjectAltName, in order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("veil://")
    ]


def issue_node_cert(
    ca_dir: Path,
    role: str,
    name: str,
    *,
    out_dir: Path | None = None,
    valid_days: int = DEFAULT_VALID_DAYS,
    now: dt.datetime | None = None,
) -> NodePaths:
    """Issue (or re-issue, with a fresh key) one node's certificate from the CA in ``ca_dir``.

    Files go to ``out_dir`` (default: ``ca_dir``) as ``<name>.pem`` / ``<name>.key``;
    names are therefore unique across roles within one directory.
    """
    _check_identity(role, name)
    ca = _require_ca(Path(ca_dir))
    return _issue(ca, Path(out_dir or ca_dir), role, name, _utcnow(now), valid_days)


def init_dev_pki(
    out_dir: Path,
    nodes: Iterable[tuple[str, str]],
    *,
    ca_name: str = "Veil Development CA",
    valid_days: int = DEFAULT_VALID_DAYS,
    now: dt.datetime | None = None,
) -> dict[str, NodePaths]:
    """Create (or complete) a development PKI in ``out_dir``; return paths by node name.

    Idempotent: an existing CA is reused, and an existing node certificate is kept if
    it was issued by that CA for the same identity, matches its key and is not within
    30 days of expiry; otherwise it is re-issued.  Running this in a different
    directory creates an independent CA whose certificates the first CA rejects.
    """
    out_dir = Path(out_dir)
    wanted = list(nodes)
    seen: dict[str, str] = {}
    for role, name in wanted:
        _check_identity(role, name)
        if seen.setdefault(name, role) != role:
            raise InvalidArgument(f"node name {name!r} used for roles {seen[name]!r} and {role!r}")
    if not out_dir.exists():
        out_dir.mkdir(parents=True, mode=0o700)
    when = _utcnow(now)
    ca = _load_ca(out_dir) or _create_ca(out_dir, ca_name, when)
    result: dict[str, NodePaths] = {}
    for role, name in wanted:
        paths = NodePaths(
            ca=ca.cert_path, cert=out_dir / f"{name}.pem", key=out_dir / f"{name}.key"
        )
        if not _existing_is_good(ca, paths, role, name, when):
            paths = _issue(ca, out_dir, role, name, when, valid_days)
        result[name] = paths
    return result
