"""A bounded cache of *signature* verifications of enterprise grants.

Every request a provider serves carries the enterprise's grant, and the same grant comes
back request after request.  Verifying it from scratch means two Ed25519 verifications
(the EIA certificate in header ``eia``, then the grant) plus the JSON and base64 work
around them — more CPU than the provider's whole answer for a small check.

What may be cached, and what may not:

* The signature checks and every structural check are a pure function of the exact token
  bytes and the trusted EIA key set: identical bytes give the identical result.  The key
  is the SHA-256 of the token; a cache belongs to one :class:`~veil.tokens.KeySet` (a
  new key set, e.g. after an EIA key rotation, needs a new cache).  A token that differs
  in any byte misses the cache and is verified from scratch; only successes are kept.
* Everything that depends on the clock is checked again on every call, exactly as
  :func:`~veil.tokens.verify_grant` checks it: the certificate's validity at ``now``
  (``iat``/``nbf``/``exp`` with the clock-skew allowance), the grant's ``iat`` not in the
  future, and the grant window (:class:`~veil.errors.GrantNotActive`).
* State is never cached here: revocation and replay are the caller's stores, consulted on
  every request (:class:`provider_node.guard.Guard` does).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veil.errors import NotYetValid
from veil.tokens import _jws
from veil.tokens.constants import CLOCK_SKEW_S, TYP_EIA_CERT, TYP_GRANT
from veil.tokens.grants import Grant, verify_grant
from veil.tokens.keys import KeySet

__all__ = ["DEFAULT_MAX_ENTRIES", "GrantVerifier"]

DEFAULT_MAX_ENTRIES = 4096


@dataclass(frozen=True)
class _Verified:
    grant: Grant
    cert_times: Mapping[str, Any]  # the certificate's iat / exp (/ nbf): re-checked per call


class GrantVerifier:
    """:func:`~veil.tokens.verify_grant` for one EIA key set, with signatures checked once
    per distinct token (least recently used entries are evicted beyond ``max_entries``).

    Thread-safe.  ``hits`` and ``misses`` count look-ups (for tests and metrics).
    """

    def __init__(self, eia_keys: KeySet, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.eia_keys = eia_keys
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def verify(self, token: str, *, now: float | None = None) -> Grant:
        """The verified grant, valid at ``now``; raises exactly what ``verify_grant`` does."""
        if not isinstance(token, str):
            return verify_grant(token, self.eia_keys, now=now)  # refused with its message
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        if entry is None:
            grant = verify_grant(token, self.eia_keys, now=now)  # full verification
            header = _jws.read_header(token, TYP_GRANT, extra=frozenset({"eia"}))
            cert = _jws.unverified_claims(header["eia"], TYP_EIA_CERT)  # verified just now
            times: dict[str, Any] = {k: cert[k] for k in ("iat", "exp", "nbf", "sub") if k in cert}
            with self._lock:
                self._entries[key] = _Verified(grant, times)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return grant
        self._check_times(entry, _jws.clock(now))
        return entry.grant

    @staticmethod
    def _check_times(entry: _Verified, t: float) -> None:
        """The clock-dependent checks of ``verify_grant``, in its order."""
        times = entry.cert_times
        _jws.check_times(times, TYP_EIA_CERT, t, subject=str(times.get("sub", "")))
        grant = entry.grant
        if grant.issued_at > t + CLOCK_SKEW_S:
            raise NotYetValid(
                f"grant iat is {grant.issued_at - t:.0f} s in the future, beyond the "
                f"{CLOCK_SKEW_S} s allowance"
            )
        grant.check_active(t)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
