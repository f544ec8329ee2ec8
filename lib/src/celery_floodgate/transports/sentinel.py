"""Redis behind Sentinel (``sentinel://h1:26379;sentinel://h2:26379``), guarded.

kombu's `kombu.transport.redis.SentinelChannel` asks the sentinels for the
master of ``broker_transport_options["master_name"]`` and talks to it; this one
adds the guarded push of `.redis`, whose ``admit.lua`` runs on that same
master (through a Sentinel-managed pool, so it follows a failover).
"""
from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.url import url_to_parts
from redis.sentinel import Sentinel

from celery_floodgate.transports.redis import Admission
from celery_floodgate.transports.redis_consume import BatchConsume


class Channel(Admission, BatchConsume, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """kombu's Sentinel channel with the guarded push and the batched consume."""

    def _timed_client(self, timeout_s: float) -> redis.Redis:
        """A client of the master the sentinels name now, with a read timeout.

        Built as kombu builds the channel's own pool (``_sentinel_managed_pool``), apart
        from it, so closing either leaves the other.
        """
        params: dict[str, Any] = {**self._connparams(), "socket_timeout": timeout_s}
        host, port = params.pop("host", None), params.pop("port", None)
        sentinels = [(u.hostname, u.port or self.connection.default_port)
                     for u in map(url_to_parts, self.connection.client.alt)
                     if u.scheme == "sentinel"] or [(host, port)]
        manager = Sentinel(sentinels, min_other_sentinels=getattr(self, "min_other_sentinels", 0),
                           sentinel_kwargs=getattr(self, "sentinel_kwargs", None), **params)
        credentials = {k: params[k] for k in ("username", "password") if k in params}
        client: redis.Redis = manager.master_for(self.master_name, redis.Redis, **credentials)
        return client


class Transport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """sentinel:// (kombu's SentinelTransport), guarded: install() sets it."""

    Channel = Channel
