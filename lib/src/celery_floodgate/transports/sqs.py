"""Amazon SQS transport with an admission count kept in Redis: approximate, but bounded.

SQS has no length cap, and its own count (``ApproximateNumberOfMessages``) lags
and is approximate, so it cannot refuse the message past a limit. The guard
keeps the count itself, in the meter's Redis:

* **Send** (``_put``): ``sqs_admit.lua`` checks the queue's admission set and adds
  this message's admission id (a fresh UUID, carried in a header), atomically, or
  refuses with a Retry-After ticket; only an admitted message is sent. A send SQS
  refused, or never received, takes its id back out.
* **Delete** (ack, reject, no-ack receive): once SQS has deleted the message, its id
  leaves the set. Removing an id is idempotent, so a message delivered twice (SQS is
  at least once; a visibility timeout that ran out; a worker that died) and deleted
  twice counts down once; a redelivery is no new admission, so nothing double counts.
* **Tenants** (``install(..., fairness=...)``): before the admission, the tenant's
  place is reserved in the meter (`celery_floodgate.tenants`); a refused admission or
  a failed send gives it back.
* **Reconcile** (`Reconciler`, a daemon thread of any process that sends, one
  process per queue and interval fleet-wide): compares the set with SQS's count
  (visible + in flight + delayed) and repairs drift: ids whose message is gone (a
  count-down lost with its worker or its Redis call) and messages no admission counted.

Bound: the set never exceeds the limit when an id is added (one script), and every
message in SQS was counted before it was sent. SQS can hold more than the limit only
by messages whose id left the set early: a delete that "succeeded" with a stale receipt
handle or that kombu swallowed (one message each, until it is deleted for good), and a
reconcile that trimmed against an SQS count that under-reported. README "SQS" states it.

The queue's limit counts every message sent and not yet deleted, waiting or being
run: on SQS a prefetched or running task still holds its place.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)
from kombu.transport import SQS as kombu_sqs

from celery_floodgate.errors import BrokerUnavailable
from celery_floodgate.fairness import identify
from celery_floodgate.limits import RETRY_AFTER_MAX_S
from celery_floodgate.tenants import EPOCH_HEADER, tenancy_of
from celery_floodgate.transports import LuaScript, guard_of
from celery_floodgate.transports.redis import SENT_AT_HEADER

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard

ADMIT = LuaScript("line.lua", "sqs_admit.lua")
RECONCILE = LuaScript("sqs_reconcile.lua")
#: The header carrying a message's admission id: what a delete counts down.
ADMIT_HEADER = "fg_admit_id"
#: SQS's three counts whose sum is every message it holds.
COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
          "ApproximateNumberOfMessagesDelayed")
#: Transport options (an app sets them in its ``broker_transport_options``).
RECONCILE_INTERVAL_OPTION = "floodgate_sqs_reconcile_interval_s"
RECONCILE_LAG_OPTION = "floodgate_sqs_reconcile_lag_s"
ENDPOINT_OPTION = "endpoint_url"
DEFAULT_RECONCILE_INTERVAL_S = 10.0
#: SQS's counts "may not achieve consistency until at least 1 minute after the
#: producers stop sending" (GetQueueAttributes): ids younger than this are never trimmed.
DEFAULT_RECONCILE_LAG_S = 60.0
#: Between reading SQS's count and comparing it with the set: long enough for a delete
#: caught mid-way (SQS done, its count-down not yet) to have counted down.
SETTLE_S = 1.0

log = logging.getLogger("celery_floodgate")


def admitted_key(guard: Guard, queue_url: str) -> str:
    """The admission set of one SQS queue (its URL names endpoint, account and queue)."""
    return f"{guard.meter.keys.prefix}:sqs:admitted:{queue_url}"


def sqs_total(client: Any, queue_url: str) -> int:
    """Every message SQS holds in the queue: waiting, in flight and delayed."""
    attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(COUNTS))
    return sum(int(attrs["Attributes"].get(name, 0)) for name in COUNTS)


class Channel(kombu_sqs.Channel):  # type: ignore[misc]  # kombu is read as Any
    """kombu's SQS channel whose send to a limited queue is admitted (or refused) first."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        guard = guard_of(self.connection.client)
        # A requeue (restore) only makes a received message visible again: no new admission.
        if (guard is None or (limit := guard.limit_for(queue)) is None
                or message.get("redelivered")):
            super()._put(queue, message, **kwargs)
            return
        headers = message.setdefault("headers", {})
        guard.check_eta(queue, headers.get("eta"))
        headers.setdefault(SENT_AT_HEADER, time.time())
        # Always fresh: a retry republishes its request's headers, and reusing the id
        # would let the old message's delete count the new one down.
        admit_id = headers[ADMIT_HEADER] = uuid.uuid4().hex
        client = guard.meter.client
        if client is None:
            raise BrokerUnavailable(queue, "the SQS guard counts admissions in Redis: "
                                           "install() needs meter_url")
        queue_url = self._new_queue(queue)
        key = admitted_key(guard, queue_url)
        bound = guard.length_bound(limit)
        tenancy = tenancy_of(guard)
        tenant = criticality = None
        epoch = None
        if tenancy is not None:  # the admission set bounds the total; the meter, each share
            tenant, criticality = identify(headers)
            reservation = tenancy.reserve(queue, tenant, criticality, bound)
            if not reservation.admit:
                raise tenancy.refusal(queue, reservation, bound, tenant, criticality)
            epoch = reservation.epoch
            if epoch is not None:
                headers[EPOCH_HEADER] = epoch
        rate = guard.drain_rate(queue) or 0
        args = (bound, admit_id, rate, RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0,
                guard.pending_tickets(queue))
        try:
            reply = ADMIT(client, [key, guard.meter.keys.ticket(queue)], args)
        except redis.RedisError as exc:
            if tenancy is not None:
                tenancy.release(queue, tenant, epoch)
            raise BrokerUnavailable(
                queue, f"the admission counter (Redis) did not answer: {exc}") from None
        self._reconciler().watch(key, queue_url, self.sqs(queue=self.canonical_queue_name(queue)),
                                 client)
        if not reply[0]:
            wait_s = float(reply[2])
            if tenancy is not None:
                tenancy.release(queue, tenant, epoch)
            raise guard.refuse(queue, int(reply[1]), bound,
                               wait_s=wait_s if wait_s >= 0 else None, tenant=tenant,
                               criticality=criticality)
        try:
            super()._put(queue, message, **kwargs)
        except (ClientError, EndpointConnectionError, ConnectTimeoutError):
            self._count_down(client, key, admit_id)  # SQS answered no, or was never reached
            if tenancy is not None:
                tenancy.release(queue, tenant, epoch)
            raise
        # Any other error (a read timeout) may follow a send SQS kept: the id stays,
        # and the reconciler takes it back out if the message never arrived.
        guard.admitted(queue, tenant, criticality)

    # -- count-down: once SQS has deleted a message ----------------------------------------

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """kombu's ack (SQS deletes the message), then the admission is counted down."""
        admission = self._admission_of(delivery_tag)
        super().basic_ack(delivery_tag, multiple)  # raises if the delete may have failed
        if admission:
            self._count_down(*admission)

    def _delete_rejected_message(self, delivery_tag: Any) -> None:
        admission = self._admission_of(delivery_tag)
        super()._delete_rejected_message(delivery_tag)
        if admission:
            info = self.qos.get(delivery_tag).delivery_info
            queue = self.canonical_queue_name(info.get("routing_key", ""))
            if not self._has_redrive_policy(queue, info["sqs_queue"]):
                self._count_down(*admission)  # deleted (a redrive policy keeps it: reconciled)

    def _message_to_python(self, message: dict[str, Any], queue_name: str,
                           q_url: str) -> dict[str, Any]:
        payload: dict[str, Any] = super()._message_to_python(message, queue_name, q_url)
        if queue_name in self._noack_queues:  # deleted on receipt
            admit_id = (payload.get("headers") or {}).get(ADMIT_HEADER)
            guard = guard_of(self.connection.client)
            if admit_id and guard and guard.meter.client is not None:
                self._count_down(guard.meter.client, admitted_key(guard, q_url), admit_id)
            return payload
        # As Redis and RabbitMQ do, flag a message received before (its worker died, its
        # visibility timeout ran out, SQS delivered it twice): tasks/runtime/base.py bounds
        # redeliveries by this flag.
        receives = (message.get("Attributes") or {}).get("ApproximateReceiveCount")
        if receives and int(receives) > 1:
            payload.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
        return payload

    def _admission_of(self, delivery_tag: Any) -> tuple[redis.Redis, str, str] | None:
        """(Redis client, admission set, id) of a received message, or None if not ours."""
        try:
            message = self.qos.get(delivery_tag)
            queue_url = message.delivery_info["sqs_queue"]
        except KeyError:
            return None
        admit_id = (message.headers or {}).get(ADMIT_HEADER)
        guard = guard_of(self.connection.client)
        if not admit_id or guard is None or guard.meter.client is None:
            return None
        return guard.meter.client, admitted_key(guard, queue_url), admit_id

    @staticmethod
    def _count_down(client: redis.Redis, key: str, admit_id: str) -> None:
        try:
            client.zrem(key, admit_id)
        except redis.RedisError as exc:  # counted too high until the reconciler repairs it
            log.warning("could not count down SQS admission %s: %s", admit_id, exc)

    # -- settings ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str | None:
        """SQS_ENDPOINT_URL (moto, localstack) wins over the broker URL's host."""
        url: str | None = self.transport_options.get(ENDPOINT_OPTION) or super().endpoint_url
        return url

    def _reconciler(self) -> "Reconciler":
        options = self.transport_options
        return Reconciler.get(float(options.get(RECONCILE_INTERVAL_OPTION)
                                    or DEFAULT_RECONCILE_INTERVAL_S),
                              float(options.get(RECONCILE_LAG_OPTION) or DEFAULT_RECONCILE_LAG_S))


class Transport(kombu_sqs.Transport):  # type: ignore[misc]  # kombu is read as Any
    """The kombu transport `celery_floodgate.install` sets for ``sqs://`` brokers."""

    Channel = Channel


class Reconciler:
    """One daemon thread per process (and interval) comparing admission sets with SQS.

    Each interval it reconciles the queues this process has sent to, each queue only
    if no other process did within the interval (a Redis ``SET NX``): one
    GetQueueAttributes per queue and interval for the whole fleet, off the submit path.
    """

    _instances: dict[tuple[float, float], "Reconciler"] = {}
    _lock = threading.Lock()

    def __init__(self, interval_s: float, lag_s: float) -> None:
        self.interval_s, self.lag_s = interval_s, lag_s
        #: admission set -> (queue URL, boto3 SQS client, Redis client)
        self.queues: dict[str, tuple[str, Any, redis.Redis]] = {}
        self.thread = threading.Thread(target=self._run, daemon=True, name="sqs-reconcile")
        self.thread.start()

    @classmethod
    def get(cls, interval_s: float, lag_s: float) -> "Reconciler":
        """This process's reconciler for the interval and lag, started on first use."""
        with cls._lock:
            found = cls._instances.get((interval_s, lag_s))
            if found is None:
                found = cls._instances[(interval_s, lag_s)] = cls(interval_s, lag_s)
            return found

    def watch(self, key: str, queue_url: str, sqs_client: Any, client: redis.Redis) -> None:
        """Reconcile this admission set from now on (once per key; later calls change nothing)."""
        if key not in self.queues:
            self.queues[key] = (queue_url, sqs_client, client)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            for key, (queue_url, sqs_client, client) in list(self.queues.items()):
                try:
                    if client.set(f"{key}:reconciling", 1, nx=True,
                                  px=max(1, int(self.interval_s * 1000) - 50)):
                        self.reconcile(key, queue_url, sqs_client, client)
                except (redis.RedisError, ClientError, BotoCoreError, OSError) as exc:
                    log.warning("could not reconcile %s with SQS: %s", queue_url, exc)

    def reconcile(self, key: str, queue_url: str, sqs_client: Any, client: redis.Redis,
                  settle_s: float = SETTLE_S) -> tuple[int, int, int]:
        """One reading: returns (ids trimmed, placeholders added, count after)."""
        before = client.zcard(key)
        total = sqs_total(sqs_client, queue_url)
        time.sleep(settle_s)
        trimmed, added, after = RECONCILE(
            client, [key, f"{key}:drift"],
            (total, before, self.lag_s, max(3 * self.interval_s, 30), "untracked:"))
        if trimmed or added:
            log.warning("SQS queue %s: the admission count drifted from SQS's; "
                        "removed %d id(s), added %d, now %d", queue_url, trimmed, added, after)
        return int(trimmed), int(added), int(after)
