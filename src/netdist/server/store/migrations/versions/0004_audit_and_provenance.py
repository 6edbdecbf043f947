"""An audit log of state-changing calls; who uploaded each package and job script.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("token_name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("peer", sa.String(200), nullable=False),
        sa.Column("method", sa.String(100), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    with op.batch_alter_table("packages") as batch:
        batch.add_column(sa.Column("uploaded_by", sa.String(100), nullable=False, server_default=""))
    with op.batch_alter_table("handlers") as batch:
        batch.add_column(sa.Column("script_uploaded_by", sa.String(100), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("handlers") as batch:
        batch.drop_column("script_uploaded_by")
    with op.batch_alter_table("packages") as batch:
        batch.drop_column("uploaded_by")
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
