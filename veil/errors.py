"""One base error class with specific subclasses, each tied to one gRPC status.

Product code raises these; a single server interceptor (``veil.server``) maps them
to gRPC status codes with rich details (grpcio-status).  Clients map status codes
back with :func:`from_rpc_error`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class VeilError(Exception):
    """Base class of every error Veil raises on purpose.

    ``details`` (string pairs) travel to the client as the metadata of a
    ``google.rpc.ErrorInfo``; ``extra`` are further ``google.rpc`` detail messages
    (e.g. ``QuotaFailure``, ``BadRequest``) packed into the same rich status.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, str] | None = None,
        extra: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, str] = dict(details or {})
        self.extra: tuple[Message, ...] = tuple(extra)


class InvalidArgument(VeilError):
    """The caller sent something malformed; the message names what."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidUSCC(InvalidArgument):
    """A unified social credit code failed a GB 32100-2015 / GB 11714 check."""


class NotFound(VeilError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(VeilError):
    """A peer could not be reached within its deadline; the message names it."""

    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(VeilError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(VeilError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(VeilError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(VeilError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ConfigError(VeilError):
    """A configuration file is malformed; the message names the file and the key.

    The CLI prints it on one line and exits with status 2.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


_BY_CODE: dict[grpc.StatusCode, type[VeilError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unavailable,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        FailedPrecondition,
    )
}


_EXTRA_DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.QuotaFailure,
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
)


def _subclass_by_name(name: str) -> type[VeilError] | None:
    """The VeilError subclass called ``name`` (every subclass, wherever defined)."""
    pending: list[type[VeilError]] = [VeilError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _rich_status(err: grpc.RpcError) -> tuple[str, dict[str, str], list[Message]]:
    """Reason and metadata of the ``ErrorInfo``, and the other known detail messages."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):
        return "", {}, []
    return _status_parts(status)


def _status_parts(status: status_pb2.Status | None) -> tuple[str, dict[str, str], list[Message]]:
    reason: str = ""
    meta: dict[str, str] = {}
    extra: list[Message] = []
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, meta = info.reason, dict(info.metadata)
                continue
            for kind in _EXTRA_DETAIL_TYPES:
                message = kind()
                if detail.Unpack(message):
                    extra.append(message)
                    break
    return reason, meta, extra


def from_status_bytes(data: bytes) -> VeilError:
    """The :class:`VeilError` a serialized ``google.rpc.Status`` stands for (one item's
    refusal in a batched answer; :func:`veil._internal.status.error_status`)."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(data)
    except Exception:  # a peer's bytes: unreadable means a misbehaving peer, not a crash
        return VeilError("an item's error status could not be read")
    try:
        code = grpc.StatusCode[_CODE_NAMES[status.code]]
    except KeyError:
        code = grpc.StatusCode.UNKNOWN
    return _error_of(code, status.message, *_status_parts(status))


def _error_of(
    code: grpc.StatusCode, message: str, reason: str, meta: dict[str, str], extra: list[Message]
) -> VeilError:
    cls = _subclass_by_name(reason) or _BY_CODE.get(code, VeilError)
    if cls.code != code:
        cls = _BY_CODE.get(code, VeilError)
    try:
        out = cls(message or code.name, details=meta, extra=extra)
    except TypeError:  # a subclass with its own constructor (e.g. ConfigError)
        out = _BY_CODE.get(code, VeilError)(message or code.name, details=meta, extra=extra)
    out.code = code
    return out


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def from_rpc_error(err: grpc.RpcError) -> VeilError:
    """Turn a client-side ``grpc.RpcError`` into the matching :class:`VeilError`.

    When the server sent a rich status, the ``ErrorInfo`` reason picks the exact
    subclass (e.g. ``InvalidUSCC`` rather than ``InvalidArgument``), its metadata
    becomes ``details``, and known detail messages (``QuotaFailure``, ``BadRequest`` …)
    become ``extra`` — so a node relaying an error passes them on intact.
    """
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return _error_of(code, details or "", *_rich_status(err))


# --- Transparency log (issue 7): Merkle proofs, signed notes, the log store. ---


class ProofError(InvalidArgument):
    """A Merkle inclusion or consistency proof failed to verify.

    Catch this to treat every verification failure alike; the subclasses say why.
    """


class MalformedProof(ProofError):
    """A proof or its parameters are ill-formed: a hash that is not 32 bytes, an index
    or size out of range, or a proof with the wrong number of hashes for the sizes."""


class RootMismatch(ProofError):
    """A well-formed proof leads to a root other than the one claimed.

    For a consistency proof between two signed checkpoints this is evidence that the
    log rewrote its history or showed different views to different parties.
    """


class MalformedHash(InvalidArgument):
    """A value that must be a 32-byte SHA-256 hash is not."""


class InvalidTreeRange(InvalidArgument):
    """An index or tree size is negative, or sizes are in the wrong order."""


class BeyondTreeSize(NotFound):
    """An index or tree size beyond the log's current size was requested."""


class LeafNotFound(NotFound):
    """No leaf with the given hash exists within the requested tree size."""


class LogInconsistent(FailedPrecondition):
    """The log's stored state is not consistent with a checkpoint it already signed.

    The log refuses to sign: signing would publish a fork.
    """


class NoteError(InvalidArgument):
    """A signed note, key string or checkpoint was rejected."""


class MalformedNote(NoteError):
    """A signed note (or checkpoint body) does not follow its C2SP syntax."""


class InvalidKey(NoteError):
    """A signer or verifier key string is malformed or inconsistent with its key id."""


class InvalidSignature(NoteError):
    """A signature by a known key failed to verify; the whole note is rejected."""


class UnverifiedNote(NoteError):
    """No signature on the note is from a known key, so its text must be ignored."""


class OriginMismatch(NoteError):
    """A validly signed checkpoint names a different log (origin) than expected."""


# --- Tokens and authorization (issue 3): veil.tokens. ---


class TokenError(Unauthenticated):
    """A credential (a JWS token, an enterprise key certificate, a key id) was rejected.

    The caller is not authenticated: UNAUTHENTICATED.  Messages name the token kind and
    the check that failed, never the token itself or any key material.
    """


class InvalidToken(TokenError):
    """A token is malformed or a claim fails a check; the subclasses say which kind."""


class BadSignature(InvalidToken):
    """A signature does not verify with the key its ``kid`` names (forged or altered)."""


class DisallowedAlgorithm(InvalidToken):
    """The header ``alg`` is not EdDSA/ES256, or not the algorithm of the verifying key
    (``none``, HMAC key confusion, RSA)."""


class NotYetValid(InvalidToken):
    """``iat`` (or ``nbf``) lies in the future beyond the clock-skew allowance."""


class LifetimeTooLong(InvalidToken):
    """``exp - iat`` exceeds the maximum lifetime for the token kind."""


class CertificateMismatch(InvalidToken):
    """An enterprise-signed token does not match the EIA key certificate it carries
    (another USCC, another ``kid``)."""


class ExpiredToken(TokenError):
    """A token or an enterprise key certificate is past its ``exp`` (beyond clock skew)."""


class UnknownKey(TokenError):
    """No trusted key has the ``kid`` (or issuer) the token names."""


class WrongAudience(TokenError):
    """The token's ``aud`` is not this verifier."""


class WrongTokenType(TokenError):
    """The header ``typ`` is not the kind expected here (e.g. a grant shown as a client
    assertion): one token kind can never be replayed as another."""


class AuthorizationError(PermissionDenied):
    """Valid credentials, but the request is not allowed: PERMISSION_DENIED."""


class ScopeExceeded(AuthorizationError):
    """The request reaches beyond what the grant allows (fields or use)."""


class RequestFieldsMismatch(ScopeExceeded):
    """The fields asked of a provider are not exactly the fields in the request token."""


class UseNotGranted(ScopeExceeded):
    """The request token's use (fetch / verify / score) is not among the grant's uses."""


class PurposeMismatch(AuthorizationError):
    """The request's purpose or loan reference is not the grant's."""


class GrantNotActive(AuthorizationError):
    """The grant is outside its window (not yet active or expired)."""


class GrantMismatch(AuthorizationError):
    """The request token and the grant disagree on grant id, enterprise or institution."""


class InvalidJWK(InvalidArgument):
    """A JWK or JWKS is malformed, of a disallowed key type, or carries private members."""


class InsecureKeyFile(ConfigError):
    """A private key file is readable or writable by group/others; it is refused."""


# --- Authorization registries (issue 3): platform_node.registry. ---


class Replayed(TokenError):
    """A one-time token id (a client assertion's ``jti``, a request id) was presented again.

    The message names the namespace (``institution:<id>``, ``enterprise:<uscc>``), never
    the token id: a replay attempt must not turn the log into a list of live ``jti``\\ s.
    """


class AlreadyExists(VeilError):
    """An object with this identity (grant id, key id, letter, institution) already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


_BY_CODE[AlreadyExists.code] = AlreadyExists


# --- Crypto compositions (veil.crypto). ---


class MalformedCiphertext(InvalidArgument):
    """A Paillier ciphertext is out of range (≥ n²), zero, not coprime to n, or of the
    wrong length; ``details["reason"]`` names which.  Rejected before any arithmetic."""


class KeyMismatch(InvalidArgument):
    """Ciphertexts, a randomness pool or a private key belong to different public keys."""


class StaleCiphertext(FailedPrecondition):
    """A ciphertext about to leave the process was not re-randomized after its last
    homomorphic operation, so whoever knows its inputs' randomness could test guesses
    of the plaintext.  Call ``veil.crypto.rerandomize`` first."""


class InvalidMaskKey(InvalidArgument):
    """A signed X25519 mask key failed verification (signature, CA, validity, identity)
    or is unusable (wrong length, low-order point); the message names the check."""
