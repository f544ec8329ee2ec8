"""Live per-queue figures for /metrics and the benchmarks: depth, bound, drain, oldest age."""
from __future__ import annotations

import json
import time

from config import app
from config.queues import QUEUES
from tasks import guard
from tasks.signals import SENT_AT_HEADER


def depth(queue: str, celery_app=app) -> int | None:
    """Ready messages, as the broker counts them; None if the broker did not answer."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
            return _ready(conn.default_channel, queue)
    except Exception:  # noqa: BLE001 - an unreachable broker is a reading, not an error
        return None


def _ready(channel, queue: str) -> int:
    if hasattr(channel, "_size"):  # Redis: an empty queue does not "exist"
        return channel._size(queue)
    return channel.queue_declare(queue, passive=True).message_count


class DepthReader:
    """``depth`` over one long-lived connection, for a once-a-second reader (the meter)."""

    def __init__(self, celery_app) -> None:
        self.app, self.conn = celery_app, None

    def __call__(self, queue: str) -> int | None:
        try:
            if self.conn is None:
                self.conn = self.app.connection_for_write()
                self.conn.ensure_connection(max_retries=1, timeout=1)
            return _ready(self.conn.default_channel, queue)
        except Exception:  # noqa: BLE001 - try a fresh connection next time
            self.close()
            return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def oldest_age_s(queue: str) -> float | None:
    """Age of the next message to run; Redis can tell, RabbitMQ cannot without consuming."""
    if not app.conf.broker_url.startswith("redis"):
        return None
    try:
        with app.connection_for_write() as conn:
            client = conn.default_channel.client
            channel = conn.default_channel
            keys = dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps)
            raw = next((m for m in (client.lindex(k, -1) for k in keys) if m), None)
    except Exception:  # noqa: BLE001
        return None
    if raw is None:
        return 0.0
    sent_at = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
    return max(0.0, time.time() - sent_at) if sent_at else None


def queue_stats() -> dict[str, dict]:
    stats = {}
    for queue in QUEUES:
        limit = guard.limit_for(queue)
        stats[queue] = {
            "depth": depth(queue),
            "limit": guard.length_bound(limit),
            "drain_rate": guard.cached_drain_rate(queue),
            "oldest_age_s": oldest_age_s(queue),
        }
    return stats
