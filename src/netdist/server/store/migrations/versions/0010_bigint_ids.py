"""Job ids and the ids of the rows kept per job are 64-bit on PostgreSQL too.

PostgreSQL's INTEGER stops at 2,147,483,647: at 20,000 jobs a second, a day and
a quarter of work. SQLite's INTEGER is 64-bit already, so nothing changes there.
Rewrites the three tables (a one-time cost on a large store).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WIDENED = {"jobs": ("id",), "job_attempts": ("id", "job_id"), "job_log": ("id", "job_id")}


def upgrade() -> None:
    _retype(sa.BigInteger, "bigint")


def downgrade() -> None:
    _retype(sa.Integer, "integer")


def _retype(type_: type[sa.types.TypeEngine[int]], sequence_type: str) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for table, columns in WIDENED.items():
        for column in columns:
            op.alter_column(table, column, type_=type_, existing_nullable=False)
        sequence = conn.execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar()
        if sequence:
            conn.execute(sa.text(f"ALTER SEQUENCE {sequence} AS {sequence_type}"))
