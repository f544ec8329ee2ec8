"""Observers wired to Celery signals. None of them can veto anything."""
from __future__ import annotations

import logging
import time

import redis
from celery.signals import before_task_publish, task_received, worker_process_init, worker_ready

from tasks.db import reset_engine
from tasks.meter import COUNTER

SENT_AT_HEADER = "fg_sent_at"
log = logging.getLogger("floodgate")


@before_task_publish.connect
def stamp_sent_at(headers=None, **_):
    """Record when a message was published, for wait-to-start and oldest-age figures."""
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())


@task_received.connect
def count_drained(request=None, **_):
    queue = (request.delivery_info or {}).get("routing_key") if request else None
    if queue:
        COUNTER.add(queue)


@worker_process_init.connect
def fresh_engine(**_):
    """A forked pool child must not share its parent's database connections."""
    reset_engine()


@worker_ready.connect
def watch_backlog(sender=None, **_):
    """Let the meter tell backlogged seconds of this worker's queues from quiet ones,
    and report how many messages this worker may hold prefetched."""
    from config.queues import QUEUES
    from tasks.meter import broker_id
    from tasks.queue_stats import DepthReader

    if sender is None:
        return
    consumed = sender.app.amqp.queues.consume_from or {}
    window = getattr(getattr(sender, "qos", None), "value", None) or sender.initial_prefetch_count
    COUNTER.watch([q for q in QUEUES if q in consumed], DepthReader(sender.app),
                  worker=sender.hostname, broker=broker_id(sender.connection), window=window)


@worker_ready.connect
def warn_about_redis_durability(sender=None, **_):
    """A Redis broker that evicts keys or keeps no AOF can lose accepted messages."""
    if sender is None or not sender.app.conf.broker_url.startswith("redis"):
        return
    try:
        with sender.app.connection_for_write() as conn:
            client = conn.default_channel.client
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
            aof = client.config_get("appendonly").get("appendonly")
    except redis.RedisError:  # CONFIG may be disabled on managed Redis
        return
    if policy != "noeviction":
        log.warning("Redis broker maxmemory-policy is %r: eviction can delete queued messages "
                    "and kombu's own keys; set it to noeviction", policy)
    if aof != "yes":
        log.warning("Redis broker runs without AOF (appendonly %s): a restart loses every queued "
                    "message; run it with --appendonly yes --appendfsync everysec", aof)
