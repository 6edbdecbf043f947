"""Initial schema: packages, handlers, jobs, workers, handler log.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("wheel_json", sa.Text, nullable=False),
        sa.Column("dependencies_json", sa.Text, nullable=False),
        sa.Column("handlers_json", sa.Text, nullable=False),
        sa.Column("uploaded_at", sa.Float, nullable=False),
        sa.Column("current", sa.Boolean, nullable=False),
    )
    op.create_table(
        "handlers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("package", sa.String(200), nullable=False),
        sa.Column("handler", sa.String(200), nullable=False),
        sa.Column("job_name", sa.String(400), nullable=False),
        sa.Column("script_sha256", sa.String(64), nullable=False),
        sa.Column("script_source", sa.Text, nullable=False),
        sa.Column("settings_json", sa.Text, nullable=False),
        sa.Column("custom_json", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("handler_state_json", sa.Text, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("total", sa.Integer, nullable=True),
        sa.Column("exhausted", sa.Boolean, nullable=False),
        sa.Column("sequenced_errors", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_handlers_key", "handlers", ["package", "handler", "job_name"], unique=True)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("handler_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("extra", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_no", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=True),
        sa.Column("leased_at", sa.Float, nullable=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error_json", sa.Text, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_jobs_handler_status", "jobs", ["handler_id", "status", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("labels_json", sa.Text, nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False),
        sa.Column("connected_since", sa.Float, nullable=True),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("jobs_done", sa.Integer, nullable=False),
        sa.Column("jobs_failed", sa.Integer, nullable=False),
    )
    op.create_table(
        "handler_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("handler_id", sa.String(32), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("handler_log", "workers", "jobs", "handlers", "packages"):
        op.drop_table(table)
