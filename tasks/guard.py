"""The admission policy: each queue's current length bound and Retry-After.

The brokers enforce the bound atomically (see :mod:`tasks.brokers`); this
module decides what the bound is and, on a refusal, when to come back.

Retry-After is a ticket in a virtual waiting line: each refusal is given the
next slot the measured drain rate will free, so refused clients come back
spread out at the pace the queue drains, neither all at once (a retry storm)
nor later than needed (idle workers).
"""
from __future__ import annotations

import functools
import math
import time
from datetime import datetime, timezone

import redis
from prometheus_client import Counter

from config.queues import (
    MAX_LENGTH,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    RETRY_AFTER_UNMEASURED_S,
    WAIT_LIMIT_BOOTSTRAP_LENGTH,
    Limit,
    parse_queue_limits,
    ticket_key,
)
from config.settings import get_settings
from tasks.errors import EtaTooFar, QueueFull
from tasks.meter import drain_rate, held_by_workers, meter_client

ACCEPTED = Counter("floodgate_accepted", "Submissions admitted to a queue", ["queue"])
REFUSED = Counter("floodgate_refused", "Submissions refused because a queue was full", ["queue"])

RATE_CACHE_S = 1.0

_TICKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate = tonumber(ARGV[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
local earliest = now + tonumber(ARGV[1]) / rate
if slot < earliest then slot = earliest end
local horizon = math.max(tonumber(ARGV[4]), tonumber(ARGV[1]) / rate)
local latest = now + math.min(tonumber(ARGV[3]), horizon)
if slot > latest then slot = latest end
redis.call('SET', KEYS[1], tostring(slot + 1 / rate), 'EX', 3600)
return tostring(slot - now)
"""


@functools.cache
def limits() -> dict[str, Limit]:
    return parse_queue_limits(get_settings().queue_limits)


def limit_for(queue: str) -> Limit | None:
    return limits().get(queue)


_rate_cache: dict[str, tuple[float, float | None]] = {}


def cached_drain_rate(queue: str) -> float | None:
    now = time.monotonic()
    hit = _rate_cache.get(queue)
    if hit is None or now - hit[0] > RATE_CACHE_S:
        hit = (now, drain_rate(queue))
        _rate_cache[queue] = hit
    return hit[1]


_held_cache: dict[tuple[str, str], tuple[float, int]] = {}


def room_in_broker(queue: str, broker: str, bound: int) -> int:
    """How many may wait in the broker: the bound less what workers hold prefetched.

    Never below half the bound, so a fleet whose windows exceed the limit still flows.
    """
    now = time.monotonic()
    hit = _held_cache.get((queue, broker))
    if hit is None or now - hit[0] > RATE_CACHE_S:
        hit = (now, held_by_workers(queue, broker))
        _held_cache[(queue, broker)] = hit
    return max(math.ceil(bound / 2), bound - hit[1])


def length_bound(limit: Limit) -> int:
    """The length the queue may reach now: fixed, or wait × measured drain rate."""
    if limit.length is not None:
        return limit.length
    rate = cached_drain_rate(limit.queue)
    if not rate:
        return WAIT_LIMIT_BOOTSTRAP_LENGTH
    return max(1, min(MAX_LENGTH, math.floor(limit.wait_s * rate)))


def retry_after_s(queue: str, depth: int, bound: int) -> int:
    """Seconds until the slot this refused caller can have, from the drain rate."""
    rate = cached_drain_rate(queue)
    client = meter_client()
    if not rate or client is None:  # rate unknown (no recent backlog): look again soon
        return RETRY_AFTER_UNMEASURED_S
    excess = max(1, depth - bound + 1)
    try:
        # The line never reaches past one turnover of the whole queue (bound / rate):
        # by then every slot promised before has come round, so a line left long by
        # an earlier, slower rate falls back instead of holding everyone at the cap.
        wait = float(client.eval(_TICKET, 1, ticket_key(queue), excess, rate, RETRY_AFTER_MAX_S,
                                 max(1, bound) / rate))
    except redis.RedisError:
        wait = excess / rate
    return clamp(wait)


def refuse(queue: str, depth: int, bound: int, wait_s: float | None = None) -> QueueFull:
    """The error for a refusal; ``wait_s``: the ticket, when the broker already drew it."""
    REFUSED.labels(queue).inc()
    after_s = retry_after_s(queue, depth, bound) if wait_s is None else clamp(wait_s)
    return QueueFull(queue=queue, depth=depth, limit=bound, retry_after_s=after_s)


def clamp(wait_s: float) -> int:
    return int(min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(wait_s))))


def admitted(queue: str) -> None:
    ACCEPTED.labels(queue).inc()


def check_eta(queue: str, eta: str | None) -> None:
    """Refuse an ETA the broker would deliver twice.

    Redis redelivers a message unacked past its visibility timeout; RabbitMQ
    closes a channel holding one past its consumer_timeout. Countdowns and ETAs
    are held unacked by the worker, so either limit bounds them.
    """
    if not eta:
        return
    when = datetime.fromisoformat(eta)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delay_s = (when - datetime.now(timezone.utc)).total_seconds()
    bound_s = get_settings().max_countdown_s
    if delay_s >= bound_s:
        raise EtaTooFar(queue, delay_s, bound_s)
