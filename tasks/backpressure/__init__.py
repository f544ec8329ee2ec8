"""Back pressure for any Celery app: bounded queues that refuse at once, and say when to retry.

    from celery import Celery
    from tasks.backpressure import install, QueueFull

    app = Celery("shop", broker="redis://…")
    install(app, limits={"emails": 500, "reports": "30s"}, meter_url="redis://…")

Importing this package changes nothing: no settings, no environment, no kombu
alias, no current app. :func:`install` changes one app.
"""
from tasks.backpressure.batch import BatchResult, submit_many
from tasks.backpressure.client import ServerBusy, call_with_backoff, post_with_backoff
from tasks.backpressure.errors import (
    BackpressureError,
    BrokerUnavailable,
    EtaTooFar,
    NotInstalled,
    QueueFull,
    Refused,
)
from tasks.backpressure.guard import Guard
from tasks.backpressure.install import broker_kind, install
from tasks.backpressure.limits import Limit, parse_limits
from tasks.backpressure.stats import guard_for, queue_stats

__all__ = (
    "BackpressureError",
    "BatchResult",
    "BrokerUnavailable",
    "EtaTooFar",
    "Guard",
    "Limit",
    "NotInstalled",
    "QueueFull",
    "Refused",
    "ServerBusy",
    "broker_kind",
    "call_with_backoff",
    "guard_for",
    "install",
    "parse_limits",
    "post_with_backoff",
    "queue_stats",
    "submit_many",
)
