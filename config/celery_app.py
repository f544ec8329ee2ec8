"""The Celery app. Task modules are named as strings; Celery imports them."""
from __future__ import annotations

import sys

from celery import Celery

import config.logging  # noqa: F401 - LOG_FORMAT and job ids on log lines (Celery signals)
from config.flower import secure_flower
from config.queues import KEY_PREFIX, as_install_limits, parse_queue_limits
from config.settings import get_settings
from celery_floodgate import Guard, install
from tasks.runtime.prefetch import PerQueuePrefetch, use_floodgate_pool

app = Celery(
    "floodgate",
    task_cls="tasks.runtime.base:FloodgateTask",
    include=["tasks.demo.fanout", "tasks.demo.signals", "tasks.runtime.checks",
             "scheduler.tasks"],
)
app.config_from_object("config.celeryconfig")


def bound_queues(celery_app: Celery) -> Guard:
    """Floodgate's queue limits on ``celery_app``: every publish (delay, apply_async,
    send_task, canvas, beat) meets its queue's limit; see docs/guarantees.md. Each
    queue is shared fairly among tenants and classes unless FAIR_ADMISSION is false
    (docs/app/configuration.md#fair-admission)."""
    s = get_settings()
    return install(celery_app, as_install_limits(parse_queue_limits(s.queue_limits)),
                   s.meter_redis_url, key_prefix=KEY_PREFIX,
                   rabbitmq_queue_type=s.rabbitmq_queue_type,
                   rabbitmq_queue_version=s.rabbitmq_queue_version,
                   publish_timeout_s=s.publish_timeout_s, max_countdown_s=s.max_countdown_s,
                   fairness=s.fairness(),
                   # memory:// (the unit tests' broker) cannot be bounded: run unbounded there
                   allow_unguarded=("memory",) if s.broker_kind == "memory" else ())


bound_queues(app)
use_floodgate_pool(app, sys.argv)
app.steps["consumer"].add(PerQueuePrefetch)
if "flower" in sys.argv[1:]:
    secure_flower()
