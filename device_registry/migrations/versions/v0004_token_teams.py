"""API tokens with a person's field team (the technician page's default alert filter)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        # Existing tokens have no team: their page starts at all teams, as before.
        batch_op.add_column(sa.Column("team", sa.String(64), nullable=True))


def downgrade() -> None:
    """Revert this migration."""
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("team")
