"""Prefetch per queue, and the command-line options that must win over configuration."""
from __future__ import annotations

import sys

from celery import bootsteps


def explicit_option(argv: list[str], *names: str) -> str | None:
    """The value of a command-line option given explicitly (Celery's CLI fills in defaults)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{name}=") and name.startswith("--"):
                return arg.split("=", 1)[1]
    return None


def prefetch_for(prefetch: dict[str, int], queues) -> int:
    """The smallest prefetch multiplier of the queues a worker consumes."""
    return min((prefetch.get(q, 1) for q in queues), default=1)


class PerQueuePrefetch(bootsteps.Step):
    """Set the worker's prefetch from the queues it consumes (-Q), before QoS is applied.

    Reads the app's ``floodgate_queue_prefetch`` ({queue: multiplier}); an explicit
    ``--prefetch-multiplier`` wins.
    https://docs.celeryq.dev/en/stable/userguide/extending.html#consumer-bootsteps
    """

    def __init__(self, consumer, **kwargs):
        super().__init__(consumer, **kwargs)
        current = consumer.prefetch_multiplier
        prefetch = consumer.app.conf.get("floodgate_queue_prefetch") or {}
        if explicit_option(sys.argv, "--prefetch-multiplier") is not None or not current:
            return
        queues = consumer.app.amqp.queues
        chosen = prefetch_for(prefetch, queues.consume_from or queues)
        consumer.initial_prefetch_count = consumer.initial_prefetch_count // current * chosen
        consumer.prefetch_multiplier = chosen


def use_floodgate_pool(app, argv: list[str]) -> None:
    """Floodgate's pool unless -P names another; one task at a time unless -c says otherwise.

    Celery's CLI replaces an explicit ``-P prefork`` with a configured worker_pool, so
    it is set here from the command line. Nothing is read from app.conf: that would load
    the settings in every process that imports the app.
    """
    if (pool := explicit_option(argv, "-P", "--pool")) is not None:
        app.conf.worker_pool = pool
    elif explicit_option(argv, "-c", "--concurrency") is None:
        app.conf.worker_concurrency = 1
