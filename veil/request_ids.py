"""Request ids shared by the platform (which makes them) and providers (which reconcile them).

A score whose provider drops out is re-run with the remaining providers under a new
request id per round, so that no provider's replay store sees one id twice and the
pairwise masks of one round never cancel against another's.  The transparency log
records the request once, under its own id, with the number of rounds in its detail
(``rounds``); a provider maps the round ids in its ledger back to that entry with
:func:`round_ids`.
"""

from __future__ import annotations

MAX_REQUEST_ID_LEN = 64
"""Every store keeps request ids in a 64-character column."""


def rerun_id(request_id: str, attempt: int) -> str:
    """The request id of round ``attempt`` (0: the request's own): ``<id>-r<attempt>``,
    the id cut so that the whole stays within :data:`MAX_REQUEST_ID_LEN` characters."""
    if attempt == 0:
        return request_id
    suffix = f"-r{attempt}"
    return request_id[: MAX_REQUEST_ID_LEN - len(suffix)] + suffix


def round_ids(request_id: str, rounds: int) -> list[str]:
    """The ids of every round of a request that ran ``rounds`` times, in order."""
    return [rerun_id(request_id, k) for k in range(max(rounds, 1))]
