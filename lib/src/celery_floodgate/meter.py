"""Drain-rate meter: how fast workers take messages off each queue.

Workers count the messages they receive and flush the counts once a second
into per-second Redis buckets. At each flush a worker also marks the second as
*backlogged* for every queue it consumes whose broker depth is above zero: only
in such seconds does the count measure how fast workers can drain, rather than
how little arrived. Anyone can then read a queue's drain rate with one MGET.
Nothing here runs on the submit path.
"""
from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from celery_floodgate.limits import (
    BUCKET_TTL_S,
    DRAIN_LOOKBACK_S,
    DRAIN_WINDOW_S,
    FAST_WINDOW_S,
    WINDOW_FRESH_S,
    Keys,
)
from celery_floodgate.redis_client import redis_client

FLUSH_INTERVAL_S = 1.0


class Meter:
    """Reads and writes one app's drain figures in one Redis (``url=None``: no meter).

    ``url``: redis://, rediss://, redis+socket:// or sentinel:// (see
    `celery_floodgate.redis_client.redis_client` for ``options``).
    """

    def __init__(self, url: str | None, keys: Keys,
                 options: Mapping[str, Any] | None = None) -> None:
        self.url, self.keys = url, keys
        self.options: dict[str, Any] = dict(options or {})
        self._client: redis.Redis | None = None
        self.counter = DrainCounter(self)

    @property
    def client(self) -> redis.Redis | None:
        """The meter's Redis client, made on first use; None without a meter."""
        if self._client is None and self.url:
            self._client = redis_client(self.url, self.options, timeout_s=1)
        return self._client

    def point_at(self, url: str | None, options: Mapping[str, Any] | None = None) -> None:
        """Use this Redis from now on (install() follows an app whose configuration is
        loaded again); a client already made for another is dropped."""
        if (url, dict(options or {})) != (self.url, self.options):
            self.url, self.options, self._client = url, dict(options or {}), None

    def drain_rate(self, queue: str, window_s: int = DRAIN_WINDOW_S,
                   lookback_s: int = DRAIN_LOOKBACK_S) -> float | None:
        """Messages per second workers can take off ``queue``; None if unmeasurable.

        Measured over the last ``window_s`` backlogged seconds within ``lookback_s``:
        the smaller of their average and that of the last FAST_WINDOW_S of them, so a
        rate that drops (a worker stopped) is believed within seconds, one that rises
        only once it has lasted. With no backlogged second the workers kept up with
        what arrived, which says how much arrived, not how fast they can drain:
        unknown (None), and the guard answers a short Retry-After until it is known.
        """
        if self.client is None:
            return None
        now = int(time.time())
        seconds = range(now - lookback_s, now)
        try:
            values = self.client.mget([self.keys.drained(queue, s) for s in seconds]
                                      + [self.keys.backlog(queue, s) for s in seconds])
        except redis.RedisError:
            return None
        counts = [int(v) if v else 0 for v in values[:lookback_s]]
        busy = [n for n, flag in zip(counts, values[lookback_s:]) if flag]
        return busy_rate(busy, window_s) if busy else None

    def held_by_workers(self, queue: str, broker: str) -> int:
        """Messages the live workers of ``queue`` may hold prefetched: their windows' sum.

        Prefetched messages have left the broker's list but not started; they wait
        as long as those still queued, so the guard counts them against the limit.
        """
        if self.client is None:
            return 0
        try:
            entries = self.client.hgetall(self.keys.window(queue, broker))
        except redis.RedisError:
            return 0
        fresh_after = time.time() - WINDOW_FRESH_S
        held = 0
        for value in entries.values():
            text = value.decode() if isinstance(value, bytes) else value
            window, _, at = text.partition("|")
            if float(at or 0) >= fresh_after:
                held += int(window)
        return held


def busy_rate(busy: list[int], window_s: int = DRAIN_WINDOW_S) -> float | None:
    """The drain rate from the counts of backlogged seconds, oldest first."""
    window, fast = busy[-window_s:], busy[-FAST_WINDOW_S:]
    if not sum(window):  # long tasks: few seconds see one finish; use every busy second
        return sum(busy) / len(busy) or None
    slow_rate = sum(window) / len(window)
    return min(slow_rate, sum(fast) / len(fast)) if sum(fast) else slow_rate


class DrainCounter:
    """A worker's in-process counts, flushed by one daemon thread."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queues: tuple[str, ...] = ()
        self._depth: Callable[[str], int | None] | None = None
        self._window: tuple[str, str, int] | None = None

    def watch(self, queues: Iterable[str], depth: Callable[[str], int | None],
              worker: str, broker: str, window: int) -> None:
        """Mark backlogged seconds of these queues, reading their depth with ``depth``,
        and report this worker's prefetch window on them (see Meter.held_by_workers)."""
        self._queues, self._depth = tuple(queues), depth
        self._window = (worker, broker, window)
        self._start()

    def add(self, queue: str, n: int = 1) -> None:
        with self._lock:
            self._counts[queue] += n
        if self._thread is None:  # runs once per task: no second lock on the usual path
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=_flush_every_second,
                                                args=(weakref.ref(self),), daemon=True,
                                                name="drain-meter")
                self._thread.start()

    def _backlogged(self) -> list[str]:
        if self._depth is None:
            return []
        return [q for q in self._queues if (self._depth(q) or 0) > 0]

    def flush(self) -> None:
        backlogged = self._backlogged()
        with self._lock:
            counts, self._counts = self._counts, Counter()
        client, keys = self.meter.client, self.meter.keys
        if client is None:
            return
        now = int(time.time())
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue, n in counts.items():
                    pipe.incrby(keys.drained(queue, now), n)
                    pipe.expire(keys.drained(queue, now), BUCKET_TTL_S)
                for queue in backlogged:
                    pipe.set(keys.backlog(queue, now), 1, ex=BUCKET_TTL_S)
                self._report_window(pipe, now)
                pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep the counts for the next flush
                self._counts.update(counts)

    def _report_window(self, pipe: Any, now: int) -> None:
        if self._window is None:
            return
        worker, broker, window = self._window
        for queue in self._queues:
            key = self.meter.keys.window(queue, broker)
            pipe.hset(key, worker, f"{window}|{now}")
            pipe.expire(key, BUCKET_TTL_S)


def _flush_every_second(ref: "weakref.ref[DrainCounter]") -> None:
    """The flush thread holds its counter only while flushing: it ends once the counter
    (its meter, guard and app) is freed, rather than keep them for good."""
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        found = ref()
        if found is None:
            return
        found.flush()
        del found
