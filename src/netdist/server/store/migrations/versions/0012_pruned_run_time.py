"""The run time of jobs retention deleted, kept for the day's max-time-per-client-per-day.

A restarted server rebuilt each worker's run time of the day from the jobs
still stored; with --keep-processed, those retention had deleted were
forgotten and a worker ran past its daily cap. ``pruned_run_time`` keeps
their run time per handler and worker for the current day (rows of earlier
days are deleted as new ones come).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pruned_run_time",
        sa.Column("handler_id", sa.String(32), primary_key=True),
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("day_start", sa.Float, primary_key=True),
        sa.Column("seconds", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pruned_run_time")
