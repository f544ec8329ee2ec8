"""``install(app, limits, meter_url)``: bounded queues for one Celery app.

Everything is set on *that* app: its ``broker_transport`` (the guarded one),
its transport options (which name its guard), its queue declarations (RabbitMQ's
``x-max-length`` and ``reject-publish``), its AMQP helper (connections and a
producer pool that survive refusals) and receivers that act for its workers only.
Nothing global changes: another app in the process is unaffected.

Which brokers: every URL kombu accepts for Redis, RabbitMQ and SQS
(`celery_floodgate.transports.urls`); any other is refused unless named in
``allow_unguarded``. When: the settings are kept (`celery_floodgate.binding`)
and applied again each time the app's configuration is loaded.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery_floodgate.binding import (
    Binding,
    BoundAMQP,
    bind,
    has_configuration,
    rabbitmq_arguments,
)
from celery_floodgate import compat
from celery_floodgate.errors import NotInstalled
from celery_floodgate.fairness import Fairness
from celery_floodgate.guard import Guard
from celery_floodgate.limits import Keys, parse_limits
from celery_floodgate.meter import Meter
from celery_floodgate.transports.producers import GuardedAMQP
from celery_floodgate.transports.urls import GUARDED, KINDS, schemes_of
from celery_floodgate import results, worker


def broker_kind(url: str | None) -> str:
    """'redis', 'amqp', 'sqs', or the URL's own scheme: the one place that tells brokers apart.

    redis://, rediss://, redis+socket:// and sentinel:// are 'redis'; amqp://, amqps://
    and pyamqp:// 'amqp'; a failover list is its first URL's; no URL is Celery's
    default broker, amqp://guest@localhost//.
    """
    scheme = schemes_of(url)[0]
    transport = GUARDED.get(scheme)
    return KINDS[transport] if transport else scheme


def install(app: Any, limits: Mapping[str, int | str] | str, meter_url: str | None = None, *,
            unbounded: Iterable[str] = (), key_prefix: str | None = None,
            rabbitmq_queue_type: str = "classic", rabbitmq_queue_version: int | None = 2,
            publish_timeout_s: float = 1.0, max_countdown_s: float | None = None,
            rerunnable_chords: bool = True, allow_unguarded: Iterable[str] = (),
            fairness: Fairness | None = None) -> Guard:
    """Bound every queue in ``limits`` (``{"emails": 500, "reports": "30s"}``).

    ``meter_url``: a Redis where workers record drain rates (Retry-After, wait
    limits, prefetch windows); defaults to a Redis broker. ``unbounded``: queues
    the app routes to that are meant to have no limit. Call it once, before the
    app sends or consumes anything. Raises NotInstalled with a sentence.

    Brokers: redis://, rediss:// (TLS: the URL's ``ssl_*`` query or ``broker_use_ssl``),
    redis+socket://, sentinel:// (``broker_transport_options={"master_name": ...}``;
    admission runs on the master the sentinels name), amqp://, amqps://, pyamqp://,
    sqs://, and failover lists of one kind (``"amqp://a;amqp://b"`` or a list). An app
    with no broker_url uses Celery's default, amqp://guest@localhost//, and is guarded
    as RabbitMQ. Any other broker (memory://, filesystem://, ...) is refused, since
    nothing would bound it, unless its scheme is named in ``allow_unguarded``
    (``allow_unguarded=("memory",)`` for tests): then nothing is bounded, every
    submission is accepted, and install() logs a warning saying so.

    Order: call install() after the app's configuration is set. On an app with no
    configuration at all yet (a bare ``Celery("x")``) the guard is bound when its
    configuration is first loaded, and it is bound again each time
    ``config_from_object`` loads it anew. A broker set by assigning ``app.conf``
    after install() (``app.conf.broker_url = ...``) is not followed: the app's next
    connection (its first submission, its worker's start) raises NotInstalled.
    A meter that follows a Redis broker follows the first URL of a failover list
    (all of a sentinel:// list).

    ``rabbitmq_queue_version``: classic queues are declared with ``x-queue-version``
    2 (None: the broker's default, version 1 before RabbitMQ 4.0). Version 2 confirms
    a persistent message after writing it to disk, as version 1 does, at about 0.6x
    the latency (bench/RESULTS.md, finding 12). A queue that already exists with
    another version must keep it: RabbitMQ refuses the redeclaration (406).

    ``fairness``: share each queue fairly among tenants, and shed by criticality class
    (`celery_floodgate.fairness`: ``Fairness(weights={"acme": 2})``); None admits
    first come, first served.

    ``rerunnable_chords``: when the app's results are in Celery's Redis backend
    (now, or set after this call), a frozen chord applied again runs its body again
    (`celery_floodgate.results`: one Redis DEL per chord application, nothing
    per task). False leaves the backend as Celery makes it.

    Lifetime: the app holds its guard, its signal receivers and flush threads, and
    nothing global holds them: they go when the app is garbage-collected.

    Other processes of the same app on RabbitMQ: the bounded queues are declared
    with ``x-max-length``, and RabbitMQ refuses any other declaration of them. A
    process that does not call install() (a worker started from a script, another
    service) fails on its first publish or at worker start with ``406
    PRECONDITION_FAILED - inequivalent arg 'x-max-length'``. Call install() there
    with the same limits, or `celery_floodgate.passive_queues` to use the
    queues without declaring them (unguarded: see `celery_floodgate.declare`).
    """
    compat.require_supported()
    try:
        parsed = parse_limits(limits)
    except ValueError as exc:
        raise NotInstalled(str(exc)) from None
    guard = Guard(parsed, Meter(meter_url, Keys(key_prefix or f"backpressure:{app.main}")),
                  "amqp", publish_timeout_s, max_countdown_s, fairness)
    binding = Binding(guard, parsed, meter_url, frozenset(unbounded),
                      frozenset(allow_unguarded),
                      rabbitmq_arguments(rabbitmq_queue_type, rabbitmq_queue_version))
    if has_configuration(app):
        binding.apply(app)  # else: when the app's configuration is first loaded
    bind(app, binding)
    _guard_amqp_helper(app)
    worker.connect(app, guard, frozenset(unbounded))
    guard.attach(app)  # the app keeps its guard alive; nothing global does
    if rerunnable_chords:
        results.rerunnable_chords(app)
    return guard


def _guard_amqp_helper(app: Any) -> None:
    """Give the app's AMQP helper our connection and producer pool, created or not yet."""
    current = app.amqp_cls if isinstance(app.amqp_cls, type) else type(app.amqp)
    if not issubclass(current, BoundAMQP):
        bases = (BoundAMQP, current) if issubclass(current, GuardedAMQP) else (
            BoundAMQP, GuardedAMQP, current)
        app.amqp_cls = type(f"Guarded{current.__name__}", bases, {})
    if "amqp" in app.__dict__ and not isinstance(app.amqp, BoundAMQP):
        amqp = app.amqp
        amqp.__class__ = app.amqp_cls
        # Re-read task_queues, route and publish through ours; the protocols are bound
        # methods taken in __init__, so bind them again to the new class.
        for cached in ("queues", "router", "send_task_message", "create_task_message"):
            amqp.__dict__.pop(cached, None)
        amqp.task_protocols = {version: getattr(amqp, build.__name__, build)
                               for version, build in amqp.task_protocols.items()}
