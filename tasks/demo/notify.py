"""Job change events: after a commit that changed a job, publish its status on Redis.

Each job has a pub/sub channel, ``floodgate:job:{job_id}``. The task layer calls
:func:`notify` once a transaction that changed the job's state or progress has
committed (tasks/demo/fanout.py); it publishes the job's status as committed, the
same JSON ``GET /jobs/{id}`` answers, as one small message. ``GET /jobs/{id}/events``
(api/events.py) relays them to its open streams.

A job nobody follows costs one look (``PUBSUB NUMSUB``) per change, no status read.
A publish is best effort and can never fail the job: any error (Redis down, the
status read failing) is logged at debug level and dropped. A stream that missed an
event is still right at the end: the final state is in the database, and a stream
re-reads the status whenever its subscriber reconnects.
"""
from __future__ import annotations

import json
import logging
import threading

import redis

from config.settings import get_settings

CHANNEL_PREFIX = "floodgate:job:"
#: A publish waits at most this long on Redis: a slow Redis delays a task by at most this.
PUBLISH_TIMEOUT_S = 0.5

log = logging.getLogger(__name__)
_lock = threading.Lock()
_client: redis.Redis | None = None


def channel(job_id: str) -> str:
    return f"{CHANNEL_PREFIX}{job_id}"


def redis_url() -> str | None:
    """The Redis the events go through: the meter's (the Redis broker or result backend)."""
    return get_settings().meter_redis_url


def _redis() -> redis.Redis | None:
    global _client
    if _client is None:
        url = redis_url()
        if url is None:
            return None
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(url, socket_timeout=PUBLISH_TIMEOUT_S,
                                               socket_connect_timeout=PUBLISH_TIMEOUT_S)
    return _client


def notify(job_id: str) -> None:
    """Publish ``job_id``'s committed status on its channel. Never raises."""
    try:
        from tasks.demo.job_status import job_status

        client = _redis()
        if client is None:
            return
        name = channel(job_id)
        # Nobody follows the job (the usual case): no status read, no publish. A stream
        # subscribes before it reads the status (api/events.py), so one that subscribes
        # after this look reads this commit itself: nothing is missed.
        if not client.pubsub_numsub(name)[0][1]:
            return
        client.publish(name, json.dumps(job_status(job_id)))
    except Exception:  # noqa: BLE001 - an event lost must never fail the job
        log.debug("job %s: change event not published", job_id, exc_info=True)
