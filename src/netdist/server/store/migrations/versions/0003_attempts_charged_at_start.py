"""Attempts are charged when a lease starts (a result, or a lost started lease), not when it is made.

Stores written before this charged every lease at once: their open leases give
their attempt back, to be charged again only if they turn out to have run.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE jobs SET attempts = attempts - 1 WHERE status = 'leased' AND attempts > 0")


def downgrade() -> None:
    op.execute("UPDATE jobs SET attempts = attempts + 1 WHERE status = 'leased'")
