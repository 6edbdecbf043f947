"""Job script dependencies: each handler instance's lock, each worker's platform.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("handlers") as batch:
        batch.add_column(sa.Column("deps_lock_json", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("platform_json", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("platform_json")
    with op.batch_alter_table("handlers") as batch:
        batch.drop_column("deps_lock_json")
