"""API keys (api/auth.py): only the SHA-256 of a key's secret part is kept.

Revision ID: 0002_api_keys
Revises: 0001_initial
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

from tasks.demo.migrations.privileges import grant_app_role

revision = "0002_api_keys"
down_revision = "0001_initial"
branch_labels = None
depends_on = None
#: The tables it makes (adoption: config.migrate.ADOPTABLE).
creates = ("api_keys",)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    grant_app_role()  # last: the app's role gets rows, never the schema


def downgrade() -> None:
    op.drop_table("api_keys")
