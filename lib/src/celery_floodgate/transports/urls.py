"""Which guarded transport serves a broker URL: the one table install() reads.

kombu picks a transport from the URL's scheme (``kombu.transport.TRANSPORT_ALIASES``;
``redis+socket://`` names the transport before the ``+``). Every scheme kombu
accepts for Redis, RabbitMQ and SQS has a guarded transport here; any other
scheme (memory://, filesystem://, ...) has none, and install() refuses it.
"""
from __future__ import annotations

from collections.abc import Sequence

REDIS = "celery_floodgate.transports.redis:Transport"
SENTINEL = "celery_floodgate.transports.sentinel:Transport"
AMQP = "celery_floodgate.transports.amqp:Transport"
AMQPS = "celery_floodgate.transports.amqps:Transport"
SQS = "celery_floodgate.transports.sqs:Transport"

#: kombu's scheme (lower case) -> the guarded transport that serves it.
GUARDED = {
    "redis": REDIS,
    "rediss": REDIS,
    "redis+socket": REDIS,
    "sentinel": SENTINEL,
    "amqp": AMQP,
    "pyamqp": AMQP,
    "amqps": AMQPS,
    "sqs": SQS,
}
#: Each guarded transport's broker family ('redis', 'amqp', 'sqs').
KINDS = {REDIS: "redis", SENTINEL: "redis", AMQP: "amqp", AMQPS: "amqp", SQS: "sqs"}
#: The scheme a URL of each guarded transport is written with (worker banner, Flower).
SCHEMES = {REDIS: "redis", SENTINEL: "sentinel", AMQP: "amqp", AMQPS: "amqps", SQS: "sqs"}
#: What Celery connects to when the app names no broker: amqp://guest@localhost//.
DEFAULT_SCHEME = "amqp"

BrokerUrl = str | Sequence[str] | None


def urls_of(url: BrokerUrl) -> list[str]:
    """The URLs of a broker setting: one URL, a ``;``-separated failover list, or a list."""
    if url is None:
        return []
    parts = [url] if isinstance(url, str) else list(url)
    return [u.strip() for part in parts for u in part.split(";") if u.strip()]


def scheme_of(url: str | None) -> str | None:
    """kombu's scheme of one URL, lower case (``redis+socket`` whole); None without one."""
    if not url or "://" not in url:
        return None
    return url.partition("://")[0].lower()


def schemes_of(url: BrokerUrl) -> list[str]:
    """The scheme of each URL of a broker setting; Celery's default (amqp) if it names none."""
    found = [scheme_of(u) for u in urls_of(url)]
    return [s or DEFAULT_SCHEME for s in found] or [DEFAULT_SCHEME]


def guarded_transport(url: BrokerUrl) -> str | None:
    """The guarded transport for every URL of ``url``; None if a scheme has none.

    Raises ValueError, with a sentence, for a failover list that mixes broker families
    (one transport serves the whole list).
    """
    schemes = schemes_of(url)
    transports = [GUARDED.get(s) for s in schemes]
    if None in transports:
        return None
    kinds = sorted({KINDS[t] for t in transports if t})
    if len(kinds) > 1:
        raise ValueError(f"the failover list mixes {' and '.join(kinds)} brokers "
                         f"({', '.join(s + '://' for s in schemes)}); one transport serves "
                         "the whole list: list brokers of one kind")
    return transports[0]


def unguarded_scheme(url: BrokerUrl) -> str | None:
    """The first scheme of ``url`` no guarded transport serves; None if all are served."""
    return next((s for s in schemes_of(url) if s not in GUARDED), None)
