"""device types' influx tag keys, API token expiry

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("device_types", schema=None) as batch_op:
        # Existing types promote no tag: what InfluxDB receives does not change on upgrade.
        batch_op.add_column(
            sa.Column("influx_tag_keys", sa.JSON(), nullable=False, server_default="[]")
        )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("device_types", schema=None) as batch_op:
        batch_op.drop_column("influx_tag_keys")
