"""The admission policy of one app: each queue's length bound and Retry-After.

The brokers enforce the bound atomically (see `.transports`); a
`Guard` decides what the bound is and, on a refusal, when to come back.

Retry-After is a ticket in a virtual waiting line: each refusal is given the
next slot the measured drain rate will free, so refused clients come back
spread out at the pace the queue drains, neither all at once (a retry storm)
nor later than needed (idle workers).
"""
from __future__ import annotations

import itertools
import math
import time
import weakref
from datetime import datetime, timezone
from typing import Any

import redis

from celery_floodgate.errors import EtaTooFar, QueueFull
from celery_floodgate.limits import (
    MAX_LENGTH,
    RATE_CACHE_S,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    RETRY_AFTER_UNMEASURED_S,
    WAIT_LIMIT_BOOTSTRAP_LENGTH,
    Limit,
)
from celery_floodgate import metrics, submits
from celery_floodgate.memo import RefusalMemo
from celery_floodgate.meter import Meter
from celery_floodgate.transports import LuaScript

TICKET = LuaScript("line.lua", "ticket.lua")

# Weak: a guard lives as long as the app it is attached to (attach()), no longer.
_registry: "weakref.WeakValueDictionary[str, Guard]" = weakref.WeakValueDictionary()
_ids = itertools.count(1)
ATTRIBUTE = "_floodgate_guard"


class Guard:
    """Limits, meter and caches of one app; found by transports through `registered`.

    The process-wide registry holds guards weakly: the app holds its guard
    (`attach`), so a guard, its signal receivers and its threads go when its
    app is garbage-collected.
    """

    def __init__(self, limits: dict[str, Limit], meter: Meter, broker_kind: str,
                 publish_timeout_s: float = 1.0, max_countdown_s: float | None = None) -> None:
        self.limits, self.meter, self.broker_kind = limits, meter, broker_kind
        self.publish_timeout_s, self.max_countdown_s = publish_timeout_s, max_countdown_s
        self.id = f"guard-{next(_ids)}"
        self._rates: dict[str, tuple[float, float | None]] = {}
        self._held: dict[tuple[str, str], tuple[float, int]] = {}
        self.memo = RefusalMemo()
        self._counters: dict[tuple[str, str], Any] = {}
        self.receivers: object | None = None  # worker.connect's: connected weakly, held here
        _registry[self.id] = self

    @staticmethod
    def registered(guard_id: str | None) -> "Guard | None":
        """The guard of that id, while the app it is attached to lives."""
        return _registry.get(guard_id) if guard_id else None

    def attach(self, app: Any) -> None:
        """Be kept alive by ``app`` (and by nothing global), and start this process's
        submit-count flush now, so the app's first submission does not pay for it."""
        setattr(app, ATTRIBUTE, self)
        submits.counter(self.meter).start()

    def limit_for(self, queue: str) -> Limit | None:
        """``queue``'s limit, or None if the guard does not bound it."""
        return self.limits.get(queue)

    def drain_rate(self, queue: str) -> float | None:
        """The meter's rate, read at most once a second per process."""
        now = time.monotonic()
        hit = self._rates.get(queue)
        if hit is None or now - hit[0] > RATE_CACHE_S:
            hit = self._rates[queue] = (now, self.meter.drain_rate(queue))
        return hit[1]

    def forget_rates(self) -> None:
        """Drop this process's cached rates, prefetch windows and remembered refusals."""
        self._rates.clear()
        self._held.clear()
        self.memo.clear()

    def length_bound(self, limit: Limit) -> int:
        """The length the queue may reach now: fixed, or wait × measured drain rate."""
        if limit.length is not None:
            return limit.length
        assert limit.wait_s is not None  # a Limit holds a length or a wait, never neither
        return wait_bound(limit.wait_s, self.drain_rate(limit.queue))

    def room_in_broker(self, queue: str, broker: str, bound: int) -> int:
        """How many may wait in the broker: the bound less what workers hold prefetched.

        Never below half the bound, so a fleet whose windows exceed the limit still flows.
        """
        now = time.monotonic()
        hit = self._held.get((queue, broker))
        if hit is None or now - hit[0] > RATE_CACHE_S:
            hit = self._held[(queue, broker)] = (now, self.meter.held_by_workers(queue, broker))
        return room(bound, hit[1])

    def retry_after_s(self, queue: str, depth: int, bound: int) -> int:
        """Seconds until the slot this refused caller can have, from the drain rate."""
        rate = self.drain_rate(queue)
        client = self.meter.client
        if not rate or client is None:  # rate unknown (no recent backlog): look again soon
            return RETRY_AFTER_UNMEASURED_S
        excess = max(1, depth - bound + 1)
        try:
            # The line never reaches past one turnover of the whole queue (bound / rate):
            # by then every slot promised before has come round, so a line left long by
            # an earlier, slower rate falls back instead of holding everyone at the cap.
            wait = float(TICKET(client, [self.meter.keys.ticket(queue)],
                                (excess, rate, RETRY_AFTER_MAX_S, max(1, bound) / rate,
                                 self.memo.take_pending(queue))))
        except redis.RedisError:
            wait = excess / rate
        return clamp(wait)

    def refuse(self, queue: str, depth: int, bound: int, wait_s: float | None = None) -> QueueFull:
        """The error for a broker's refusal; ``wait_s``: the ticket, when the broker drew it.

        The refusal is remembered for a moment (`.memo`)."""
        if wait_s is None:
            wait_s = self.retry_after_s(queue, depth, bound)
        self.memo.remember(queue, depth, bound, wait_s, self.drain_rate(queue))
        return self._refused(queue, depth, bound, wait_s)

    def recent_refusal(self, queue: str) -> QueueFull | None:
        """A refusal answered in-process while the broker's last refusal of ``queue`` holds."""
        remembered = self.memo.refusal(queue)
        return self._refused(queue, *remembered) if remembered else None

    def pending_tickets(self, queue: str) -> int:
        """For a transport drawing a ticket: slots this process handed out since the last."""
        return self.memo.take_pending(queue)

    def _refused(self, queue: str, depth: int, bound: int, wait_s: float) -> QueueFull:
        self._count(queue, submits.REFUSED)
        return QueueFull(queue=queue, depth=depth, limit=bound, retry_after_s=clamp(wait_s))

    def admitted(self, queue: str) -> None:
        """Count one message the broker accepted into ``queue``."""
        self.memo.admitted(queue)
        self._count(queue, submits.ACCEPTED)

    def _count(self, queue: str, outcome: str) -> None:
        """Prometheus' counter and the shared per-second count (``floodgate status``); the
        counter's child is looked up once per queue (it costs ~10 µs a publish otherwise)."""
        child = self._counters.get((queue, outcome))
        if child is None:
            child = self._counters[(queue, outcome)] = metrics.counter(outcome, queue)
        child.inc()
        submits.record(self.meter, queue, outcome)

    def check_eta(self, queue: str, eta: str | None) -> None:
        """Refuse an ETA the broker would deliver twice.

        Redis redelivers a message unacked past its visibility timeout; RabbitMQ
        closes a channel holding one past its consumer_timeout. Countdowns and ETAs
        are held unacked by the worker, so either limit bounds them.
        """
        if not eta or self.max_countdown_s is None:
            return
        delay_s = seconds_until(eta)
        if delay_s >= self.max_countdown_s:
            raise EtaTooFar(queue, delay_s, self.max_countdown_s)


def wait_bound(wait_s: float, rate: float | None) -> int:
    """A wait limit's length bound at this drain rate."""
    if not rate:
        return WAIT_LIMIT_BOOTSTRAP_LENGTH
    return max(1, min(MAX_LENGTH, math.floor(wait_s * rate)))


def room(bound: int, held: int) -> int:
    return max(math.ceil(bound / 2), bound - held)


def clamp(wait_s: float) -> int:
    return int(min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, math.ceil(wait_s))))


def seconds_until(eta: str) -> float:
    when = datetime.fromisoformat(eta)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - datetime.now(timezone.utc)).total_seconds()
