"""Back pressure for any Celery app: bounded queues that refuse at once, and say when to retry.

    from celery import Celery
    from celery_floodgate import install, QueueFull

    app = Celery("shop", broker="redis://…")
    install(app, limits={"emails": 500, "reports": "30s"})

Importing this package changes nothing: no settings, no environment, no kombu
alias, no current app. `install` changes one app.

Everything a program needs is importable from here (``__all__``):

* `install` bounds an app's queues and returns its `Guard`, which
  `guard_for` finds again; `broker_kind` names a broker URL's kind;
  `passive_queues` uses queues without declaring them.
* `Limit`, `parse_limit`, `parse_limits`: the limits it takes.
* The errors: `BackpressureError` and below it `Refused`
  (`QueueFull`, `EtaTooFar`), `BrokerUnavailable`,
  `NotInstalled`.
* `submit_many` and its `BatchResult`: many submissions at once.
* `Fairness` (``install(..., fairness=Fairness())``) and `submitting_as`: each
  queue shared fairly among tenants, and shed by criticality class.
* `queue_stats`, `recent_counts`: live figures for a status page.

Optional parts, each behind an extra:

* `celery_floodgate.client` (``[client]``): ``call_with_backoff`` and
  ``post_with_backoff``, retrying refusals with jittered exponential backoff.
* `celery_floodgate.metrics` (``[prometheus]``): Prometheus counters.
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
from celery_floodgate.fairness import Fairness, submitting_as
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
    "Fairness",
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
    "submitting_as",
]
