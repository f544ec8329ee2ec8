"""What install() sets on an app, set again whenever the app's configuration is loaded.

Celery reads an app's configuration lazily and reads it *again*, from scratch, when
``config_from_object`` is called on an app already configured: whatever install()
had set (the guarded ``broker_transport``, its transport options, the bounded
``task_queues``) is gone, and every submission would be accepted. So install()
records its settings in a `Binding`, which applies them now (or, on an app
with no configuration yet, when it gets one) and again on every
``app.on_after_configure``. Every connection the app opens (`BoundAMQP`)
is checked against the binding: a broker set after install() by assignment
(``app.conf.broker_url = ...``), which no signal announces, is refused with
NotInstalled rather than used unguarded.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from kombu import Exchange, Queue
from kombu.connection import Connection, ConnectionPool

try:  # kombu 5.5+: pools make PooledConnection; before, they clone() (keeping our class)
    from kombu.connection import PooledConnection
except ImportError:
    PooledConnection = None

from celery_floodgate.errors import NotInstalled
from celery_floodgate.guard import Guard
from celery_floodgate.limits import MAX_LENGTH, Limit
from celery_floodgate.redis_client import master_name_of
from celery_floodgate.transports import GUARD_OPTION
from celery_floodgate.transports.producers import GuardedConnection
from celery_floodgate.transports.urls import (
    GUARDED,
    KINDS,
    SENTINEL,
    BrokerUrl,
    guarded_transport,
    scheme_of,
    unguarded_scheme,
    urls_of,
)

log = logging.getLogger("celery_floodgate")
ATTRIBUTE = "_floodgate_binding"
ORDER_HINT = ("configure the app first (config_from_object, conf.update, broker_url=...) and "
              "call install() last; a configuration loaded again by config_from_object is "
              "followed, one assigned to app.conf after install() is not")


class Binding:
    """One app's guard settings: applied by `apply`, checked by `check`."""

    def __init__(self, guard: Guard, limits: dict[str, Limit], meter_url: str | None,
                 unbounded: frozenset[str], allow_unguarded: frozenset[str],
                 queue_arguments: dict[str, Any]) -> None:
        self.guard, self.limits, self.meter_url = guard, limits, meter_url
        self.unbounded, self.allow_unguarded = unbounded, allow_unguarded
        self.queue_arguments = queue_arguments
        #: Why the configuration loaded last could not be guarded; raised on connecting.
        self.error: NotInstalled | None = None

    def apply(self, app: Any) -> None:
        """Guard the app's current configuration, or raise NotInstalled and change nothing."""
        conf = app.conf
        transport = self._transport_for(conf.broker_write_url, conf.broker_read_url)
        kind = KINDS[transport] if transport else unguarded_scheme(conf.broker_write_url) or ""
        meter_url = self.meter_url or (_redis_url(conf.broker_write_url) if kind == "redis" else None)
        meter_options = _meter_options(conf, meter_url)
        check_fits(app, self.limits, kind, meter_url, self.unbounded)
        if transport == SENTINEL or scheme_of(meter_url) == "sentinel":
            _check_master_name(conf, meter_url)
        self.guard.broker_kind = kind
        self.guard.meter.point_at(meter_url, meter_options)
        if self.guard.fairness is not None:
            self.guard.tenancy = tenancy_for(kind, app, self.guard)
        if transport:
            conf.broker_transport = transport
        else:
            log.warning("install(): the broker %s:// is not guarded (allow_unguarded): "
                        "nothing bounds %s, every submission is accepted",
                        kind, _names(sorted(self.limits)))
        conf.broker_transport_options = {
            **(conf.broker_transport_options or {}), GUARD_OPTION: self.guard.id,
            **({"confirm_publish": True} if kind == "amqp" else {}),
        }
        conf.task_queues = declared_queues(conf, self.limits, kind, self.queue_arguments)
        _forget_queues(app)
        self.error = None

    def reapply(self, app: Any) -> None:
        """`apply` after the app's configuration was loaded (again); a refusal is
        kept and raised by the app's next connection (a signal cannot raise)."""
        try:
            self.apply(app)
        except NotInstalled as exc:
            self.error = exc
            log.error("%s; every connection of app %r will raise it", exc, app.main)

    def check(self, url: BrokerUrl, transport: Any, options: Mapping[str, Any] | None) -> None:
        """Raise NotInstalled unless a connection with these settings is guarded (or
        unguarded by the app's own opt-out)."""
        if self.error is not None:
            raise self.error
        try:
            expected = guarded_transport(url)
        except ValueError as exc:
            raise NotInstalled(str(exc)) from None
        if expected is None:
            scheme = unguarded_scheme(url) or ""
            if scheme in self.allow_unguarded:
                return
            raise NotInstalled(f"{unguardable(scheme)}; the app's broker changed after "
                               f"install(): {ORDER_HINT}")
        if transport != expected or (options or {}).get(GUARD_OPTION) != self.guard.id:
            raise NotInstalled(
                f"the app connects to {schemes(url)} through {transport or 'kombu'!r}, not the "
                f"guarded {expected!r}: its broker settings changed after install(); "
                + ORDER_HINT)

    def _transport_for(self, write_url: BrokerUrl, read_url: BrokerUrl) -> str | None:
        """The guarded transport for the app's broker; None if it is opted out."""
        try:
            write, read = guarded_transport(write_url), guarded_transport(read_url)
        except ValueError as exc:
            raise NotInstalled(str(exc)) from None
        if write and write == read:
            return write
        if write and read:
            raise NotInstalled(f"broker_read_url ({schemes(read_url)}) and broker_write_url "
                               f"({schemes(write_url)}) need different transports, and an app "
                               "has one broker_transport: use one kind of URL for both")
        scheme = unguarded_scheme(write_url) or unguarded_scheme(read_url) or ""
        if scheme in self.allow_unguarded and not (write or read):
            return None
        raise NotInstalled(unguardable(scheme))


def unguardable(scheme: str) -> str:
    """The refusal of a broker install() cannot guard, naming the opt-out."""
    guarded = ", ".join(f"{s}://" for s in GUARDED)
    return (f"the broker {scheme}:// cannot be guarded (install() guards {guarded}), so "
            "nothing would bound its queues; use one of those brokers, or pass "
            f"allow_unguarded=({scheme!r},) to install() to run unbounded on purpose")


def schemes(url: BrokerUrl) -> str:
    """The URL's schemes, for a sentence (never its host or password)."""
    found = [scheme_of(u) or "amqp" for u in urls_of(url)] or ["amqp"]
    return ";".join(f"{s}://" for s in dict.fromkeys(found))


def bind(app: Any, binding: Binding) -> None:
    """Keep ``binding`` on ``app`` and apply it whenever the app's configuration loads."""
    setattr(app, ATTRIBUTE, binding)
    app.on_after_configure.connect(_configured, weak=False, dispatch_uid="celery_floodgate")


def binding_of(app: Any) -> Binding | None:
    """The binding install() left on ``app``, or None."""
    found: Binding | None = getattr(app, ATTRIBUTE, None)
    return found


def has_configuration(app: Any) -> bool:
    """Whether the app was given any configuration yet: loaded, a source, or settings."""
    given = set(app._preconf) - {"deprecated_settings"}
    return bool(app.configured or app._config_source is not None or given
                or app._pending_defaults)


def _configured(sender: Any = None, **_: Any) -> None:
    binding = binding_of(sender)
    if binding is not None:
        binding.reapply(sender)


def _redis_url(url: BrokerUrl) -> str:
    """The Redis a meter that follows the broker uses: every sentinel of a sentinel://
    list (they name one master), else the first URL of a failover list."""
    urls = urls_of(url)
    return ";".join(urls) if scheme_of(urls[0]) == "sentinel" else urls[0]


def _meter_options(conf: Any, meter_url: str | None) -> dict[str, Any]:
    """What the meter's Redis client needs beyond its URL: the Sentinel master's name,
    and the broker's TLS settings when the meter is the broker."""
    options = conf.broker_transport_options or {}
    found = {k: options[k] for k in ("master_name", "sentinel_kwargs") if k in options}
    if meter_url and set(urls_of(meter_url)) <= set(urls_of(conf.broker_write_url)) \
            and conf.broker_use_ssl:
        found["ssl"] = conf.broker_use_ssl
    return found


def _check_master_name(conf: Any, meter_url: str | None) -> None:
    options = conf.broker_transport_options or {}
    url = meter_url if scheme_of(meter_url) == "sentinel" else None
    if not options.get("master_name") and not (url and master_name_of(url, options)):
        raise NotInstalled("a sentinel:// broker or meter needs the master's name: "
                           "broker_transport_options={'master_name': ...}")


def _forget_queues(app: Any) -> None:
    """Make an AMQP helper already created read task_queues again."""
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        for cached in ("queues", "router"):
            amqp.__dict__.pop(cached, None)


class BoundConnection(GuardedConnection):
    """Keeps the guarded transport wherever kombu would put its own back.

    kombu replaces a connection's transport by the URL's own when it fails over to
    the next URL of a list (``switch``) and when a URL names it before a ``+``
    (``redis+socket://``), and its pools make plain connections. Each such URL gets
    the guarded transport for its scheme, after kombu's own handling of that scheme
    (rediss:// without TLS options, say), and its pools make bound connections.
    """

    def __init__(self, hostname: Any = "localhost", *args: Any, transport: Any = None,
                 **kwargs: Any) -> None:
        self._fg_guarded = transport if transport in KINDS else None
        first = urls_of(hostname)[:1] if isinstance(hostname, (str, list, tuple)) else []
        self._fg_scheme = scheme_of(first[0]) if first else None
        # kombu's own __init__, also under BoundPooledConnection (PooledConnection's
        # __init__ takes the pool first).
        Connection.__init__(self, hostname, *args, transport=transport, **kwargs)

    def Pool(self, limit: int | None = None, **kwargs: Any) -> ConnectionPool:
        """A pool of bound connections (kombu's makes plain ones)."""
        if PooledConnection is None:  # kombu < 5.5: its pool clones this connection
            return super().Pool(limit=limit, **kwargs)
        return BoundConnectionPool(self, limit=limit, **kwargs)

    def _init_params(self, **params: Any) -> None:
        scheme = params.get("transport")
        if self._fg_guarded is None or scheme is None:
            return super()._init_params(**params)  # type: ignore[no-any-return]
        if scheme == self._fg_guarded:  # kombu kept ours; the URL names the scheme
            scheme = self._fg_scheme
        guarded = GUARDED.get(scheme or "")
        if guarded is None or KINDS[guarded] != KINDS[self._fg_guarded]:
            return super()._init_params(**params)  # type: ignore[no-any-return]
        super()._init_params(**{**params, "transport": scheme})
        self.transport_cls = guarded


class BoundPooledConnection(BoundConnection, PooledConnection or Connection):  # type: ignore[misc]
    """kombu's pooled connection (replaced in its pool after an error), bound."""

    def __init__(self, pool: ConnectionPool, **kwargs: Any) -> None:
        self._pool = pool
        BoundConnection.__init__(self, **kwargs)


class BoundConnectionPool(ConnectionPool):  # type: ignore[misc]
    """kombu's connection pool, of `BoundPooledConnection`."""

    def new(self) -> BoundPooledConnection:
        """A connection as the pool's own, from its settings (kombu's ``new``)."""
        return BoundPooledConnection(self, **dict(self.connection._info(resolve=False)))


class BoundAMQP:
    """Mixed into the app's AMQP helper by install(): every connection the app opens
    is checked against its binding first."""

    app: Any

    def Connection(self, hostname: Any = None, *args: Any, transport: Any = None,
                   transport_options: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> BoundConnection:
        """The app's connection (Celery's ``app.connection_for_write/read``), if guarded."""
        binding = binding_of(self.app)
        if binding is not None:
            binding.check(hostname, transport, transport_options)
        return BoundConnection(hostname, *args, transport=transport,
                               transport_options=transport_options, **kwargs)

    BrokerConnection = Connection


def check_fits(app: Any, limits: dict[str, Limit], kind: str, meter_url: str | None,
               unbounded: frozenset[str]) -> None:
    """Raise NotInstalled unless the limits fit the app's routes and broker."""
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


def routed_queues(app: Any) -> tuple[set[str], str]:
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


def _queue_of(route: Any) -> str | None:
    if isinstance(route, str):
        return route
    if isinstance(route, Mapping):
        queue = route.get("queue")
        return getattr(queue, "name", queue)
    return None


def rabbitmq_arguments(queue_type: str, queue_version: int | None) -> dict[str, Any]:
    """Queue arguments beside the limit: quorum queues refuse ``x-queue-version``."""
    arguments: dict[str, Any] = {"x-queue-type": queue_type}
    if queue_type == "classic" and queue_version is not None:
        arguments["x-queue-version"] = queue_version
    return arguments


def declared_queues(conf: Any, limits: dict[str, Limit], kind: str,
                    arguments: dict[str, Any]) -> list[Any]:
    """The app's queues with every limited one declared durable, and bounded on RabbitMQ
    (``arguments`` first, so an app's own x-queue-version wins; the limit last)."""
    queues: dict[str, Any] = {q.name: q for q in conf.task_queues or ()}
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


def _names(queues: list[str]) -> str:
    return ", ".join(repr(q) for q in queues)


def tenancy_for(kind: str, app: Any, guard: Any) -> Any:
    """Where ``guard`` counts each tenant's holding: the lists themselves on Redis
    (`celery_floodgate.transports.redis_fair`), the meter elsewhere (`celery_floodgate.tenants`)."""
    if kind == "redis":
        from celery_floodgate.transports.redis_fair import RedisHeld

        return RedisHeld(app, guard)
    from celery_floodgate.tenants import MeterTenancy

    return MeterTenancy(guard)
