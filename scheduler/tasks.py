"""Periodic tasks sent by beat. Both are idempotent, so a doubled beat is harmless."""
from __future__ import annotations

import time

from celery.utils.log import get_task_logger

from config import app
from config.settings import SYSTEM_TENANT, get_settings
from scheduler.aggregation import aggregate_window, closed_windows
from tasks.demo import jobs
from tasks.demo.db import engine
from celery_floodgate import QueueFull
from celery_floodgate.fairness import CRITICAL, submitting_as
from tasks.demo.submit import submit

log = get_task_logger(__name__)


@app.task(name="scheduler.tasks.aggregate_closed_window", acks_late=True)
def aggregate_closed_window(now: float | None = None) -> list[dict]:
    windows = closed_windows(now or time.time(), get_settings().aggregation_interval_s)
    with engine().begin() as conn:
        rows = [aggregate_window(conn, start, end) for start, end in windows]
    return [{"window_start": r["window_start"], "posts": r["posts"]} for r in rows]


@app.task(name="scheduler.tasks.republish_stale_jobs", acks_late=True)
def republish_stale_jobs() -> int:
    """The outbox sweep: re-send accepted jobs that stopped moving.

    A job gets its 202 only after its message was accepted by the broker, but a
    Redis broker without AOF can still lose it. Re-sending is safe because
    delivery is idempotent; a full queue just postpones the sweep. The jobs were
    promised already, so they are re-sent as the service's critical work: admitted
    up to the queue's full limit, whatever users' work fills it.
    """
    with engine().begin() as conn:
        stale = jobs.stale(conn, "fanout", get_settings().republish_after_s)
    sent = 0
    for job in stale:
        try:
            with submitting_as(SYSTEM_TENANT, CRITICAL):
                submit("tasks.fanout.fanout_post", args=(job.id, job.post_id), task_id=job.id)
        except QueueFull:
            break
        with engine().begin() as conn:
            jobs.touch(conn, job.id)
        sent += 1
    if sent:
        log.warning("re-published %d stale job(s)", sent)
    return sent
