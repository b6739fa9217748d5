"""API tokens scoped to one gateway (the gateway role)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        # Existing tokens are people's: no gateway scope, what they may do does not change.
        batch_op.add_column(sa.Column("gateway_id", sa.String(64), nullable=True))


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("gateway_id")
