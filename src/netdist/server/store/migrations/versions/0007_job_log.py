"""Central job logs: what jobs log through ctx.log, kept per lease.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("handler_id", sa.String(32), nullable=False),
        sa.Column("lease_no", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("dropped", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_job_log_job", "job_log", ["job_id", "lease_no", "id"])
    op.create_index("ix_job_log_handler_id", "job_log", ["handler_id"])


def downgrade() -> None:
    op.drop_index("ix_job_log_handler_id", table_name="job_log")
    op.drop_index("ix_job_log_job", table_name="job_log")
    op.drop_table("job_log")
