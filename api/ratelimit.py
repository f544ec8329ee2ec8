"""Per-client rate limits for the requests that create rows (``limits``, in Redis).

The counters live in the meter's Redis, so every API process shares them: a client
spreading requests over processes or hosts meets one limit. ``limits`` has no token
bucket; its sliding-window counter gives the same bound (at most N per period, no
burst above it) in two keys per client. Without a Redis (a memory:// broker, unit
tests) the counters are per process.

A Redis that cannot be reached refuses the request (503): the limit is what keeps
these requests cheap, so it is not skipped.
"""
from __future__ import annotations

import functools
import ipaddress
import math
import time

import redis
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter

from config.queues import KEY_PREFIX
from config.settings import get_settings
from tasks.demo.errors import DependencyDown, RateLimited

REDIS_TIMEOUT_S = 1.0


@functools.cache
def _limiter() -> SlidingWindowCounterRateLimiter:
    return SlidingWindowCounterRateLimiter(_storage())


def _storage() -> Storage:
    url = get_settings().meter_redis_url
    if url is None:
        return MemoryStorage()
    client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                  socket_connect_timeout=REDIS_TIMEOUT_S)
    # The pool carries the URL's password and database; "redis://" only picks the class.
    return RedisStorage("redis://", connection_pool=client.connection_pool,
                        key_prefix=f"{KEY_PREFIX}:ratelimit", wrap_exceptions=True)


@functools.cache
def _item(rate: str) -> RateLimitItem:
    return parse(rate)


def hit(what: str, rate: str, client: str) -> None:
    """Count one request of ``what`` by ``client``; RateLimited when over ``rate``."""
    item = _item(rate)
    try:
        if _limiter().hit(item, what, client):
            return
        reset_s, _ = _limiter().get_window_stats(item, what, client)
    except (StorageError, redis.RedisError):
        raise DependencyDown("the rate limiter's store (Redis)") from None
    raise RateLimited(what, rate, max(1, math.ceil(reset_s - time.time())))


def client_address(host: str | None) -> str:
    """The address a client is counted under: an IPv6 client by its /64, which one
    subscriber usually holds whole (an address each request would dodge any limit)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network((ip, 64), strict=False))
    return str(ip)


def signups(host: str | None) -> None:
    hit("accounts created", get_settings().rate_limit_signups, client_address(host))


def follows(user_id: int, host: str | None) -> None:
    """Per user, and per address over all its accounts (accounts are cheap to make)."""
    hit("follow changes", get_settings().rate_limit_follows, str(user_id))
    hit("follow changes", get_settings().rate_limit_follows_per_address,
        f"address:{client_address(host)}")


def new_keys(user_id: int) -> None:
    hit("API keys created", get_settings().rate_limit_keys, str(user_id))
