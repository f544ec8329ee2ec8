"""The Celery app. Task modules are named as strings; Celery imports them."""
from __future__ import annotations

import os
import sys

from celery import Celery, bootsteps
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
    amqp="tasks.brokers.producers:FloodgateAMQP",
    include=["tasks.fanout", "tasks.signals", "scheduler.tasks"],
)
app.config_from_object("config.celeryconfig")


def prefetch_for(queues) -> int:
    """The smallest prefetch multiplier of the queues a worker consumes."""
    return min((PREFETCH.get(q, 1) for q in queues), default=1)


def explicit_option(argv: list[str], *names: str) -> str | None:
    """The value of a command-line option given explicitly (Celery's CLI fills in defaults)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{name}=") and name.startswith("--"):
                return arg.split("=", 1)[1]
    return None


def explicit_prefetch(argv: list[str]) -> bool:
    return explicit_option(argv, "--prefetch-multiplier") is not None


# Celery's CLI replaces an explicit `-P prefork` with a configured worker_pool;
# honour it, as every other -P value is honoured. Without -P the pool is Floodgate's,
# which runs one task at a time: Celery would otherwise take the CPU count as its
# concurrency and prefetch that many times over. (Only set here, never read: reading
# app.conf at import would load the settings in every process that imports config.)
if (_pool := explicit_option(sys.argv, "-P", "--pool")) is not None:
    app.conf.worker_pool = _pool
elif explicit_option(sys.argv, "-c", "--concurrency") is None:
    app.conf.worker_concurrency = 1


class PerQueuePrefetch(bootsteps.Step):
    """Set the worker's prefetch from the queues it consumes (-Q), before QoS is applied.

    An explicit ``--prefetch-multiplier`` wins.
    https://docs.celeryq.dev/en/stable/userguide/extending.html#consumer-bootsteps
    """

    def __init__(self, consumer, **kwargs):
        super().__init__(consumer, **kwargs)
        current = consumer.prefetch_multiplier
        if explicit_prefetch(sys.argv) or not current:
            return
        chosen = prefetch_for(consumer.app.amqp.queues.consume_from or QUEUES)
        consumer.initial_prefetch_count = consumer.initial_prefetch_count // current * chosen
        consumer.prefetch_multiplier = chosen


app.steps["consumer"].add(PerQueuePrefetch)


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
