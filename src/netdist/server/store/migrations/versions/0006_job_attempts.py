"""Job inspection: every attempt that did not end its job, the job script's file name, pruned tallies.

``job_attempts`` holds only the attempts that did not end their job (an error
that was retried, a timeout, a lost worker): a job that succeeds at once
costs no row here; its one attempt is in its ``jobs`` row. ``handlers`` keeps
the uploaded file name of its job script (tracebacks name it) and how many
processed and failed jobs retention deleted (so the counts shown stay right).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("handler_id", sa.String(32), nullable=False),
        sa.Column("lease_no", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("charged", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=False),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("error_type", sa.Text, nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("error_traceback", sa.Text, nullable=False),
    )
    op.create_index("ix_job_attempts_job", "job_attempts", ["job_id", "lease_no"])
    op.create_index("ix_job_attempts_finished_at", "job_attempts", ["finished_at"])
    op.create_index("ix_job_attempts_handler_id", "job_attempts", ["handler_id"])
    with op.batch_alter_table("handlers") as batch:
        batch.add_column(sa.Column("script_filename", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("pruned_processed", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pruned_failed", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("handlers") as batch:
        batch.drop_column("pruned_failed")
        batch.drop_column("pruned_processed")
        batch.drop_column("script_filename")
    op.drop_index("ix_job_attempts_handler_id", "job_attempts")
    op.drop_index("ix_job_attempts_finished_at", "job_attempts")
    op.drop_index("ix_job_attempts_job", "job_attempts")
    op.drop_table("job_attempts")
