"""Back pressure for any Celery app: bounded queues that refuse at once, and say when to retry.

    from celery import Celery
    from celery_floodgate import install, QueueFull

    app = Celery("shop", broker="redis://…")
    install(app, limits={"emails": 500, "reports": "30s"})

Importing this package changes nothing: no settings, no environment, no kombu
alias, no current app. :func:`install` changes one app.

Everything a program needs is importable from here (``__all__``):

* :func:`install` bounds an app's queues and returns its :class:`Guard`, which
  :func:`guard_for` finds again; :func:`broker_kind` names a broker URL's kind;
  :func:`passive_queues` uses queues without declaring them.
* :class:`Limit`, :func:`parse_limit`, :func:`parse_limits`: the limits it takes.
* The errors: :class:`BackpressureError` and below it :class:`Refused`
  (:class:`QueueFull`, :class:`EtaTooFar`), :class:`BrokerUnavailable`,
  :class:`NotInstalled`.
* :func:`submit_many` and its :class:`BatchResult`: many submissions at once.
* :func:`queue_stats`, :func:`recent_counts`: live figures for a status page.

Optional parts, each behind an extra:

* :mod:`celery_floodgate.client` (``[client]``): ``call_with_backoff`` and
  ``post_with_backoff``, retrying refusals with jittered exponential backoff.
* :mod:`celery_floodgate.metrics` (``[prometheus]``): Prometheus counters.
* SQS (``[sqs]``): kombu's SQS transport, guarded.
"""
from importlib.metadata import PackageNotFoundError, version

from celery_floodgate.batch import BatchResult, submit_many
from celery_floodgate.declare import passive_queues
from celery_floodgate.errors import (
    BackpressureError,
    BrokerUnavailable,
    EtaTooFar,
    NotInstalled,
    QueueFull,
    Refused,
)
from celery_floodgate.guard import Guard
from celery_floodgate.install import broker_kind, install
from celery_floodgate.limits import Limit, parse_limit, parse_limits
from celery_floodgate.stats import guard_for, queue_stats
from celery_floodgate.submits import recent_counts

try:
    __version__ = version("celery-floodgate")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BackpressureError",
    "BatchResult",
    "BrokerUnavailable",
    "EtaTooFar",
    "Guard",
    "Limit",
    "NotInstalled",
    "QueueFull",
    "Refused",
    "__version__",
    "broker_kind",
    "guard_for",
    "install",
    "parse_limit",
    "parse_limits",
    "passive_queues",
    "queue_stats",
    "recent_counts",
    "submit_many",
]
