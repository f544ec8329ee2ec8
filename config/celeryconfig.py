"""Celery settings, each under a link to its documentation and the reason.

Reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
Values that depend on the deployment come from :mod:`config.settings`.
"""
from __future__ import annotations

from datetime import timedelta

from kombu import Exchange, Queue

from config.queues import MAX_LENGTH, QUEUES, ROUTES, parse_queue_limits
from config.settings import get_settings

_s = get_settings()
_limits = parse_queue_limits(_s.queue_limits)

# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-url
broker_url = _s.broker_url
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-backend
result_backend = _s.result_backend_url

# The guarded transports are where every publish meets its queue's limit,
# whichever API sent it (delay, apply_async, send_task, canvas, beat).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-transport
broker_transport = {
    "redis": "tasks.brokers.redis:Transport",
    "amqp": "tasks.brokers.amqp:Transport",
}.get(_s.broker_kind)


def _queue_arguments(queue: str) -> dict | None:
    """RabbitMQ enforces the length itself; reject-publish nacks instead of dropping."""
    if _s.broker_kind != "amqp":
        return None
    limit = _limits[queue]
    return {
        "x-max-length": limit.length if limit.length is not None else MAX_LENGTH,
        "x-overflow": "reject-publish",
    }


# Durable queues so accepted messages survive a broker restart; every declarer
# (API, worker, beat) builds them from this one list, so arguments always match.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-queues
task_queues = [
    Queue(q, Exchange(q, type="direct", durable=True), routing_key=q, durable=True,
          queue_arguments=_queue_arguments(q))
    for q in QUEUES
]
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-routes
task_routes = {name: {"queue": queue, "routing_key": queue} for name, queue in ROUTES.items()}
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-default-queue
task_default_queue = "default"
task_default_exchange = "default"
task_default_routing_key = "default"
# Our queues are declared above; an unknown queue name is a bug, not a new queue.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-create-missing-queues
task_create_missing_queues = False

# JSON only: a pickle message is refused before it is deserialised.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#accept-content
accept_content = ["json"]
result_accept_content = ["json"]
task_serializer = "json"
result_serializer = "json"

# Publisher confirms: a publish returns only once RabbitMQ has the message, and a
# full queue (reject-publish) nacks it instead of silently dropping the oldest.
# Ignored by Redis. https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-transport-options
broker_transport_options = {"confirm_publish": True} if _s.broker_kind == "amqp" else {}

# Ack after the task ran, so a worker that dies mid-task leaves the message to be redelivered.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
task_acks_late = True
# Reserve one message per process: a long task never sits behind a prefetched backlog.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-prefetch-multiplier
worker_prefetch_multiplier = 1
# Report 'running' in the result backend (the API maps STARTED to running).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-track-started
task_track_started = True
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-expires
result_expires = timedelta(days=1)
# Time limits so a stuck task cannot hold a worker forever; tasks may lower them.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-time-limit
task_soft_time_limit = 240
task_time_limit = 300

# Events let Flower list every task; the sent event shows tasks still queued.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events
worker_send_task_events = True
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-send-sent-event
task_send_sent_event = True
# Workers keep retrying to reach a broker that is not up yet (compose start order).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry-on-startup
broker_connection_retry_on_startup = True
# A publish to a down broker must fail fast (the API answers 503), not hang.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-publish-retry-policy
task_publish_retry_policy = {
    "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2,
}
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-timeout
broker_connection_timeout = 2.0

# Beat enqueues the aggregation of each window as it closes, and sweeps the outbox.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#beat-schedule
beat_schedule = {
    "aggregate-closed-window": {
        "task": "scheduler.tasks.aggregate_closed_window",
        "schedule": timedelta(seconds=_s.aggregation_interval_s),
        "options": {"expires": _s.aggregation_interval_s},
    },
    "republish-stale-jobs": {
        "task": "scheduler.tasks.republish_stale_jobs",
        "schedule": timedelta(seconds=max(10, _s.republish_after_s // 4)),
        "options": {"expires": 60},
    },
}
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#beat-schedule-filename
beat_schedule_filename = "var/celerybeat-schedule"
timezone = "UTC"
