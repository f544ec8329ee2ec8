"""Plain aggregation of posts into fixed windows. No Celery here."""
from __future__ import annotations

import re
import time
from collections import Counter

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from tasks.demo.models import aggregates, posts

HASHTAG = re.compile(r"#\w+")
TOP_N = 10


def closed_windows(now: float, interval_s: int, count: int = 2) -> list[tuple[float, float]]:
    """The last ``count`` windows that have fully closed, oldest first.

    Recomputing the previous window too picks up a post whose transaction
    committed just after its window was first aggregated.
    """
    end = (now // interval_s) * interval_s
    return [(end - k * interval_s, end - (k - 1) * interval_s) for k in range(count, 0, -1)]


def summarise(texts: list[str]) -> dict:
    tags = Counter(tag.lower() for text in texts for tag in HASHTAG.findall(text))
    top = sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]
    return {"posts": len(texts), "top_hashtags": [[tag, n] for tag, n in top]}


def aggregate_window(conn, start: float, end: float) -> dict:
    """Compute and store one window; recomputing it gives the same row."""
    query = select(posts.c.text).where(posts.c.created_at >= start, posts.c.created_at < end)
    summary = summarise(list(conn.execute(query).scalars()))
    row = {"window_start": start, "window_end": end, "computed_at": time.time(), **summary}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(aggregates).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[aggregates.c.window_start],
            set_={k: stmt.excluded[k] for k in ("window_end", "posts", "top_hashtags", "computed_at")},
        )
    )
    return row


def recent_windows(conn, limit: int) -> list[dict]:
    query = select(aggregates).order_by(aggregates.c.window_start.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]
