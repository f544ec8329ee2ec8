"""Celery settings, each under a link to its documentation and the reason.

Reference: https://docs.celeryq.dev/en/stable/userguide/configuration.html
Values that depend on the deployment come from :mod:`config.settings`.
"""
from __future__ import annotations

from datetime import timedelta

from kombu import Exchange, Queue

from config.queues import DEFAULT, NAMES, PREFETCH, ROUTES, TIME_LIMITS_S
from config.settings import get_settings

_s = get_settings()

# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-url
broker_url = _s.broker
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-backend
result_backend = _s.result_backend_url

# Durable queues so accepted messages survive a broker restart; every declarer
# (API, worker, beat) builds them from this one list, so arguments always match.
# install() (config.celery_app) adds each queue's limit: on RabbitMQ x-max-length
# with x-overflow reject-publish, on Redis the guarded transport's admission.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-queues
task_queues = [
    Queue(q, Exchange(q, type="direct", durable=True), routing_key=q, durable=True)
    for q in NAMES
]
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-routes
task_routes = {name: {"queue": queue, "routing_key": queue} for name, queue in ROUTES.items()}
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-default-queue
task_default_queue = DEFAULT
task_default_exchange = DEFAULT
task_default_routing_key = DEFAULT
# Our queues are declared above; an unknown queue name is a bug, not a new queue.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-create-missing-queues
task_create_missing_queues = False

# JSON only: a pickle message is refused before it is deserialised.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#accept-content
accept_content = ["json"]
result_accept_content = ["json"]
task_serializer = "json"
result_serializer = "json"

# RabbitMQ: publisher confirms (install() turns them on), so a publish returns only
# once the broker has the message, and a full queue nacks it instead of dropping the
# oldest. Redis: the visibility timeout, after which an unacked message is redelivered; it
# exceeds every task's hard time limit (checked in config.settings), and the
# guarded transport refuses a countdown or ETA beyond it.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-transport-options
# https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
broker_transport_options = {
    "amqp": {"confirm_publish": True},
    "redis": {
        "visibility_timeout": _s.visibility_timeout_s,
        "socket_connect_timeout": _s.publish_timeout_s,
        # kombu sweeps for abandoned messages every interval x throttle seconds,
        # 10 x 10 = 100 s by default; sweep every few seconds instead (one ZRANGE).
        "unacked_restore_interval": max(1, min(10, _s.visibility_timeout_s // 4)),
        "unacked_restore_throttle": 1,
    },
    # SQS: the same visibility timeout (SQS redelivers a message not deleted within it, so
    # it exceeds the hard time limit, as on Redis), queues created with it under a prefix
    # of their own, long polling (SQS_WAIT_TIME_S) and no extra client-side sleep after an
    # empty long poll (kombu's polling_interval), a short one after an empty short poll.
    # The guard's admission count is reconciled with SQS's own every few seconds (docs/app/sqs.md).
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/sqs.html
    "sqs": {
        "visibility_timeout": _s.visibility_timeout_s,
        "region": _s.sqs_region,
        "endpoint_url": _s.sqs_endpoint_url,
        "wait_time_seconds": _s.sqs_wait_time_s,
        "polling_interval": 0 if _s.sqs_wait_time_s else 1,
        "queue_name_prefix": _s.sqs_queue_name_prefix,
        "floodgate_sqs_reconcile_interval_s": _s.sqs_reconcile_interval_s,
        "floodgate_sqs_reconcile_lag_s": _s.sqs_reconcile_lag_s,
        # publish_timeout_s bounds a send as it bounds a Redis push or a RabbitMQ confirm.
        "client-config": {"connect_timeout": _s.publish_timeout_s,
                          "read_timeout": max(_s.publish_timeout_s, _s.sqs_wait_time_s + 5),
                          "retries": {"total_max_attempts": 1}},
    },
}.get(_s.broker_kind, {})

# Ack after the task ran, so a worker that dies mid-task leaves the message to be redelivered.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
task_acks_late = True
# Prefetch is set per queue (config.queues): a worker takes the smallest multiplier
# of the queues it consumes (tasks.runtime.prefetch applies it at start).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-prefetch-multiplier
worker_prefetch_multiplier = 1
floodgate_queue_prefetch = PREFETCH
# Celery's solo pool plus soft and hard time limits (tasks.runtime.pool): the fastest pool
# for short tasks (bench/RESULTS.md (e): prefork's hand-off to a child cost 15-40 %),
# with the limits kept. One task at a time per process: run a process per core.
# An explicit -P (prefork, threads, ...) still chooses another (config.celery_app).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-pool
worker_pool = "tasks.runtime.pool:TaskPool"
# A child killed mid-task (OOM, segfault) fails the task instead of requeueing it
# forever; a redelivery after the whole worker died is bounded by FloodgateTask
# (tasks.runtime.base), at this many redeliveries.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost
task_reject_on_worker_lost = False
floodgate_max_redeliveries = _s.max_redeliveries
# No STARTED write per task (a backend round trip each): a job's state is its row in the
# database, which the worker marks running (tasks/demo/jobs.py).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-track-started
task_track_started = False
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-expires
result_expires = timedelta(days=1)
# Time limits so a stuck task cannot hold a worker forever; tasks may lower them.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-time-limit
task_soft_time_limit = _s.task_soft_time_limit_s
task_time_limit = _s.task_time_limit_s
# Per-task limits from config.queues, never above the global ones.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-annotations
task_annotations = {
    name: {"soft_time_limit": min(soft, task_soft_time_limit),
           "time_limit": min(hard, task_time_limit)}
    for name, (soft, hard) in TIME_LIMITS_S.items()
}

# Task events cost three extra publishes per task. Off by default: Flower turns them
# on while it runs (its enable_events option, on by default), and nobody pays for them
# when nobody watches. But Flower does so only ~5 s after it starts, so a task run
# before then is never listed: where Flower runs (make up, compose), WORKER_SEND_TASK_EVENTS
# turns them on from the worker's start. `celery worker -E` forces them too.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events
worker_send_task_events = _s.worker_send_task_events
# A sent event is a second publish per submission and would halve the submit rate.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-send-sent-event
task_send_sent_event = False
# Workers keep retrying to reach a broker that is not up yet (compose start order).
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry-on-startup
broker_connection_retry_on_startup = True
# A publish to a down broker must fail fast (the API answers 503), not hang.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-publish-retry-policy
# One immediate retry re-opens a connection the broker dropped; more would hold a
# request (and SQLite's write lock) while the broker is down.
task_publish_retry_policy = {
    "max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0,
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
# Celery's PersistentScheduler plus a heartbeat file beside the schedule file (when beat
# last ticked, and last sent each entry), read by `python -m config.health beat`.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#beat-scheduler
beat_scheduler = "scheduler.heartbeat:HeartbeatScheduler"
timezone = "UTC"
