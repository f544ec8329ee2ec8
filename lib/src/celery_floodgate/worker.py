"""What install() hooks into the app's workers: observers only, none can veto.

Celery's signals are process-wide, so each receiver first checks that the
worker belongs to the app it was installed on.
"""
from __future__ import annotations

import logging

from celery.signals import task_received, worker_ready

from celery_floodgate.stats import DepthReader
from celery_floodgate.transports import broker_id

log = logging.getLogger("celery_floodgate")


def connect(app, guard, unbounded: frozenset[str]) -> None:
    def count_drained(sender=None, request=None, **_):
        if sender is None or sender.app is not app or request is None:
            return
        queue = (request.delivery_info or {}).get("routing_key")
        if queue:
            guard.meter.counter.add(queue)

    def watch_backlog(sender=None, **_):
        """Mark backlogged seconds of this worker's queues, report its prefetch window,
        and name any queue it consumes that has no limit."""
        if sender is None or sender.app is not app:
            return
        consumed = set(app.amqp.queues.consume_from or app.amqp.queues)
        unlimited = sorted(consumed - set(guard.limits) - unbounded)
        if unlimited:
            log.error("this worker consumes %s, which %s no limit: give each a limit in "
                      "install(limits=...), or name it in unbounded=",
                      ", ".join(map(repr, unlimited)), "has" if len(unlimited) == 1 else "have")
        window = getattr(getattr(sender, "qos", None), "value", None) or sender.initial_prefetch_count
        guard.meter.counter.watch([q for q in guard.limits if q in consumed], DepthReader(app),
                                  worker=sender.hostname, broker=broker_id(sender.connection),
                                  window=window)

    task_received.connect(count_drained, weak=False)
    worker_ready.connect(watch_backlog, weak=False)
