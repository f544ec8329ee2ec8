"""The tables as they were before migrations (made by ``metadata.create_all`` until then).

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

from tasks.demo.migrations.privileges import grant_app_role

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None
#: The tables it makes: a database made by create_all before migrations is adopted at the
#: last revision of config.migrate.ADOPTABLE whose tables it holds.
creates = ("users", "follows", "posts", "timeline_entries", "jobs", "job_chunks",
           "aggregates")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "follows",
        sa.Column("follower_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("followee_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    )
    op.create_index("ix_follows_followee", "follows", ["followee_id", "follower_id"])
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("text", sa.String(1000), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_posts_created_at", "posts", ["created_at"])
    op.create_table(
        "timeline_entries",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id"), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_timeline_user_time", "timeline_entries", ["user_id", "created_at"])
    _create_jobs()
    op.create_table(
        "job_chunks",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("chunk_index", sa.Integer, primary_key=True),
        sa.Column("delivered", sa.Integer, nullable=False),
    )
    op.create_table(
        "aggregates",
        sa.Column("window_start", sa.Float, primary_key=True),
        sa.Column("window_end", sa.Float, nullable=False),
        sa.Column("posts", sa.Integer, nullable=False),
        sa.Column("top_hashtags", sa.JSON, nullable=False),
        sa.Column("computed_at", sa.Float, nullable=False),
    )
    grant_app_role()  # last: the app's role gets rows, never the schema


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("post_id", sa.Integer, sa.ForeignKey("posts.id"), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("chunks_total", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
    )
    op.create_index("ix_jobs_state_created", "jobs", ["state", "created_at"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at", "state"])
    op.create_index("ix_jobs_started", "jobs", ["started_at", "created_at"])


def downgrade() -> None:
    for table in ("aggregates", "job_chunks", "jobs", "timeline_entries", "posts", "follows",
                  "users"):
        op.drop_table(table)  # their indexes go with them
