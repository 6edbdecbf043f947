"""Long job inputs in a table of their own.

A job's row changes size with its lease and its result, and SQLite then writes
the whole row anew: an input of a megabyte was written to the WAL again with
each. Inputs of INPUT_APART_CHARS or more (store/jobs.py) now go to
``job_inputs``, their row in ``jobs`` holding ``""``. Rows already stored keep
their inputs where they are.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_inputs",
        sa.Column(
            "job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
        ),
        sa.Column("input", sa.Text, nullable=False),
    )


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        sa.text(
            "UPDATE jobs SET input = COALESCE((SELECT input FROM job_inputs WHERE job_id = jobs.id), '')"
            " WHERE input = ''"
        )
    )
    op.drop_table("job_inputs")
