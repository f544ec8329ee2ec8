"""Drain-rate meter: how fast workers take messages off each queue.

Workers count the messages they receive (``task_received`` runs in the worker's
main process, where the consumer is) and flush the counts once a second into
per-second Redis buckets. Anyone can then read a queue's drain rate with one
MGET. Nothing here runs on the submit path.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import Counter

import redis

from config.queues import DRAIN_WINDOW_S, drained_key
from config.settings import get_settings

BUCKET_TTL_S = 120
FLUSH_INTERVAL_S = 1.0
FAST_WINDOW_S = 2


@functools.cache
def meter_client() -> redis.Redis | None:
    url = get_settings().meter_redis_url
    if url is None:
        return None
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


class DrainCounter:
    """In-process counts, flushed by one daemon thread."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, queue: str, n: int = 1) -> None:
        with self._lock:
            self._counts[queue] += n
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="drain-meter")
                self._thread.start()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        client = meter_client()
        if not counts or client is None:
            return
        now = int(time.time())
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue, n in counts.items():
                    pipe.incrby(drained_key(queue, now), n)
                    pipe.expire(drained_key(queue, now), BUCKET_TTL_S)
                pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep the counts for the next flush
                self._counts.update(counts)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()


COUNTER = DrainCounter()


def drain_rate(queue: str, window_s: int = DRAIN_WINDOW_S) -> float | None:
    """Messages per second over the last whole seconds; None if unmeasurable.

    The smaller of the whole window's average and its last FAST_WINDOW_S: a rate
    that drops (a worker stopped) is believed within seconds, one that rises only
    once it has lasted, so a wait limit errs towards shorter waits.
    """
    client = meter_client()
    if client is None:
        return None
    now = int(time.time())
    keys = [drained_key(queue, s) for s in range(now - window_s, now)]
    try:
        counts = [int(v) if v else 0 for v in client.mget(keys)]
    except redis.RedisError:
        return None
    return min(sum(counts) / window_s, sum(counts[-FAST_WINDOW_S:]) / FAST_WINDOW_S)
