"""Prometheus metrics: the guard's counters plus live per-queue gauges."""
from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tasks.queue_stats import queue_stats

GAUGES = {
    "depth": ("floodgate_queue_depth", "Ready messages in the queue"),
    "limit": ("floodgate_queue_limit", "The queue's current length bound"),
    "drain_rate": ("floodgate_queue_drain_rate", "Messages per second workers take off the queue"),
    "oldest_age_s": ("floodgate_queue_oldest_age_seconds", "Age of the oldest ready message"),
}


class QueueCollector(Collector):
    def collect(self):
        stats = queue_stats()
        for field, (name, doc) in GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue, values in stats.items():
                if values[field] is not None:
                    family.add_metric([queue], float(values[field]))
            yield family


REGISTRY.register(QueueCollector())
