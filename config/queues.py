"""Every queue name, route, limit and meter key, in one place.

A limit is either a length (``fanout=1000``) or a maximum wait
(``fanout=5s``). A wait limit admits while depth / measured drain rate stays
under the wait; its length bound follows the queue's real capacity.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

FANOUT = "fanout"
AGGREGATION = "aggregation"
DEFAULT = "default"
QUEUES = (FANOUT, AGGREGATION, DEFAULT)

#: Routes by task name; anything unlisted goes to ``default``.
ROUTES = {
    "tasks.fanout.fanout_post": FANOUT,
    "tasks.fanout.deliver_chunk": FANOUT,
    "scheduler.tasks.aggregate_closed_window": AGGREGATION,
    "scheduler.tasks.republish_stale_jobs": DEFAULT,
}

#: Prefetch multiplier per queue. Prefetched messages sit in a worker, outside the
#: broker's count, so each worker adds up to its prefetch to the wait the limit
#: promises: bounded short-task queues keep it small, yet deep enough that the worker
#: never waits for the broker (bench/RESULTS.md (e): 4 cost 13 % on RabbitMQ, 8 did
#: not; 64 raised (b)'s p99 wait by ~1.5 s). Long tasks take one at a time. A worker
#: on several queues takes the smallest.
PREFETCH = {FANOUT: 8, AGGREGATION: 1, DEFAULT: 8}

#: (soft, hard) time limits in seconds per task; TASK_TIME_LIMIT_S caps them all.
TIME_LIMITS_S = {
    "tasks.fanout.fanout_post": (60, 90),
    "tasks.fanout.deliver_chunk": (60, 90),
    "scheduler.tasks.aggregate_closed_window": (120, 150),
    "scheduler.tasks.republish_stale_jobs": (60, 90),
}

#: Hard ceiling on any queue, also the RabbitMQ x-max-length of a wait-limited queue.
MAX_LENGTH = 1_000_000
#: Until a drain rate is measured, a wait-limited queue admits this many.
WAIT_LIMIT_BOOTSTRAP_LENGTH = 100
#: Retry-After is clamped to this range.
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60
#: Drain rate is averaged over this many whole seconds in which the queue had a
#: backlog (quiet seconds say how much arrived, not how fast workers can drain)...
DRAIN_WINDOW_S = 5
#: ...found within this look-back; with none, the rate is unknown.
DRAIN_LOOKBACK_S = 60
#: A worker's prefetch window counts against its queue's limit (Redis) while the
#: worker has reported it within this many seconds.
WINDOW_FRESH_S = 3
#: Retry-After while the drain rate is unknown (no backlogged second in the look-back).
RETRY_AFTER_UNMEASURED_S = 5

KEY_PREFIX = "floodgate"


def drained_key(queue: str, epoch_s: int) -> str:
    return f"{KEY_PREFIX}:drained:{queue}:{epoch_s}"


def backlog_key(queue: str, epoch_s: int) -> str:
    return f"{KEY_PREFIX}:backlog:{queue}:{epoch_s}"


def window_key(queue: str, broker: str) -> str:
    """Hash of worker -> "prefetch window|epoch s" for the workers consuming ``queue``."""
    return f"{KEY_PREFIX}:window:{broker}:{queue}"


def ticket_key(queue: str) -> str:
    return f"{KEY_PREFIX}:ticket:{queue}"


def counter_key(queue: str, outcome: str) -> str:
    return f"{KEY_PREFIX}:{outcome}:{queue}"


@dataclass(frozen=True)
class Limit:
    queue: str
    length: int | None = None
    wait_s: float | None = None

    def describe(self) -> str:
        return f"{self.length}" if self.length is not None else f"{self.wait_s:g}s"


_ITEM = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*=\s*(\d+(?:\.\d+)?)(s?)\s*$")


def parse_queue_limits(text: str) -> dict[str, Limit]:
    """Parse ``QUEUE_LIMITS``; unlisted queues keep their default limit."""
    limits = dict(DEFAULT_LIMITS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{item!r} is not queue=length or queue=<seconds>s")
        queue, number, unit = match.groups()
        if queue not in QUEUES:
            raise ValueError(f"names unknown queue {queue!r} (known: {', '.join(QUEUES)})")
        limits[queue] = _limit(queue, float(number), unit == "s")
    return limits


def _limit(queue: str, number: float, is_wait: bool) -> Limit:
    if is_wait:
        if not 0 < number <= 3600:
            raise ValueError(f"wait limit for {queue!r} must be between 0 and 3600 s")
        return Limit(queue, wait_s=number)
    if number != int(number) or not 1 <= number <= MAX_LENGTH:
        raise ValueError(f"length limit for {queue!r} must be a whole number 1..{MAX_LENGTH}")
    return Limit(queue, length=int(number))


DEFAULT_LIMITS = {
    FANOUT: Limit(FANOUT, length=1000),
    AGGREGATION: Limit(AGGREGATION, length=100),
    DEFAULT: Limit(DEFAULT, length=5000),
}
