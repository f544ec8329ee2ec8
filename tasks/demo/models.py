"""The app's tables (SQLAlchemy Core). Times are UTC epoch seconds."""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

NAME_MAX = 64
TEXT_MAX = 1000

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(NAME_MAX), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

# API keys (api/auth.py): a key is shown once, at its creation; only the SHA-256 of its
# secret part is kept. ``id`` is the key's public id (the part before the secret).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

follows = Table(
    "follows",
    metadata,
    Column("follower_id", ForeignKey("users.id"), primary_key=True),
    Column("followee_id", ForeignKey("users.id"), primary_key=True),
    Index("ix_follows_followee", "followee_id", "follower_id"),
)

posts = Table(
    "posts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("author_id", ForeignKey("users.id"), nullable=False),
    Column("text", String(TEXT_MAX), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
)

# The primary key makes delivery idempotent: a redelivered chunk inserts nothing.
timeline_entries = Table(
    "timeline_entries",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("post_id", ForeignKey("posts.id"), primary_key=True),
    Column("created_at", Float, nullable=False),
    Index("ix_timeline_user_time", "user_id", "created_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("post_id", ForeignKey("posts.id"), nullable=True),
    Column("state", String(16), nullable=False),
    Column("chunks_total", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Index("ix_jobs_state_created", "state", "created_at"),
    # For /metrics (api/metrics.py JobsCollector): outcomes and waits of the last minute,
    # each read from its index alone.
    Index("ix_jobs_finished", "finished_at", "state"),
    Index("ix_jobs_started", "started_at", "created_at"),
)

# One row per finished chunk; progress is their count, so a redelivered chunk counts once.
job_chunks = Table(
    "job_chunks",
    metadata,
    Column("job_id", ForeignKey("jobs.id"), primary_key=True),
    Column("chunk_index", Integer, primary_key=True),
    Column("delivered", Integer, nullable=False),
)

aggregates = Table(
    "aggregates",
    metadata,
    Column("window_start", Float, primary_key=True),
    Column("window_end", Float, nullable=False),
    Column("posts", Integer, nullable=False),
    Column("top_hashtags", JSON, nullable=False),
    Column("computed_at", Float, nullable=False),
)
