"""Observers wired to Celery signals. None of them can veto anything."""
from __future__ import annotations

import time

from celery.signals import before_task_publish, task_received, worker_process_init

from tasks.db import reset_engine
from tasks.meter import COUNTER

SENT_AT_HEADER = "fg_sent_at"


@before_task_publish.connect
def stamp_sent_at(headers=None, **_):
    """Record when a message was published, for wait-to-start and oldest-age figures."""
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())


@task_received.connect
def count_drained(request=None, **_):
    queue = (request.delivery_info or {}).get("routing_key") if request else None
    if queue:
        COUNTER.add(queue)


@worker_process_init.connect
def fresh_engine(**_):
    """A forked pool child must not share its parent's database connections."""
    reset_engine()
