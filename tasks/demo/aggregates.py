"""The aggregate windows' store: beat's aggregation writes them, the API reads them.

Plain functions on an open SQLAlchemy connection (the caller owns the transaction);
no Celery, no HTTP. A window is a dict with ``window_start``, ``window_end``,
``posts``, ``top_hashtags`` and ``computed_at`` (UTC epoch seconds).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tasks.demo.models import aggregates, posts

RECOMPUTED = ("window_end", "posts", "top_hashtags", "computed_at")


def texts_between(conn, start: float, end: float) -> list[str]:
    """The texts of the posts created in ``[start, end)``."""
    query = select(posts.c.text).where(posts.c.created_at >= start, posts.c.created_at < end)
    return list(conn.execute(query).scalars())


def store_window(conn, window: dict) -> None:
    """Insert one window, or replace the stored one with the same ``window_start``."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(aggregates).values(window)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[aggregates.c.window_start],
        set_={name: stmt.excluded[name] for name in RECOMPUTED},
    ))


def recent_windows(conn, limit: int) -> list[dict]:
    """The ``limit`` newest stored windows, newest first."""
    query = select(aggregates).order_by(aggregates.c.window_start.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]
