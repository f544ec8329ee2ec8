"""Prometheus counters of admissions, when ``prometheus-client`` is installed.

Install the ``prometheus`` extra (``pip install 'celery-floodgate[prometheus]'``) and
every guarded publish counts into ``floodgate_accepted_total`` or
``floodgate_refused_total``, labelled by queue, in prometheus-client's default
registry. Without it the guard counts only into its meter (``queue_stats``).

The counters are created (and prometheus-client imported) on first use: the first
count, or the first import of ``ACCEPTED``/``REFUSED``; importing the package costs
nothing.
"""
from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["ACCEPTED", "REFUSED", "counter"]


class Child(Protocol):
    """One labelled counter: what `counter` returns."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` to the count."""


class _Metric(Protocol):
    def labels(self, *labelvalues: str) -> Child: ...


class _NoCount:
    def inc(self, amount: float = 1) -> None:
        """Count nothing: prometheus-client is not installed."""


ACCEPTED: _Metric | None
"""``floodgate_accepted_total{queue}``, a prometheus-client ``Counter``; None without the extra."""
REFUSED: _Metric | None
"""``floodgate_refused_total{queue}``, a prometheus-client ``Counter``; None without the extra."""

_created: tuple[_Metric | None, _Metric | None] | None = None
_lock = threading.Lock()


def _counters() -> tuple[_Metric | None, _Metric | None]:
    """(ACCEPTED, REFUSED), created once per process (the default registry refuses twice)."""
    global _created
    if _created is None:
        with _lock:
            if _created is None:
                _created = _create()
    return _created


def _create() -> tuple[_Metric | None, _Metric | None]:
    try:
        from prometheus_client import Counter
    except ImportError:  # the extra is not installed
        return None, None
    return (Counter("floodgate_accepted", "Submissions admitted to a queue", ["queue"]),
            Counter("floodgate_refused", "Submissions refused because a queue was full",
                    ["queue"]))


def __getattr__(name: str) -> _Metric | None:
    """``ACCEPTED`` and ``REFUSED``, created on first access."""
    if name == "ACCEPTED":
        return _counters()[0]
    if name == "REFUSED":
        return _counters()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def counter(outcome: str, queue: str) -> Child:
    """The counter child of one outcome of one queue (a no-op without prometheus-client).

    :param outcome: ``"accepted"``, or anything else for refused.
    :param queue: the queue label.
    :returns: an object whose ``inc()`` counts one submission.
    """
    accepted, refused = _counters()
    metric = accepted if outcome == "accepted" else refused
    return _NoCount() if metric is None else metric.labels(queue)
