"""``install(app, limits, meter_url)``: bounded queues for one Celery app.

Everything is set on *that* app: its ``broker_transport`` (the guarded one),
its transport options (which name its guard), its queue declarations (RabbitMQ's
``x-max-length`` and ``reject-publish``), its AMQP helper (connections and a
producer pool that survive refusals) and receivers that act for its workers only.
Nothing global changes: another app in the process is unaffected.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from urllib.parse import urlparse

from kombu import Exchange, Queue

from celery_floodgate.errors import NotInstalled
from celery_floodgate.guard import Guard
from celery_floodgate.limits import MAX_LENGTH, Keys, Limit, parse_limits
from celery_floodgate.meter import Meter
from celery_floodgate.transports import GUARD_OPTION
from celery_floodgate.transports.producers import GuardedAMQP
from celery_floodgate import worker

TRANSPORTS = {
    "redis": "celery_floodgate.transports.redis:Transport",
    "amqp": "celery_floodgate.transports.amqp:Transport",
    "sqs": "celery_floodgate.transports.sqs:Transport",
}


def broker_kind(url: str | None) -> str:
    """'redis', 'amqp', 'sqs', or the URL's own scheme: the one place that tells brokers apart."""
    scheme = urlparse(url or "").scheme
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    if scheme == "sqs":
        return "sqs"
    return scheme


def install(app, limits: Mapping[str, int | str] | str, meter_url: str | None = None, *,
            unbounded: Iterable[str] = (), key_prefix: str | None = None,
            rabbitmq_queue_type: str = "classic", rabbitmq_queue_version: int | None = 2,
            publish_timeout_s: float = 1.0, max_countdown_s: float | None = None) -> Guard:
    """Bound every queue in ``limits`` (``{"emails": 500, "reports": "30s"}``).

    ``meter_url``: a Redis where workers record drain rates (Retry-After, wait
    limits, prefetch windows); defaults to a Redis broker. ``unbounded``: queues
    the app routes to that are meant to have no limit. Call it once, before the
    app sends or consumes anything. Raises NotInstalled with a sentence.

    ``rabbitmq_queue_version``: classic queues are declared with ``x-queue-version``
    2 (None: the broker's default, version 1 before RabbitMQ 4.0). Version 2 confirms
    a persistent message after writing it to disk, as version 1 does, at about 0.6x
    the latency (bench/RESULTS.md, finding 12). A queue that already exists with
    another version must keep it: RabbitMQ refuses the redeclaration (406).
    """
    try:
        parsed = parse_limits(limits)
    except ValueError as exc:
        raise NotInstalled(str(exc)) from None
    kind = broker_kind(app.conf.broker_url)
    meter_url = meter_url or (app.conf.broker_url if kind == "redis" else None)
    check_fits(app, parsed, kind, meter_url, frozenset(unbounded))
    guard = Guard(parsed, Meter(meter_url, Keys(key_prefix or f"backpressure:{app.main}")),
                  kind, publish_timeout_s, max_countdown_s)
    conf = app.conf
    if kind in TRANSPORTS:
        conf.broker_transport = TRANSPORTS[kind]
    conf.broker_transport_options = {
        **(conf.broker_transport_options or {}), GUARD_OPTION: guard.id,
        **({"confirm_publish": True} if kind == "amqp" else {}),
    }
    arguments = rabbitmq_arguments(rabbitmq_queue_type, rabbitmq_queue_version)
    conf.task_queues = declared_queues(conf, parsed, kind, arguments)
    _guard_amqp_helper(app)
    worker.connect(app, guard, frozenset(unbounded))
    return guard


def check_fits(app, limits: dict[str, Limit], kind: str, meter_url: str | None,
               unbounded: frozenset[str]) -> None:
    routed, default = routed_queues(app)
    never = sorted(set(limits) - routed - {default})
    if never:
        raise NotInstalled(f"limits name {_names(never)}, which the app never routes to; "
                           "route a task there (task_routes, task_queues) or drop the limit")
    missing = sorted(routed - set(limits) - unbounded)
    if missing:
        raise NotInstalled(f"the app routes to {_names(missing)} without a limit; give each "
                           "a limit, or name it in unbounded= to leave it unbounded on purpose")
    waits = sorted(q for q, limit in limits.items() if limit.wait_s is not None)
    if waits and kind == "amqp":
        raise NotInstalled(f"wait limits ({_names(waits)}) need the Redis broker; on RabbitMQ "
                           "give a length (the broker enforces it exactly)")
    if kind == "sqs" and not meter_url:
        raise NotInstalled("on SQS the guard counts each queue's admissions in Redis (SQS has no "
                           "length cap): pass meter_url, a Redis")
    if waits and not meter_url:
        raise NotInstalled(f"wait limits ({_names(waits)}) need meter_url, a Redis where "
                           "workers record how fast they drain")


def routed_queues(app) -> tuple[set[str], str]:
    """The queues the app's configuration routes tasks to, and its default queue.

    Read from task_queues, task_routes (mappings and (pattern, route) pairs; a
    router function cannot be read) and tasks registered so far with ``queue=``.
    """
    conf = app.conf
    found = {getattr(q, "name", q) for q in conf.task_queues or ()}
    routes = conf.task_routes or ()
    for router in routes if isinstance(routes, (list, tuple)) else [routes]:
        items = router.items() if isinstance(router, Mapping) else (
            [router] if isinstance(router, tuple) else [])
        found.update(filter(None, (_queue_of(route) for _, route in items)))
    found.update(t.queue for t in app._tasks.values() if getattr(t, "queue", None))
    return {getattr(q, "name", q) for q in found}, conf.task_default_queue


def _queue_of(route) -> str | None:
    if isinstance(route, str):
        return route
    if isinstance(route, Mapping):
        queue = route.get("queue")
        return getattr(queue, "name", queue)
    return None


def rabbitmq_arguments(queue_type: str, queue_version: int | None) -> dict:
    """Queue arguments beside the limit: quorum queues refuse ``x-queue-version``."""
    arguments = {"x-queue-type": queue_type}
    if queue_type == "classic" and queue_version is not None:
        arguments["x-queue-version"] = queue_version
    return arguments


def declared_queues(conf, limits: dict[str, Limit], kind: str, arguments: dict) -> list[Queue]:
    """The app's queues with every limited one declared durable, and bounded on RabbitMQ
    (``arguments`` first, so an app's own x-queue-version wins; the limit last)."""
    queues = {q.name: q for q in conf.task_queues or ()}
    for name, limit in limits.items():
        queue = copy.copy(queues[name]) if name in queues else Queue(
            name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
        if kind == "amqp":
            queue.queue_arguments = {
                **arguments,
                **(queue.queue_arguments or {}),
                "x-max-length": limit.length if limit.length is not None else MAX_LENGTH,
                "x-overflow": "reject-publish",
                "x-queue-type": arguments["x-queue-type"],
            }
        queues[name] = queue
    return list(queues.values())


def _guard_amqp_helper(app) -> None:
    """Give the app's AMQP helper our connection and producer pool, created or not yet."""
    current = app.amqp_cls if isinstance(app.amqp_cls, type) else type(app.amqp)
    if not issubclass(current, GuardedAMQP):
        app.amqp_cls = type(f"Guarded{current.__name__}", (GuardedAMQP, current), {})
    if "amqp" in app.__dict__ and not isinstance(app.amqp, GuardedAMQP):
        amqp = app.amqp
        amqp.__class__ = app.amqp_cls
        # Re-read task_queues, route and publish through ours; the protocols are bound
        # methods taken in __init__, so bind them again to the new class.
        for cached in ("queues", "router", "send_task_message", "create_task_message"):
            amqp.__dict__.pop(cached, None)
        amqp.task_protocols = {version: getattr(amqp, build.__name__, build)
                               for version, build in amqp.task_protocols.items()}


def _names(queues: list[str]) -> str:
    return ", ".join(repr(q) for q in queues)
