"""What install() hooks into the app's workers: observers only, none can veto.

Celery's signals are process-wide, so each receiver first checks that the
worker belongs to the app it was installed on. The signals hold the receivers
weakly and the guard holds them strongly: they live exactly as long as the app
(which holds its guard), and an app that is dropped leaves nothing connected.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.signals import task_received, worker_ready

from celery_floodgate.guard import Guard
from celery_floodgate.fairness import DEFAULT_TENANT, TENANT_HEADER
from celery_floodgate.stats import DepthReader
from celery_floodgate.tenants import epoch_of, tenancy_of
from celery_floodgate.transports import broker_id

log = logging.getLogger("celery_floodgate")


class Receivers:
    """The signal receivers of one app's guard."""

    def __init__(self, app: Any, guard: Guard, unbounded: frozenset[str]) -> None:
        self.app, self.guard, self.unbounded = app, guard, unbounded

    def count_drained(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        """Count a message this app's worker took off its queue (the drain rate), and
        take its place back from its tenant (`celery_floodgate.tenants`)."""
        if sender is None or sender.app is not self.app or request is None:
            return
        info = request.delivery_info or {}
        queue = info.get("routing_key")
        if not queue:
            return
        self.guard.meter.counter.add(queue)
        tenancy = tenancy_of(self.guard)
        # A message received again was taken back at its first receipt.
        if tenancy is not None and not info.get("redelivered"):
            headers = request.request_dict  # the message's headers, Celery's and ours
            epoch = epoch_of(headers)
            if epoch is not None:
                tenancy.consumed(queue, headers.get(TENANT_HEADER) or DEFAULT_TENANT, epoch)

    def watch_backlog(self, sender: Any = None, **_: Any) -> None:
        """Mark backlogged seconds of this worker's queues, report its prefetch window,
        reconcile tenant counts with the depths read, and name any queue it consumes
        that has no limit."""
        app, guard = self.app, self.guard
        if sender is None or sender.app is not app:
            return
        consumed = set(app.amqp.queues.consume_from or app.amqp.queues)
        unlimited = sorted(consumed - set(guard.limits) - self.unbounded)
        if unlimited:
            log.error("this worker consumes %s, which %s no limit: give each a limit in "
                      "install(limits=...), or name it in unbounded=",
                      ", ".join(map(repr, unlimited)), "has" if len(unlimited) == 1 else "have")
        window = getattr(getattr(sender, "qos", None), "value", None) or sender.initial_prefetch_count
        depth: Callable[[str], int | None] = DepthReader(app)
        tenancy = tenancy_of(guard)
        if tenancy is not None:  # the same once-a-second reading repairs tenant counts
            depth = tenancy.reconciling(depth)
        guard.meter.counter.watch([q for q in guard.limits if q in consumed], depth,
                                  worker=sender.hostname, broker=broker_id(sender.connection),
                                  window=window)


def connect(app: Any, guard: Guard, unbounded: frozenset[str]) -> Receivers:
    """Connect ``app``'s receivers, weakly; ``guard`` keeps them (see the module's text)."""
    receivers = guard.receivers = Receivers(app, guard, unbounded)
    # A dispatch_uid per guard: Celery before 5.7 keys a receiver by id() and checks for
    # a duplicate before clearing dead ones, so a new app's receiver at a dropped one's
    # address would be taken as already connected.
    task_received.connect(receivers.count_drained, weak=True,
                          dispatch_uid=f"{guard.id}:count_drained")
    worker_ready.connect(receivers.watch_backlog, weak=True,
                         dispatch_uid=f"{guard.id}:watch_backlog")
    return receivers
