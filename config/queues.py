"""Floodgate's queues, each declared once: name, limit, prefetch, and the tasks routed
to it with their (soft, hard) time limits in seconds.

Everything else reads this: routes, time limits and prefetch (config.celeryconfig),
the default QUEUE_LIMITS (config.settings), the guard (config.celery_app), and the
Procfile, docker-compose.yml, tests and benchmarks (checked by tests/unit/test_queues.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from celery_floodgate import Limit, parse_limit, parse_limits


@dataclass(frozen=True)
class QueueSpec:
    name: str
    #: A length (1000) or a maximum wait ("5s", Redis only); QUEUE_LIMITS overrides it.
    limit: int | str
    #: Prefetch multiplier of a worker consuming this queue. Prefetched messages sit in
    #: a worker, outside the broker's count, so they add to the wait a limit promises:
    #: short-task queues keep it small yet deep enough that the worker never waits for
    #: the broker (bench/RESULTS.md (e)); long tasks take one at a time. A worker on
    #: several queues takes the smallest.
    prefetch: int
    tasks: Mapping[str, tuple[int, int]] = field(default_factory=dict)


FANOUT, AGGREGATION, DEFAULT = "fanout", "aggregation", "default"

QUEUES = (
    QueueSpec(FANOUT, limit=1000, prefetch=8, tasks={
        "tasks.fanout.fanout_post": (60, 90),
        "tasks.fanout.deliver_chunk": (60, 90),
    }),
    QueueSpec(AGGREGATION, limit=100, prefetch=1, tasks={
        "scheduler.tasks.aggregate_closed_window": (120, 150),
    }),
    QueueSpec(DEFAULT, limit=5000, prefetch=8, tasks={
        "scheduler.tasks.republish_stale_jobs": (60, 90),
    }),
)

NAMES = tuple(q.name for q in QUEUES)
#: Routes by task name; anything unlisted goes to ``default``.
ROUTES = {task: q.name for q in QUEUES for task in q.tasks}
PREFETCH = {q.name: q.prefetch for q in QUEUES}
TIME_LIMITS_S = {task: limits for q in QUEUES for task, limits in q.tasks.items()}
DEFAULT_LIMITS = ",".join(f"{q.name}={q.limit}" for q in QUEUES)
#: Prefix of every Redis key the guard and the meter write for Floodgate's app.
KEY_PREFIX = "floodgate"


def parse_queue_limits(text: str) -> dict[str, Limit]:
    """``QUEUE_LIMITS`` over the declared defaults; a queue not declared here is an error."""
    limits = {q.name: parse_limit(q.name, q.limit) for q in QUEUES}
    overrides = parse_limits(text)
    unknown = sorted(set(overrides) - set(NAMES))
    if unknown:
        raise ValueError(f"names unknown queue {unknown[0]!r} (known: {', '.join(NAMES)}; "
                         "declare a queue in config/queues.py)")
    return {**limits, **overrides}


def as_install_limits(limits: Mapping[str, Limit]) -> dict[str, int | str]:
    return {q: (l.length if l.length is not None else f"{l.wait_s:g}s") for q, l in limits.items()}
