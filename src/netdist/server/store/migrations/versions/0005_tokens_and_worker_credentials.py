"""Authenticated roles: bearer tokens (only their hashes), and each worker's own credential.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("sha256"),
    )
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("credential_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("credential_confirmed", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("credential_confirmed")
        batch.drop_column("credential_sha256")
    op.drop_table("tokens")
