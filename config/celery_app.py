"""The Celery app. Task modules are named as strings; Celery imports them."""
from __future__ import annotations

import os
import sys

from celery import Celery
from celery.signals import celeryd_init
from kombu.transport import TRANSPORT_ALIASES

from config.queues import PREFETCH, QUEUES
from config.settings import ConfigError, get_settings

# The guarded transports are where every publish meets its queue's limit, whichever
# API sent it (delay, apply_async, send_task, canvas, beat). Registered under kombu's
# own scheme names, so URLs stay redis:// and amqp:// and Flower still recognises
# the broker. https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.html
TRANSPORT_ALIASES.update({
    "redis": "tasks.brokers.redis:Transport",
    "amqp": "tasks.brokers.amqp:Transport",
    "pyamqp": "tasks.brokers.amqp:Transport",
})

app = Celery(
    "floodgate",
    task_cls="tasks.base:FloodgateTask",
    include=["tasks.fanout", "tasks.signals", "scheduler.tasks"],
)
app.config_from_object("config.celeryconfig")


@celeryd_init.connect
def _prefetch_for_queues(conf=None, options=None, **_):
    """Set the prefetch multiplier from the queues this worker consumes (-Q)."""
    options = options or {}
    if options.get("prefetch_multiplier") not in (None, 1) or conf is None:
        return  # the operator chose one on the command line
    queues = options.get("queues") or QUEUES
    if isinstance(queues, str):
        queues = queues.split(",")
    conf.worker_prefetch_multiplier = min(PREFETCH.get(q.strip(), 1) for q in queues)


def _secure_flower() -> None:
    """Flower reads FLOWER_* itself; refuse to start it open or on every interface."""
    auth = get_settings().flower_basic_auth
    if not auth:
        raise ConfigError(
            "Floodgate configuration error: FLOWER_BASIC_AUTH is required to run Flower "
            "(user:password); Flower would otherwise serve its UI and API without credentials."
        )
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    os.environ.setdefault("FLOWER_PORT", str(get_settings().flower_port))


if "flower" in sys.argv[1:]:
    _secure_flower()
