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
from celery_floodgate import fairness as fair
from celery_floodgate import metrics, submits
from celery_floodgate.fairness import Fairness
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
                 publish_timeout_s: float = 1.0, max_countdown_s: float | None = None,
                 fairness: Fairness | None = None) -> None:
        self.limits, self.meter, self.broker_kind = limits, meter, broker_kind
        self.publish_timeout_s, self.max_countdown_s = publish_timeout_s, max_countdown_s
        #: Fair admission per tenant and class; None: first come, first served.
        self.fairness = fairness
        #: Where tenants' holdings are counted (`celery_floodgate.binding.tenancy_for`).
        self.tenancy: Any = None
        if fairness is not None:  # the weighted tenants keep their own metric labels
            metrics.reserve_tenants([*sorted(fairness.weights, key=lambda t: (
                -fairness.weight(t), t)), fair.DEFAULT_TENANT])
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

    def refuse(self, queue: str, depth: int, bound: int, wait_s: float | None = None,
               reason: str = fair.FULL, tenant: str | None = None,
               criticality: str | None = None, share: int = 0,
               rate: float | None = None) -> QueueFull:
        """The error for a broker's refusal; ``wait_s``: the ticket, when the broker drew it.

        The refusal is remembered for a moment (`.memo`), for what it refused: the
        queue, the class or the tenant (``reason``). ``rate``: how fast that line
        moves, when not the queue's drain rate (a tenant's part of it)."""
        if wait_s is None:
            wait_s = self.retry_after_s(queue, depth, bound)
        self.memo.remember(queue, depth, bound, wait_s, rate or self.drain_rate(queue),
                           scope_of(reason, tenant, criticality), share)
        return self._refused(queue, depth, bound, wait_s, reason, tenant, criticality, share)

    def recent_refusal(self, queue: str, tenant: str | None = None,
                       criticality: str | None = None) -> QueueFull | None:
        """A refusal answered in-process while the broker's last refusal of ``queue`` holds,
        for this tenant and class: another tenant's or a lower class's does not count."""
        if self.fairness is None or tenant is None:
            remembered = self.memo.refusal(queue)
            return self._refused(queue, *remembered[:3]) if remembered else None
        criticality = criticality or fair.DEFAULT
        remembered = self.memo.refusal(queue, scopes_refusing(tenant, criticality))
        if remembered is None:
            return None
        depth, bound, wait_s, scope, share = remembered
        reason = {"tenant": fair.SHARE, "class": fair.CLASS}.get(scope.split(":", 1)[0], fair.FULL)
        return self._refused(queue, depth, bound, wait_s, reason, tenant, criticality, share)

    def pending_tickets(self, queue: str, scope: str = "") -> int:
        """For a transport drawing a ticket: slots this process handed out since the last."""
        return self.memo.take_pending(queue, scope)

    def _refused(self, queue: str, depth: int, bound: int, wait_s: float,
                 reason: str = fair.FULL, tenant: str | None = None,
                 criticality: str | None = None, share: int = 0) -> QueueFull:
        self._count(queue, submits.REFUSED, tenant, criticality)
        return QueueFull(queue=queue, depth=depth, limit=bound, retry_after_s=clamp(wait_s),
                         reason=reason, tenant=tenant, criticality=criticality, share=share)

    def admitted(self, queue: str, tenant: str | None = None,
                 criticality: str | None = None) -> None:
        """Count one message the broker accepted into ``queue``."""
        if tenant is None:
            self.memo.admitted(queue)
        else:
            self.memo.admitted(queue, scopes_admitted(tenant, criticality or fair.DEFAULT))
        self._count(queue, submits.ACCEPTED, tenant, criticality)

    def _count(self, queue: str, outcome: str, tenant: str | None = None,
               criticality: str | None = None) -> None:
        """Prometheus' counter and the shared per-second count (``floodgate status``); the
        counter's child is looked up once per queue (it costs ~10 µs a publish otherwise)."""
        child = self._counters.get((queue, outcome))
        if child is None:
            child = self._counters[(queue, outcome)] = metrics.counter(outcome, queue)
        child.inc()
        submits.record(self.meter, queue, outcome)
        if tenant is not None:
            criticality = criticality or fair.DEFAULT
            metrics.tenant_counter(outcome, queue, tenant, criticality).inc()
            submits.record_tenant(self.meter, queue, outcome, tenant, criticality)

    def tenant_held(self, queue: str) -> dict[str, int]:
        """Messages waiting in ``queue`` per tenant (empty without fair admission)."""
        if self.fairness is None or self.tenancy is None:
            return {}
        held: dict[str, int] = self.tenancy.held(queue)
        return held

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


def scope_of(reason: str, tenant: str | None, criticality: str | None) -> str:
    """The memo's scope of a refusal (`celery_floodgate.memo`)."""
    if reason == fair.SHARE and tenant is not None:
        return f"tenant:{tenant}"
    if reason == fair.CLASS and criticality is not None:
        return f"class:{criticality}"
    return ""


def scopes_refusing(tenant: str, criticality: str) -> tuple[str, ...]:
    """The remembered refusals that refuse this submission: the queue's, its class's or
    a class shed after it (a class shed later has the higher bound), and its tenant's
    (critical work is exempt from shares)."""
    rank = fair.CLASSES.index(criticality)
    classes = tuple(f"class:{c}" for c in fair.CLASSES[rank:fair.CLASSES.index(fair.CRITICAL)])
    share = () if criticality == fair.CRITICAL else (f"tenant:{tenant}",)
    return ("", *classes, *share)


def scopes_admitted(tenant: str, criticality: str) -> tuple[str, ...]:
    """The remembered refusals an admission proves stale: the queue's, those of its class
    and the classes shed after it, and its tenant's."""
    rank = fair.CLASSES.index(criticality)
    return ("", *(f"class:{c}" for c in fair.CLASSES[rank:]), f"tenant:{tenant}")


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
