"""Accepted and refused submissions per second, shared by every submitting process.

The guard's Prometheus counters count one process's submissions. ``floodgate
status`` wants the last minute across all of them (every API process, every worker
that fans out), so each process also keeps in-process counts and one daemon thread
flushes them once a second into per-second Redis buckets beside the meter's
(``{prefix}:submits:{accepted|refused}:{queue}:{epoch s}``, kept BUCKET_TTL_S).
Recording a submission is a dict increment under a lock: no round trip is added
to the submit path. A process that exits loses at most its last second (an
``atexit`` flush keeps even that on a clean exit).

With a fairness policy the guard also records each fair submission's tenant and
class (`record_tenant`); the same flush adds them into one hash per queue and second
(``{prefix}:submits:tenants:{queue}:{epoch s}``, fields ``outcome|class|tenant``).
A hash names at most `TENANT_FIELDS_TENANTS` tenants, the rest are summed under
``other``: the flush adds a new name only while the hash has room, checked and
written in one optimistic transaction (WATCH/MULTI), so the bound holds however
many processes flush into the same second.

Readers: `last_minute` (one MGET of 120 keys), `recent_tenant_counts` (one
pipelined HGETALL per second of the window).
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from celery_floodgate.fairness import CLASSES
from celery_floodgate.limits import BUCKET_TTL_S

if TYPE_CHECKING:
    from celery_floodgate.meter import Meter

ACCEPTED, REFUSED = "accepted", "refused"
THREAD_NAME = "submit-counter"
FLUSH_INTERVAL_S = 1.0
WINDOW_S = 60
#: Tenants named in one queue's hash of one second, and in `recent_tenant_counts`' rows;
#: every other tenant is summed under OTHER.
TENANT_FIELDS_TENANTS = 20
OTHER = "other"
#: In-process (queue, outcome, class, tenant) counts kept between two flushes; past it,
#: new tenants are counted as OTHER at once (a burst of a million names costs no memory).
MAX_PENDING_TENANT_COUNTS = 10_000
_WATCH_ATTEMPTS = 3


def key(prefix: str, outcome: str, queue: str, epoch_s: int) -> str:
    return f"{prefix}:submits:{outcome}:{queue}:{epoch_s}"


def tenant_key(prefix: str, queue: str, epoch_s: int) -> str:
    """The hash of one queue's fair submissions in one second, by outcome, class and tenant."""
    return f"{prefix}:submits:tenants:{queue}:{epoch_s}"


class TenantCounts(NamedTuple):
    """One row of `recent_tenant_counts`: a tenant's submissions of one class."""

    tenant: str
    criticality: str
    accepted: int
    refused: int


class SubmitCounter:
    """One process's counts for one meter, flushed by one daemon thread.

    The counter holds its meter weakly, and the thread holds the counter weakly: the
    thread ends within a second of the meter (its guard, its app) being freed.
    """

    def __init__(self, meter: Meter) -> None:
        self._meter = weakref.ref(meter)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._tenants: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._pid: int | None = None  # the process whose thread flushes; a fork starts anew

    def add(self, queue: str, outcome: str) -> None:
        if self._pid != os.getpid():
            self.start()
        with self._lock:
            self._counts[(outcome, queue)] += 1

    def add_tenant(self, queue: str, outcome: str, tenant: str, criticality: str) -> None:
        if self._pid != os.getpid():
            self.start()
        with self._lock:
            self._add_pending(queue, outcome, criticality, tenant, 1)

    def _add_pending(self, queue: str, outcome: str, criticality: str, tenant: str,
                     n: int) -> None:
        """Count into the pending tenant counts (the lock held), a new tenant as OTHER once
        MAX_PENDING_TENANT_COUNTS entries are pending."""
        entry = (queue, outcome, criticality, tenant)
        if entry not in self._tenants and len(self._tenants) >= MAX_PENDING_TENANT_COUNTS:
            entry = (queue, outcome, criticality, OTHER)
        self._tenants[entry] += n

    def start(self) -> None:
        """Start this process's flush thread, unless it runs already (install() calls it;
        a forked child starts its own on its first submission)."""
        with _start_lock:
            meter = self._meter()
            if self._pid == os.getpid() or meter is None or not meter.url:
                return  # running already, or no meter yet (a bare app's comes on configure)
            self._lock = threading.Lock()  # a lock held across fork would never be released
            self._counts = Counter()       # the parent flushes its own counts
            self._tenants = Counter()
            self._pid = os.getpid()
            threading.Thread(target=_flush_every_second, args=(weakref.ref(self),),
                             daemon=True, name=thread_name(meter)).start()

    def flush(self) -> None:
        self._flush_tenants()
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

    def _flush_tenants(self) -> None:
        with self._lock:
            pending, self._tenants = self._tenants, Counter()
        meter = self._meter()
        client = meter.client if meter is not None else None
        if not pending or meter is None or client is None:
            return
        by_queue: dict[str, Counter[tuple[str, str, str]]] = {}
        for (queue, outcome, criticality, tenant), n in pending.items():
            by_queue.setdefault(queue, Counter())[(outcome, criticality, tenant)] += n
        for queue, counts in by_queue.items():
            try:
                _add_tenant_counts(client, tenant_key(meter.keys.prefix, queue,
                                                      int(time.time())), counts)
            except redis.RedisError:
                self._keep_tenants(queue, counts)

    def _keep_tenants(self, queue: str, counts: Counter[tuple[str, str, str]]) -> None:
        """Put unwritten counts back for the next flush, still within
        MAX_PENDING_TENANT_COUNTS however long Redis stays away."""
        with self._lock:
            for (outcome, criticality, tenant), n in counts.items():
                self._add_pending(queue, outcome, criticality, tenant, n)


def _add_tenant_counts(client: redis.Redis, name: str,
                       counts: Counter[tuple[str, str, str]]) -> None:
    """Add ``counts`` into the hash ``name``, naming at most TENANT_FIELDS_TENANTS tenants.

    The hash's tenants are read and the counts written in one WATCH/MULTI transaction,
    so concurrent flushers cannot both take the last free name; on a conflict it reads
    again (a few times, then the counts wait for the next flush: RedisError)."""
    with client.pipeline(transaction=True) as transaction:
        pipe: Any = transaction  # redis-py types watch() and immediate mode loosely
        for _ in range(_WATCH_ATTEMPTS):
            try:
                pipe.watch(name)
                named = {_text(field).split("|", 2)[2] for field in pipe.hkeys(name)}
                pipe.multi()
                for (outcome, criticality, tenant), n in _bounded(counts, named).items():
                    pipe.hincrby(name, f"{outcome}|{criticality}|{tenant}", n)
                pipe.expire(name, BUCKET_TTL_S)
                pipe.execute()
                return
            except redis.WatchError:
                continue
        raise redis.WatchError(f"{name}: other processes kept writing; counts kept for later")


def _text(field: bytes | str) -> str:
    return field.decode() if isinstance(field, bytes) else field


def _bounded(counts: Counter[tuple[str, str, str]],
             named: set[str]) -> Counter[tuple[str, str, str]]:
    """``counts`` with a tenant renamed OTHER unless it is among ``named`` or, heaviest
    first, fits in the room left beside them."""
    totals: Counter[str] = Counter()
    for (_, _, tenant), n in counts.items():
        totals[tenant] += n
    room = TENANT_FIELDS_TENANTS - len(named - {OTHER})
    keep = set()
    for tenant, _ in totals.most_common():
        if tenant in named:
            keep.add(tenant)
        elif room > 0 and tenant != OTHER:
            keep.add(tenant)
            room -= 1
    bounded: Counter[tuple[str, str, str]] = Counter()
    for (outcome, criticality, tenant), n in counts.items():
        bounded[(outcome, criticality, tenant if tenant in keep else OTHER)] += n
    return bounded


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


def record_tenant(meter: Meter, queue: str, outcome: str, tenant: str,
                  criticality: str) -> None:
    """Count one fair submission to ``queue`` (ACCEPTED or REFUSED) by ``tenant`` in class
    ``criticality``; never raises, never waits on the network."""
    if not meter.url:
        return
    if criticality not in CLASSES:
        criticality = OTHER  # a field name must stay parseable and the set bounded
    try:
        counter(meter).add_tenant(queue, outcome, tenant, criticality)
    except Exception:  # noqa: BLE001 - counting must never fail a submission
        pass


def recent_tenant_counts(meter: Meter, queue: str,
                         window_s: int = WINDOW_S) -> list[TenantCounts]:
    """``queue``'s fair submissions over the last ``window_s`` seconds, summed across every
    process that shares the meter, one row per (tenant, class).

    The TENANT_FIELDS_TENANTS busiest tenants of the window are named, heaviest first;
    the rest are summed into OTHER rows, last. ``[]`` without a meter. Raises
    ``redis.RedisError`` when the meter's Redis does not answer.
    """
    client = meter.client
    if client is None:
        return []
    now = int(time.time())
    with client.pipeline(transaction=False) as pipe:
        for second in range(now - window_s + 1, now + 1):
            pipe.hgetall(tenant_key(meter.keys.prefix, queue, second))
        buckets = pipe.execute()
    counts: Counter[tuple[str, str, str]] = Counter()
    for bucket in buckets:
        for field, value in bucket.items():
            outcome, criticality, tenant = _text(field).split("|", 2)
            counts[(outcome, criticality, tenant)] += int(value)
    return _rows(_bounded(counts, set()))


def _rows(counts: Counter[tuple[str, str, str]]) -> list[TenantCounts]:
    cells: dict[tuple[str, str], dict[str, int]] = {}
    totals: Counter[str] = Counter()
    for (outcome, criticality, tenant), n in counts.items():
        cell = cells.setdefault((tenant, criticality), {ACCEPTED: 0, REFUSED: 0})
        cell[outcome if outcome in cell else REFUSED] += n
        totals[tenant] += n
    order = sorted(cells, key=lambda tc: (tc[0] == OTHER, -totals[tc[0]], tc[0], tc[1]))
    return [TenantCounts(tenant, criticality, cells[(tenant, criticality)][ACCEPTED],
                         cells[(tenant, criticality)][REFUSED])
            for tenant, criticality in order]


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
