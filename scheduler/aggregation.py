"""Plain aggregation of posts into fixed windows. No Celery here.

The rows are read and written through the demo domain's store
(:mod:`tasks.demo.aggregates`), which the API reads too.
"""
from __future__ import annotations

import re
import time
from collections import Counter

from tasks.demo.aggregates import store_window, texts_between

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
    summary = summarise(texts_between(conn, start, end))
    row = {"window_start": start, "window_end": end, "computed_at": time.time(), **summary}
    store_window(conn, row)
    return row
