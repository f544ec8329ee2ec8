"""Accepted and refused submissions per second, shared by every submitting process.

The guard's Prometheus counters count one process's submissions. ``floodgate
status`` wants the last minute across all of them (every API process, every worker
that fans out), so each process also keeps in-process counts and one daemon thread
flushes them once a second into per-second Redis buckets beside the meter's
(``{prefix}:submits:{accepted|refused}:{queue}:{epoch s}``, kept BUCKET_TTL_S).
Recording a submission is a dict increment under a lock: no round trip is added
to the submit path. A process that exits loses at most its last second (an
``atexit`` flush keeps even that on a clean exit).

Readers: `last_minute` (one MGET of 120 keys).
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from celery_floodgate.limits import BUCKET_TTL_S

if TYPE_CHECKING:
    from celery_floodgate.meter import Meter

ACCEPTED, REFUSED = "accepted", "refused"
THREAD_NAME = "submit-counter"
FLUSH_INTERVAL_S = 1.0
WINDOW_S = 60


def key(prefix: str, outcome: str, queue: str, epoch_s: int) -> str:
    return f"{prefix}:submits:{outcome}:{queue}:{epoch_s}"


class SubmitCounter:
    """One process's counts for one meter, flushed by one daemon thread.

    The counter holds its meter weakly, and the thread holds the counter weakly: the
    thread ends within a second of the meter (its guard, its app) being freed.
    """

    def __init__(self, meter: Meter) -> None:
        self._meter = weakref.ref(meter)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread flushes; a fork starts anew

    def add(self, queue: str, outcome: str) -> None:
        if self._pid != os.getpid():
            self.start()
        with self._lock:
            self._counts[(outcome, queue)] += 1

    def start(self) -> None:
        """Start this process's flush thread, unless it runs already (install() calls it;
        a forked child starts its own on its first submission)."""
        with _start_lock:
            meter = self._meter()
            if self._pid == os.getpid() or meter is None or not meter.url:
                return  # running already, or no meter yet (a bare app's comes on configure)
            self._lock = threading.Lock()  # a lock held across fork would never be released
            self._counts = Counter()       # the parent flushes its own counts
            self._pid = os.getpid()
            threading.Thread(target=_flush_every_second, args=(weakref.ref(self),),
                             daemon=True, name=thread_name(meter)).start()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        meter = self._meter()
        client = meter.client if meter is not None else None
        if not counts or meter is None or client is None:
            return
        now, prefix = int(time.time()), meter.keys.prefix
        try:
            with client.pipeline(transaction=False) as pipe:
                for (outcome, queue), n in counts.items():
                    name = key(prefix, outcome, queue, now)
                    pipe.incrby(name, n)
                    pipe.expire(name, BUCKET_TTL_S)
                pipe.execute()
        except redis.RedisError:
            with self._lock:  # keep the counts for the next flush
                self._counts.update(counts)


def thread_name(meter: Meter) -> str:
    """The flush thread's name: ``submit-counter:<key prefix>``."""
    return f"{THREAD_NAME}:{meter.keys.prefix}"


def _flush_every_second(ref: "weakref.ref[SubmitCounter]") -> None:
    """The flush thread: holds its counter only while flushing, and ends when the counter
    is freed or the process forked (the child starts its own)."""
    pid = os.getpid()
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        found = ref()
        if found is None or found._pid != pid:
            return
        found.flush()
        del found


_start_lock = threading.Lock()
# Keyed weakly by meter; the counter holds its meter weakly too, so the entry goes with it.
_counters: "weakref.WeakKeyDictionary[Meter, SubmitCounter]" = weakref.WeakKeyDictionary()


def counter(meter: Meter) -> SubmitCounter:
    """The process's counter for ``meter``, made on first use."""
    found = _counters.get(meter)
    if found is None:
        with _start_lock:
            found = _counters.setdefault(meter, SubmitCounter(meter))
    return found


def record(meter: Meter, queue: str, outcome: str) -> None:
    """Count one submission to ``queue`` (ACCEPTED or REFUSED); never raises, never waits
    on the network."""
    if not meter.url:
        return  # no meter: nowhere to count into
    try:
        counter(meter).add(queue, outcome)
    except Exception:  # noqa: BLE001 - counting must never fail a submission
        pass


def last_minute(meter: Meter, queues: Iterable[str],
                window_s: int = WINDOW_S) -> dict[str, dict[str, int]]:
    """Per queue, ``{"accepted": n, "refused": n}`` over the last ``window_s`` seconds
    (the current second included: what was flushed so far); ``{}`` without a meter."""
    client, names_of = meter.client, list(queues)
    if client is None or not names_of:
        return {}
    now = int(time.time())
    seconds = range(now - window_s + 1, now + 1)
    names = [key(meter.keys.prefix, outcome, queue, s)
             for queue in names_of for outcome in (ACCEPTED, REFUSED) for s in seconds]
    values = client.mget(names)
    totals: dict[str, dict[str, int]] = {}
    i = 0
    for queue in names_of:
        totals[queue] = {}
        for outcome in (ACCEPTED, REFUSED):
            totals[queue][outcome] = sum(int(v) for v in values[i:i + window_s] if v)
            i += window_s
    return totals


@atexit.register
def _flush_all() -> None:
    for found in list(_counters.values()):
        if found._pid == os.getpid():
            found.flush()


def recent_counts(app: Any, window_s: int = WINDOW_S) -> dict[str, dict[str, int]]:
    """Accepted and refused submissions per bounded queue of ``app``, over the last
    ``window_s`` seconds, summed across every process that shares its meter.

    Returns ``{queue: {"accepted": n, "refused": n}}``; ``{}`` when the app has no guard
    or no meter. Raises ``redis.RedisError`` when the meter's Redis does not answer.
    """
    from celery_floodgate.stats import guard_for

    guard = guard_for(app)
    if guard is None:
        return {}
    return last_minute(guard.meter, guard.limits, window_s)
