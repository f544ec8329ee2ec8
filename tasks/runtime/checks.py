"""Start-up checks of a worker: warnings an operator must see, never a veto."""
from __future__ import annotations

import logging

import redis
from celery.signals import worker_ready

log = logging.getLogger("floodgate")


@worker_ready.connect
def warn_about_redis_durability(sender=None, **_):
    """A Redis broker that evicts keys or keeps no AOF can lose accepted messages."""
    if sender is None or not (sender.app.conf.broker_url or "").startswith("redis"):
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
