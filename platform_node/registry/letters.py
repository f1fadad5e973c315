"""Written authorization letters (授权书): uploaded by an institution, confirmed by a grant.

The platform never stores the document, only its SHA-256 and the metadata the institution
declares (title, signing date, purpose, loan reference, fields).  The enterprise confirms
the letter online by signing a grant whose ``letter_sha256`` is that hash; the grant must
then agree with the letter: same institution and enterprise, same purpose and loan
reference, and no field the letter does not name.  A confirmation that said more than the
written letter would not be a confirmation of it.

States: ``pending`` (uploaded) → ``confirmed`` (by exactly one grant).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update

from platform_node.registry.schema import letters
from veil.errors import FailedPrecondition
from veil.tokens import Grant

__all__ = ["Letter", "confirm_letter", "letter_from_row"]


@dataclass(frozen=True)
class Letter:
    institution: str
    uscc: str
    sha256: str
    title: str
    signed_on: dt.date
    purpose: str
    loan_ref: str
    fields: tuple[str, ...]
    state: str
    uploaded_at: dt.datetime
    confirmed_at: dt.datetime | None
    grant_id: str | None


def letter_from_row(row: Row[Any]) -> Letter:
    return Letter(
        institution=row.institution_id,
        uscc=row.uscc,
        sha256=row.sha256,
        title=row.title,
        signed_on=row.signed_on,
        purpose=row.purpose,
        loan_ref=row.loan_ref,
        fields=tuple(row.fields),
        state=row.state,
        uploaded_at=row.uploaded_at,
        confirmed_at=row.confirmed_at,
        grant_id=row.grant_id,
    )


def _mismatch(letter: Row[Any], grant: Grant) -> Sequence[str]:
    problems = []
    if grant.purpose != letter.purpose:
        problems.append(f"purpose {grant.purpose!r} is not the letter's {letter.purpose!r}")
    if grant.loan_ref != letter.loan_ref:
        problems.append(f"loan_ref {grant.loan_ref!r} is not the letter's {letter.loan_ref!r}")
    extra = sorted(set(grant.fields) - set(letter.fields))
    if extra:
        problems.append(f"fields not in the letter: {', '.join(extra)}")
    return problems


def confirm_letter(conn: Connection, grant: Grant, at: dt.datetime) -> None:
    """Mark the pending letter ``grant.letter_sha256`` of (institution, enterprise) confirmed.

    :class:`~veil.errors.FailedPrecondition` when there is no such pending letter or the
    grant disagrees with it; the caller's transaction is then rolled back whole.
    """
    assert grant.letter_sha256 is not None
    key = (
        (letters.c.institution_id == grant.institution)
        & (letters.c.uscc == grant.uscc)
        & (letters.c.sha256 == grant.letter_sha256)
    )
    row = conn.execute(select(letters).where(key).with_for_update(key_share=True)).first()
    if row is None:
        raise FailedPrecondition(
            f"grant {grant.grant_id} confirms letter {grant.letter_sha256[:16]}…, but institution "
            f"{grant.institution!r} uploaded no such letter for enterprise {grant.uscc}"
        )
    if row.state != "pending":
        raise FailedPrecondition(
            f"letter {grant.letter_sha256[:16]}… is already {row.state} (by grant {row.grant_id})"
        )
    problems = _mismatch(row, grant)
    if problems:
        raise FailedPrecondition(
            f"grant {grant.grant_id} does not match letter {grant.letter_sha256[:16]}…: "
            + "; ".join(problems)
        )
    conn.execute(
        update(letters)
        .where(letters.c.id == row.id)
        .values(state="confirmed", confirmed_at=at, grant_id=grant.grant_id)
    )
