"""Revocations are kept by grant, the platform's number only a position in its list.

Before, the platform's sequence number was the key: after the platform's database was
restored from a backup its numbers named other revocations, which a provider could not
keep.  Rows are copied as they are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "uscc, grant_id, seq, revocation_jws, received_at"


def upgrade() -> None:
    op.rename_table("veil_provider_revocations", "veil_provider_revocations_0001")
    if op.get_bind().dialect.name == "postgresql":  # the old key's index keeps its name
        op.execute(
            "ALTER TABLE veil_provider_revocations_0001 RENAME CONSTRAINT "
            "veil_provider_revocations_pkey TO veil_provider_revocations_0001_pkey"
        )
    op.create_table(
        "veil_provider_revocations",
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("revocation_jws", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uscc", "grant_id"),
    )
    op.create_index(
        "ix_veil_provider_revocations_seq", "veil_provider_revocations", ["seq"], unique=False
    )
    op.execute(
        f"INSERT INTO veil_provider_revocations ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM veil_provider_revocations_0001"
    )
    op.drop_table("veil_provider_revocations_0001")


def downgrade() -> None:
    op.drop_index("ix_veil_provider_revocations_seq", table_name="veil_provider_revocations")
    op.rename_table("veil_provider_revocations", "veil_provider_revocations_0002")
    op.create_table(
        "veil_provider_revocations",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("revocation_jws", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="veil_provider_revocations_0001_pkey"),
    )
    op.execute(
        f"INSERT INTO veil_provider_revocations ({COLUMNS}) "
        f"SELECT {COLUMNS} FROM veil_provider_revocations_0002 WHERE seq > 0"
    )
    op.drop_table("veil_provider_revocations_0002")
