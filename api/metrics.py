"""Prometheus metrics: the guard's counters plus live per-queue and per-job gauges.

Two kinds of figures, served together by ``GET /metrics`` (:data:`METRICS_REGISTRY`):

* **Counters** (``floodgate_accepted_total``, ``floodgate_refused_total``), incremented
  by whichever process submits. With several API processes (``uvicorn --workers N``)
  each process counts only its own submissions, so when ``PROMETHEUS_MULTIPROC_DIR``
  is set prometheus-client's multiprocess mode keeps every process's values in files
  in that directory and :class:`~prometheus_client.multiprocess.MultiProcessCollector`
  adds them up: any process answers ``/metrics`` with the sum over all of them. The
  variable must be set before ``prometheus_client`` is first imported (it picks its
  value store at import), and the directory must be emptied when the service starts.
  Without it the default registry is served, as before.
  With fair admission the guard also counts ``floodgate_tenant_submissions_total
  {queue, tenant, criticality, outcome}``, its tenant label bounded per process
  (celery_floodgate.metrics.TOP_TENANTS names, the rest "other").
* **Live gauges**, computed when ``/metrics`` is read, by the one process that
  answers: queue depth, bound, drain rate and oldest age (:class:`QueueCollector`),
  messages waiting per tenant (:class:`TenantHeldCollector`), and recent job outcomes
  and waits from the ``jobs`` table (:class:`JobsCollector`). They are registered
  once, on the served registry, never per process.
"""
from __future__ import annotations

import logging
import math
import os
import time

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from config import app

# Everything this module takes from tasks/, in one place: nothing else here names tasks.*.
from celery_floodgate.metrics import (
    ACCEPTED,
    OTHER,
    REFUSED,
    TENANT_SUBMISSIONS,  # noqa: F401 - created here, so /metrics names it before a count
    TOP_TENANTS,
    reserve_tenants,
)
from celery_floodgate import guard_for, queue_stats
from tasks.demo.db import engine
from tasks.demo.models import jobs

log = logging.getLogger(__name__)

GAUGES = {
    "depth": ("floodgate_queue_depth", "Ready messages in the queue"),
    "limit": ("floodgate_queue_limit", "The queue's current length bound"),
    "drain_rate": ("floodgate_queue_drain_rate", "Messages per second workers take off the queue"),
    "oldest_age_s": ("floodgate_queue_oldest_age_seconds", "Age of the oldest ready message"),
}


class QueueCollector(Collector):
    def collect(self):
        stats = queue_stats(app)
        for field, (name, doc) in GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue, values in stats.items():
                if values[field] is not None:
                    family.add_metric([queue], float(values[field]))
            yield family


class TenantHeldCollector(Collector):
    """``floodgate_tenant_held{queue, tenant}``: messages waiting per tenant in each bounded
    queue, read from the guard at scrape time (Redis: exact; RabbitMQ/SQS: the meter's).

    Bounded: the TOP_TENANTS tenants holding the most are named, the rest summed as
    "other" (exported only when some tenant falls there). A gauge, not a counter, so a
    tenant may enter or leave the named set from one scrape to the next. Exports
    nothing without fair admission; a meter that does not answer leaves the queue out.
    """

    def collect(self):
        family = GaugeMetricFamily("floodgate_tenant_held",
                                   "Messages waiting in the queue per tenant (top tenants, "
                                   "else 'other')", labels=["queue", "tenant"])
        guard = guard_for(app)
        if guard is not None and guard.fairness is not None:
            for queue in guard.limits:
                try:
                    held = guard.tenant_held(queue)
                except Exception:  # noqa: BLE001 - a meter that does not answer is a reading
                    log.debug("tenant counts of %s unavailable", queue, exc_info=True)
                    continue
                for tenant, n in top_held(held, TOP_TENANTS):
                    family.add_metric([queue, tenant], float(n))
        yield family


def top_held(held: dict[str, int], top_n: int) -> list[tuple[str, int]]:
    """The ``top_n`` tenants holding the most, heaviest first, then ("other", the rest's sum)
    if any is left; a tenant actually named "other" is summed into it."""
    ranked = sorted(((n, t) for t, n in held.items() if t != OTHER), key=lambda x: (-x[0], x[1]))
    named = [(tenant, n) for n, tenant in ranked[:top_n]]
    rest = held.get(OTHER, 0) + sum(n for n, _ in ranked[top_n:])
    return named + [(OTHER, rest)] if rest or len(ranked) > top_n else named


#: The window the job gauges look back over, in seconds.
JOBS_WINDOW_S = 60.0
#: Terminal states, always exported (0 when none), so a panel shows 0, not "no data".
FINISHED_STATES = ("succeeded", "failed", "abandoned")
WAIT_QUANTILES = (0.5, 0.99)
#: At most this many of the most recent starts feed the wait quantiles (ample for a p99).
WAIT_SAMPLE = 5000


class JobsCollector(Collector):
    """Job outcomes and waits over the last minute, read from the ``jobs`` table.

    Design: gauges over a sliding window rather than counters. The database, not
    any one process, knows every job's outcome (workers write it), so reading it at
    scrape time gives the same answer from whichever API process answers, needs no
    cross-process state, and survives restarts. Exported:

    * ``floodgate_jobs_finished_last_minute{state}``: jobs whose ``finished_at``
      falls in the last 60 s, per final state (succeeded, failed, abandoned); divide
      by 60 for a per-second rate.
    * ``floodgate_jobs_started_last_minute``: jobs first started in the last 60 s.
    * ``floodgate_job_wait_seconds{quantile}``: p50 and p99 of the wait (``started_at
      - created_at``: from submission to a worker starting it) of the jobs started in
      the last 60 s (the most recent ``WAIT_SAMPLE`` of them); absent when none started.

    Cost per scrape: three range scans over the last minute only, on the indexes
    ``ix_jobs_finished`` (finished_at, state) and ``ix_jobs_started`` (started_at,
    created_at) in tasks/models.py; both cover their query, so the table is not read.
    A database that does not answer leaves the samples out; /metrics still answers.
    """

    def __init__(self, clock=time.time) -> None:
        self.clock = clock

    def collect(self):
        finished = GaugeMetricFamily(
            "floodgate_jobs_finished_last_minute",
            "Jobs that reached a final state in the last 60 s, by state", labels=["state"])
        started = GaugeMetricFamily(
            "floodgate_jobs_started_last_minute", "Jobs a worker first started in the last 60 s")
        wait = GaugeMetricFamily(
            "floodgate_job_wait_seconds",
            "Wait from submission to start of the jobs started in the last 60 s",
            labels=["quantile"])
        try:
            counts, n_started, waits = self._read(self.clock() - JOBS_WINDOW_S)
        except Exception:  # noqa: BLE001 - a database that does not answer is a reading
            log.debug("job metrics unavailable", exc_info=True)
        else:
            for state in FINISHED_STATES:
                finished.add_metric([state], float(counts.get(state, 0)))
            started.add_metric([], float(n_started))
            if waits:
                for q in WAIT_QUANTILES:
                    wait.add_metric([str(q)], quantile(waits, q))
        yield finished
        yield started
        yield wait

    @staticmethod
    def _read(since: float) -> tuple[dict[str, int], int, list[float]]:
        with engine().connect() as conn:
            counts = dict(conn.execute(
                select(jobs.c.state, func.count())
                .where(jobs.c.finished_at >= since)
                .group_by(jobs.c.state)
            ).all())
            n_started = conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.started_at >= since)
            ).scalar_one()
            waits = conn.execute(
                select(jobs.c.started_at - jobs.c.created_at)
                .where(jobs.c.started_at >= since)
                .order_by(jobs.c.started_at.desc())
                .limit(WAIT_SAMPLE)
            ).scalars().all()
        return counts, n_started, sorted(max(0.0, float(w)) for w in waits)


def quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending, non-empty list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _served_registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    registry.register(QueueCollector())
    registry.register(TenantHeldCollector())
    registry.register(JobsCollector())
    return registry


#: What ``GET /metrics`` serves.
METRICS_REGISTRY = _served_registry()

# A labelled counter exports nothing for a queue until its first increment; touch each
# bounded queue's child so 0 is exported from the start (in multiprocess mode too: the
# child gets its file entry), and rate() sees the first refusal.
_guard = guard_for(app)
for _queue in _guard.limits if _guard is not None else ():
    ACCEPTED.labels(_queue)
    REFUSED.labels(_queue)
# Weighted tenants are named in the per-tenant counter whichever tenants come first.
if _guard is not None and _guard.fairness is not None:
    _weights = _guard.fairness.weights
    reserve_tenants(sorted(_weights, key=lambda tenant: (-_weights[tenant], tenant)))
