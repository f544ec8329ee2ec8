"""Prometheus counters of admissions, when ``prometheus-client`` is installed.

Install the ``prometheus`` extra (``pip install 'celery-floodgate[prometheus]'``) and
every guarded publish counts into ``floodgate_accepted_total`` or
``floodgate_refused_total``, labelled by queue, in prometheus-client's default
registry. Without it the guard counts only into its meter (``queue_stats``).

With a fairness policy the guard also counts each fair submission into
``floodgate_tenant_submissions_total{queue, tenant, criticality, outcome}``. Its
tenant label is bounded so a million tenants cannot make a million series: each
process labels the first `TOP_TENANTS` tenants it sees (or that `reserve_tenants`
names, such as the weighted ones) by name and every later one as `OTHER`. A
counter's label can never move to another tenant (its count would jump), so the
set only grows, and stops at `TOP_TENANTS`.

The counters are created (and prometheus-client imported) on first use: the first
count, or the first import of ``ACCEPTED``/``REFUSED``; importing the package costs
nothing.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from celery_floodgate.fairness import CLASSES

__all__ = ["ACCEPTED", "OTHER", "REFUSED", "TENANT_SUBMISSIONS", "TOP_TENANTS", "counter",
           "reserve_tenants", "tenant_counter", "tenant_label"]

TOP_TENANTS = 20
"""The most tenants one process labels by name; the rest are counted as `OTHER`."""
OTHER = "other"
"""The tenant label of every tenant past the first `TOP_TENANTS`."""
_MAX_CHILDREN = 4096  # queues x outcomes x (TOP_TENANTS + 1) x classes, with room to spare


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

TENANT_SUBMISSIONS: _Metric | None
"""``floodgate_tenant_submissions_total{queue, tenant, criticality, outcome}``, a
prometheus-client ``Counter``; None without the extra."""

_created: tuple[_Metric | None, _Metric | None] | None = None
_tenant_created: list[_Metric | None] = []
_lock = threading.Lock()
_labelled: set[str] = set()  # the tenants labelled by name, at most TOP_TENANTS
_children: dict[tuple[str, str, str, str], Child] = {}


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
    if name == "TENANT_SUBMISSIONS":
        return _tenant_metric()
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


def _tenant_metric() -> _Metric | None:
    if not _tenant_created:
        with _lock:
            if not _tenant_created:
                _tenant_created.append(_create_tenant_metric())
    return _tenant_created[0]


def _create_tenant_metric() -> _Metric | None:
    try:
        from prometheus_client import Counter
    except ImportError:  # the extra is not installed
        return None
    return Counter("floodgate_tenant_submissions",
                   "Fair submissions per tenant (the top tenants, else 'other') and class",
                   ["queue", "tenant", "criticality", "outcome"])


def reserve_tenants(tenants: Iterable[str]) -> None:
    """Label these tenants by name (for example the ones with a configured weight),
    while fewer than `TOP_TENANTS` are labelled; call it before the first count.

    :param tenants: tenant names, most important first.
    """
    with _lock:
        for tenant in tenants:
            if len(_labelled) >= TOP_TENANTS:
                return
            _labelled.add(tenant)


def tenant_label(tenant: str) -> str:
    """The label ``tenant`` is counted under in this process: its own name if it is
    among the first `TOP_TENANTS` tenants seen (or reserved), else `OTHER`.

    :param tenant: the submission's tenant.
    :returns: ``tenant`` or `OTHER`; at most ``TOP_TENANTS + 1`` distinct values ever.
    """
    if tenant in _labelled:
        return tenant
    if len(_labelled) >= TOP_TENANTS:
        return OTHER  # full: no lock on the path of the many
    with _lock:
        if tenant in _labelled:
            return tenant
        if len(_labelled) < TOP_TENANTS and tenant != OTHER:
            _labelled.add(tenant)
            return tenant
    return OTHER


def tenant_counter(outcome: str, queue: str, tenant: str, criticality: str) -> Child:
    """The per-tenant counter child of one fair submission (a no-op without
    prometheus-client); the tenant label is bounded by `tenant_label`.

    :param outcome: ``"accepted"``, or anything else for refused.
    :param queue: the queue label.
    :param tenant: the submission's tenant.
    :param criticality: its class; one outside the known three is labelled `OTHER`.
    :returns: an object whose ``inc()`` counts one submission.
    """
    outcome = "accepted" if outcome == "accepted" else "refused"
    criticality = criticality if criticality in CLASSES else OTHER
    cache_key = (queue, outcome, tenant_label(tenant), criticality)
    child = _children.get(cache_key)
    if child is None:
        metric = _tenant_metric()
        child = _NoCount() if metric is None else metric.labels(
            queue, cache_key[2], criticality, outcome)
        if len(_children) < _MAX_CHILDREN:
            _children[cache_key] = child
    return child
