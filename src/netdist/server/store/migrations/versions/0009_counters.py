"""Counters: job ids are reserved in blocks by the server, never handed out twice.

A new job's lease may now reach a worker before the job's own commit; a server
killed in between leaves that lease naming an id the store never held. The
server takes ids from blocks committed in ``counters`` (``next_job_id``), so a
later job never gets that id. The counter starts past every job id the store
has seen: in jobs, in the attempt history and job logs (which outlive a pruned
job), and on PostgreSQL the id sequence.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    seen = [conn.execute(sa.text(f"SELECT MAX(job_id) FROM {table}")).scalar() for table in ("job_attempts", "job_log")]
    seen.append(conn.execute(sa.text("SELECT MAX(id) FROM jobs")).scalar())
    if conn.dialect.name == "postgresql":
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence('jobs', 'id')")).scalar()
        if sequence:
            called, last = conn.execute(sa.text(f"SELECT is_called, last_value FROM {sequence}")).one()
            seen.append(last if called else last - 1)
    op.bulk_insert(counters, [{"name": "next_job_id", "value": max((int(n) for n in seen if n), default=0) + 1}])


def downgrade() -> None:
    op.drop_table("counters")
