"""Fair admission on RabbitMQ and SQS: each tenant's holding counted in the meter's Redis.

The queue's total stays the broker's (RabbitMQ's ``x-max-length`` with
``reject-publish``; SQS's admission set, `celery_floodgate.transports.sqs`). What a
tenant holds is counted here, in one hash per queue (``t:<tenant>`` -> places):

* **Reserve** (before the publish): ``tenants_reserve.lua`` applies
  `celery_floodgate.fairness.decide` to the counts (the class's bound and the
  watermark against their total, the share from the active tenants' weights) and
  counts the place if admitted, in one step: concurrent submitters cannot take a
  tenant past its share between them. A refusal draws its Retry-After in the line of
  what refused it (the queue's, the class's, or the tenant's, which moves at
  ``drain rate x holding / total``), in the same call.
* **Release**: a publish the broker nacked (queue full) gives its place back.
* **Consumed**: a worker counts what it receives (`celery_floodgate.worker`) and a
  thread takes the places back every FLUSH_INTERVAL_S (a quarter second), one call per
  queue: no round trip per message. A message received again (``redelivered``) is not taken back twice.
* **Reconcile** (`MeterTenancy.reconcile`, fed by the worker's once-a-second depth
  reading): repairs drift against the broker's depth, by the rules stated there.

Every message carries the epoch of its reservation (``fg_tenant_epoch``); a reset
bumps the epoch, so places taken back late for messages counted before it are ignored
rather than taken from the messages counted after it.

How far a tenant can exceed its share (the overshoot). A count is too high, which only
refuses more, by the receipts not yet flushed (at most FLUSH_INTERVAL_S of them) and by
places lost until reconciled (a worker killed before its flush, a purge, a consumer
that is not a Floodgate worker). It is too low, which lets its tenant past its share,
only by:

* messages a worker received and handed back (killed or disconnected with messages
  prefetched, a reject with requeue): one each, until the broker delivers them again
  (they keep their place near the head of the queue), so at most the dead workers'
  prefetch windows, for about the time the queue takes to drain that many;
* a trim (reconcile rule 3) taken in proportion from a tenant whose places were not
  the lost ones: at most its part of the places lost.

So under concurrent submitters with live workers the share holds exactly (measured
by tests/integration/test_fair_amqp.py: 0 over); a worker killed mid-batch lets a
tenant exceed its share by at most that worker's prefetch window, transiently. The
total never exceeds the limit: the broker bounds it.

If the meter's Redis does not answer, admission falls back to first come, first
served (the broker still bounds the total) and logs a warning.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from celery_floodgate.errors import QueueFull
from celery_floodgate.fairness import CRITICAL, Decision
from celery_floodgate.limits import RETRY_AFTER_MAX_S
from celery_floodgate.transports import LuaScript

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard

RESERVE = LuaScript("line.lua", "tenants_reserve.lua")
RELEASE = LuaScript("tenants_release.lua")
RECONCILE = LuaScript("tenants_reconcile.lua")
#: The header carrying the epoch of a message's reservation.
EPOCH_HEADER = "fg_tenant_epoch"
#: How often a process takes back the places its workers received. Until then the counts
#: run high by what was received (a second's drain can be most of a queue's limit, which
#: refused tenants under their share: bench/RESULTS.md (g')); four calls a second per
#: process cost the meter next to nothing.
FLUSH_INTERVAL_S = 0.25
#: A broker depth read by reconcile counts in reserve for this long.
DEPTH_FRESH_S = 2.0

log = logging.getLogger("celery_floodgate")


@dataclass(frozen=True)
class Reservation(Decision):
    """A `Decision` with what the meter saw: ``reserved`` places (a batch may get some),
    ``depth`` and ``holding`` after them or at the refusal, the ticket (``wait_s``, None:
    rate unknown) and the ``epoch`` to carry in the messages' headers (None: not counted)."""

    reserved: int = 0
    depth: int = 0
    holding: int = 0
    wait_s: float | None = None
    epoch: int | None = None


class MeterTenancy:
    """``guard.tenancy`` on RabbitMQ and SQS: tenants' holdings in the meter's Redis."""

    def __init__(self, guard: Guard) -> None:
        self._guard = weakref.ref(guard)
        self.prefix = guard.meter.keys.prefix
        self.quiet_s = max(2.0, 2 * guard.publish_timeout_s)
        self._consumed: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def key(self, queue: str) -> str:
        """The hash of ``queue``'s tenants."""
        return f"{self.prefix}:tenants:{queue}"

    @property
    def guard(self) -> Guard:
        guard = self._guard()
        assert guard is not None, "the guard of this tenancy is gone"
        return guard

    def reserve(self, queue: str, tenant: str, criticality: str, bound: int,
                n: int = 1) -> Reservation:
        """Admit (and count) up to ``n`` messages of ``tenant`` or refuse; one Lua call."""
        guard = self.guard
        policy, keys, client = guard.fairness, guard.meter.keys, guard.meter.client
        assert policy is not None
        if client is None:
            return Reservation(True, reserved=n)
        rate = guard.drain_rate(queue) or 0
        args = (tenant, policy.weight(tenant), n, bound, policy.class_bound(bound, criticality),
                policy.watermark_depth(bound), int(criticality == CRITICAL), rate,
                RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0,
                guard.pending_tickets(queue), guard.pending_tickets(queue, f"class:{criticality}"),
                guard.pending_tickets(queue, f"tenant:{tenant}"), DEPTH_FRESH_S,
                len(policy.weights), *(x for pair in policy.weights.items() for x in pair))
        try:
            reply = RESERVE(client, [self.key(queue), keys.ticket(queue),
                                     keys.line(queue, f"class:{criticality}"),
                                     keys.line(queue, f"tenant:{tenant}")], args)
        except redis.RedisError as exc:
            log.warning("fair admission of %r skipped: the meter did not answer (%s)", queue, exc)
            return Reservation(True, reserved=n)
        reserved, reason, wait = int(reply[0]), _text(reply[1]), _text(reply[5])
        depth, holding, share = int(reply[2]), int(reply[3]), int(reply[4])
        excess = 0 if not reason else (depth - policy.class_bound(bound, criticality) + 1
                                       if reason != "share" else holding - share + 1)
        return Reservation(reserved == n, reason, excess, share, reserved, depth, holding,
                           float(wait) if wait not in ("", "-1") else None, int(reply[6]))

    def refusal(self, queue: str, reservation: Reservation, bound: int, tenant: str,
                criticality: str) -> QueueFull:
        """The QueueFull for a refused reservation (counted and remembered by the guard)."""
        guard = self.guard
        rate = guard.drain_rate(queue)
        total = max(1, reservation.depth)
        line_rate = (rate * reservation.holding / total
                     if rate and reservation.reason == "share" else rate)
        return guard.refuse(queue, reservation.depth, bound, wait_s=reservation.wait_s,
                            reason=reservation.reason, tenant=tenant, criticality=criticality,
                            share=reservation.share, rate=line_rate)

    def release(self, queue: str, tenant: str | None, epoch: int | None, n: int = 1) -> None:
        """Give back ``n`` places whose publish the broker refused or that never left
        (none when nothing was reserved: ``tenant`` or ``epoch`` None)."""
        client = self.guard.meter.client
        if tenant is None or epoch is None or client is None or n <= 0:
            return
        try:
            RELEASE(client, [self.key(queue)], (0, tenant, epoch, n))
        except redis.RedisError as exc:  # counted too high until reconciled
            log.warning("could not give back %d place(s) of %r in %r: %s", n, tenant, queue, exc)

    def consumed(self, queue: str, tenant: str, epoch: int) -> None:
        """A worker received a message: its place is taken back within FLUSH_INTERVAL_S."""
        with self._lock:
            self._consumed[(queue, tenant, epoch)] += 1
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=_flush_periodically,
                                                args=(weakref.ref(self),), daemon=True,
                                                name="tenant-meter")
                self._thread.start()

    def flush(self) -> None:
        """Take back the places received since the last flush: one call per queue; a
        queue whose call failed is tried again at the next flush."""
        with self._lock:
            taken, self._consumed = self._consumed, Counter()
        guard = self._guard()
        client = guard.meter.client if guard is not None else None
        if not taken or client is None:
            return
        by_queue: dict[str, list[tuple[str, str, int]]] = {}
        for queue, tenant, epoch in taken:
            by_queue.setdefault(queue, []).append((queue, tenant, epoch))
        for queue, batch in by_queue.items():
            try:
                RELEASE(client, [self.key(queue)],
                        (1, *(x for q, t, e in batch for x in (t, e, taken[(q, t, e)]))))
            except redis.RedisError:
                with self._lock:  # kept for the next flush: a stale count refuses more
                    self._consumed.update({k: taken[k] for k in batch})

    def held(self, queue: str) -> dict[str, int]:
        """Tenant -> places counted in ``queue`` (empty if the meter does not answer)."""
        client = self.guard.meter.client
        if client is None:
            return {}
        try:
            flat = client.hgetall(self.key(queue))
        except redis.RedisError:
            return {}
        return {name[2:]: int(v) for name, v in ((_text(k), v) for k, v in flat.items())
                if name.startswith("t:") and int(v) > 0}

    def snapshot(self, queue: str) -> int:
        """The reservations ever made in ``queue``: read it just before the broker's depth."""
        client = self.guard.meter.client
        return int(client.hget(self.key(queue), "seq") or 0) if client is not None else 0

    def reconcile(self, queue: str, broker_depth: int, seq_before: int) -> tuple[int, int]:
        """Repair drift against the broker's depth (ready messages); returns (places
        removed, total after). ``seq_before``: `snapshot`, read just before the depth.

        Rules, applied only when no reservation was made since ``seq_before`` nor within
        ``quiet_s`` (so none is still on its way to the broker):

        1. a count never goes below 0, and one at 0 is removed;
        2. the broker holds none: every count becomes 0 (each place counted was received
           or lost), and the epoch moves on, so late take-backs of those are ignored;
        3. the counts' total exceeds the depth: the excess of a reading at least a
           second older, less the places taken back since, was lost (what a flush had
           not yet taken back then has been since); that much, at most the excess now,
           is taken from the tenants in proportion to their counts, rounded down.

        A count below the broker's depth is left as it is: what it misses (messages handed
        back by a dead worker, sent without fair admission) cannot be given to a tenant;
        reserve counts a fresh depth reading above the total against the class bounds.
        """
        client = self.guard.meter.client
        if client is None:
            return 0, 0
        removed, after = RECONCILE(client, [self.key(queue)],
                                   (broker_depth, seq_before, self.quiet_s))
        if removed:
            log.warning("queue %r: tenant counts drifted from the broker's depth (%d); "
                        "removed %d place(s), %d counted now", queue, broker_depth,
                        int(removed), int(after))
        return int(removed), int(after)

    def reconciling(self, depth: Callable[[str], int | None]) -> Callable[[str], int | None]:
        """``depth`` (the worker's once-a-second reader), reconciling each reading."""

        def read(queue: str) -> int | None:
            self.flush()
            try:
                before = self.snapshot(queue)
            except redis.RedisError:
                return depth(queue)
            found = depth(queue)
            if found is not None:
                try:
                    self.reconcile(queue, found, before)
                except redis.RedisError as exc:
                    log.warning("could not reconcile tenant counts of %r: %s", queue, exc)
            return found

        return read


def tenancy_of(guard: Guard) -> MeterTenancy | None:
    """``guard``'s MeterTenancy when it shares queues fairly on RabbitMQ or SQS, else None
    (made on first use if install() did not set it)."""
    if guard.fairness is None or guard.broker_kind == "redis":
        return None
    found = guard.tenancy
    if not isinstance(found, MeterTenancy):
        found = guard.tenancy = MeterTenancy(guard)
    return found


def epoch_of(headers: dict[str, Any] | None) -> int | None:
    """The epoch a received message was counted in, None if it was not counted."""
    value = (headers or {}).get(EPOCH_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flush_periodically(ref: "weakref.ref[MeterTenancy]") -> None:
    """Holds its tenancy only while flushing, so it ends when the guard is freed."""
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        found = ref()
        if found is None or found._guard() is None:
            return
        found.flush()
        del found
