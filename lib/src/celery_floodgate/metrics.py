"""Prometheus counters of admissions, when ``prometheus-client`` is installed.

Install the ``prometheus`` extra (``pip install 'celery-floodgate[prometheus]'``) and
every guarded publish counts into ``floodgate_accepted_total`` or
``floodgate_refused_total``, labelled by queue, in prometheus-client's default
registry. Without it the guard counts only into its meter (``queue_stats``).
"""
from __future__ import annotations

from typing import Any, Protocol

__all__ = ["ACCEPTED", "REFUSED", "counter"]


class _Child(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _NoCount:
    def inc(self, amount: float = 1) -> None:
        """Count nothing: prometheus-client is not installed."""


ACCEPTED: Any
REFUSED: Any
try:
    from prometheus_client import Counter
except ImportError:  # the extra is not installed
    ACCEPTED = REFUSED = None
else:
    ACCEPTED = Counter("floodgate_accepted", "Submissions admitted to a queue", ["queue"])
    REFUSED = Counter("floodgate_refused", "Submissions refused because a queue was full",
                      ["queue"])


def counter(outcome: str, queue: str) -> _Child:
    """The counter child for ``outcome`` ("accepted" or "refused") of ``queue``."""
    metric = ACCEPTED if outcome == "accepted" else REFUSED
    return _NoCount() if metric is None else metric.labels(queue)
