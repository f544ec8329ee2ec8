"""Live per-queue figures of one app: depth, bound, drain rate, oldest message's age."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TypedDict

from celery_floodgate.transports import GUARD_OPTION
from celery_floodgate.transports.redis import SENT_AT_HEADER

if TYPE_CHECKING:
    from celery import Celery
    from kombu.connection import Connection

    from celery_floodgate.guard import Guard


class QueueStats(TypedDict):
    """One queue's figures in `queue_stats`."""

    #: Messages ready in the broker; None if the broker did not answer.
    depth: int | None
    #: The length the queue may reach now (a wait limit's follows the drain rate).
    limit: int
    #: Messages per second workers take off it; None until measured.
    drain_rate: float | None
    #: Seconds the next message to run has waited (Redis only; None elsewhere).
    oldest_age_s: float | None


def guard_for(app: Celery) -> Guard | None:
    """The guard `celery_floodgate.install` put on ``app``.

    :param app: a Celery app.
    :returns: its `celery_floodgate.Guard` (limits, meter, broker kind),
        or None if ``install()`` was not called on it.
    """
    from celery_floodgate.guard import Guard

    return Guard.registered((app.conf.broker_transport_options or {}).get(GUARD_OPTION))


def depth(app: Celery, queue: str) -> int | None:
    """Ready messages, as the broker counts them; None if the broker did not answer."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=1)
            return ready(conn.default_channel, queue)
    except Exception:  # noqa: BLE001 - an unreachable broker is a reading, not an error
        return None


def ready(channel: Any, queue: str) -> int:
    """Ready messages in ``queue``, read on a kombu channel of any of the brokers."""
    # Redis: the lists' length (an empty queue does not "exist"). SQS: GetQueueAttributes'
    # ApproximateNumberOfMessages, visible messages only, as RabbitMQ's message_count; the
    # SQS guard's own count (in flight included) is in its admission set (transports/sqs.py).
    if hasattr(channel, "_size"):
        return int(channel._size(queue))
    return int(channel.queue_declare(queue, passive=True).message_count)


class DepthReader:
    """``depth`` over one long-lived connection, for a once-a-second reader (the meter)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.conn: Connection | None = None

    def __call__(self, queue: str) -> int | None:
        try:
            conn = self.conn
            if conn is None:
                conn = self.conn = self.app.connection_for_write()
                conn.ensure_connection(max_retries=1, timeout=1)
            return ready(conn.default_channel, queue)
        except Exception:  # noqa: BLE001 - try a fresh connection next time
            self.close()
            return None

    def close(self) -> None:
        """Close the connection, if open; the next reading opens a new one."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def oldest_age_s(app: Celery, queue: str) -> float | None:
    """Age of the next message to run; Redis can tell, RabbitMQ cannot without consuming."""
    guard = guard_for(app)
    if guard is None or guard.broker_kind != "redis":
        return None
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            keys = dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps)
            raw = next((m for m in (channel.client.lindex(k, -1) for k in keys) if m), None)
    except Exception:  # noqa: BLE001
        return None
    if raw is None:
        return 0.0
    sent_at = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
    return max(0.0, time.time() - sent_at) if sent_at else None


def queue_stats(app: Celery) -> dict[str, QueueStats]:
    """Live figures of every limited queue of ``app``, read from the broker and the meter.

    Costs a broker round trip or two per queue: for a status page or a metrics
    scrape, not for each submission.

    :param app: a Celery app.
    :returns: queue name -> its `QueueStats` (``depth``, ``limit``,
        ``drain_rate``, ``oldest_age_s``); empty if ``install()`` was not called.
    """
    guard = guard_for(app)
    if guard is None:
        return {}
    return {
        queue: {
            "depth": depth(app, queue),
            "limit": guard.length_bound(limit),
            "drain_rate": guard.drain_rate(queue),
            "oldest_age_s": oldest_age_s(app, queue),
        }
        for queue, limit in guard.limits.items()
    }
