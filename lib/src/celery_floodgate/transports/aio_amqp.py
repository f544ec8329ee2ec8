"""Admission on RabbitMQ from asyncio: aio-pika, publisher confirms, the broker's own limit.

One robust connection and one channel with publisher confirms per app and event
loop, shared by every concurrent submission: each publish writes its frames and
awaits its own confirm, so confirms are pipelined. A bounded queue refuses as on
the threaded path (`.amqp`): ``x-max-length`` with ``reject-publish`` makes the
broker nack the message past the limit, and a nack becomes `QueueFull`. No confirm
within ``publish_timeout_s`` -> `BrokerUnavailable` (the message may have landed).

The properties are kombu's (content type and encoding, headers, delivery mode,
priority, correlation id, reply-to, expiration), plus ``message_id``: aiormq gives
every publish one (it matches returned messages by it), so it is set to the task id
rather than a random one. Fair admission reserves the tenant's place in the meter
(`celery_floodgate.tenants`) in a thread, as the meter's client is a blocking one.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aiormq.abc import ConfirmationFrameType

from celery_floodgate.aio_message import Outgoing
from celery_floodgate.errors import BrokerUnavailable, QueueFull
from celery_floodgate.fairness import identify, identify_batch
from celery_floodgate.tenants import EPOCH_HEADER, Reservation, tenancy_of
from celery_floodgate.transports.aio_redis import to_the_end
from celery_floodgate.transports.redis import SENT_AT_HEADER

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard
    from celery_floodgate.limits import Limit

#: kombu property -> aiormq's name for it (AMQP 0-9-1 basic properties).
_PROPERTIES = {"correlation_id": "correlation_id", "reply_to": "reply_to",
               "delivery_mode": "delivery_mode", "expiration": "expiration",
               "message_id": "message_id", "timestamp": "timestamp", "type": "message_type",
               "user_id": "user_id", "app_id": "app_id", "cluster_id": "cluster_id"}


def properties_of(out: Outgoing) -> aiormq.spec.Basic.Properties:
    """The AMQP properties py-amqp would write for this message."""
    found = {_PROPERTIES[k]: v for k, v in out.properties.items()
             if k in _PROPERTIES and v is not None}
    found.setdefault("message_id", out.task_id)
    return aiormq.spec.Basic.Properties(
        content_type=out.content_type, content_encoding=out.content_encoding,
        headers=out.headers, priority=out.priority, **found)


def body_of(out: Outgoing) -> bytes:
    """The body as py-amqp writes it: text in its content encoding (utf-8 if none)."""
    if isinstance(out.body, str):
        out.content_encoding = out.content_encoding or "utf-8"
        return out.body.encode(out.content_encoding)
    return out.body


class AmqpPublisher:
    """One app's publishes on one event loop."""

    def __init__(self, guard: Guard, url: str, connect_timeout_s: float) -> None:
        self.guard, self.url, self.connect_timeout_s = guard, url, connect_timeout_s
        self._connection: Any = None
        self._channel: Any = None
        self._lock = asyncio.Lock()

    async def channel(self) -> aiormq.abc.AbstractChannel:
        """The shared channel (connected on first use; aio-pika reconnects it)."""
        if self._channel is None:
            async with self._lock:
                if self._channel is None:
                    try:
                        connection = await aio_pika.connect_robust(
                            self.url, timeout=self.connect_timeout_s)
                        self._channel = await connection.channel(publisher_confirms=True)
                    except (OSError, asyncio.TimeoutError, aiormq.AMQPError) as exc:
                        raise BrokerUnavailable("", f"{type(exc).__name__}: {exc}"[:200]) \
                            from None
                    self._connection = connection
        underlay: aiormq.abc.AbstractChannel = await self._channel.get_underlay_channel()
        return underlay

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None

    async def _publish(self, out: Outgoing) -> ConfirmationFrameType | None:
        queue = out.routing_key
        try:
            channel = await self.channel()
            body = body_of(out)
            return await channel.basic_publish(
                body, exchange=out.exchange, routing_key=out.routing_key,
                properties=properties_of(out), mandatory=False,
                timeout=self.guard.publish_timeout_s)
        except aiormq.exceptions.DeliveryError as exc:
            if isinstance(exc.frame, aiormq.spec.Basic.Nack):
                return exc.frame  # the queue is full (reject-publish)
            raise BrokerUnavailable(queue, f"{type(exc).__name__}: {exc}"[:200]) from None
        except asyncio.TimeoutError:
            raise BrokerUnavailable(queue, "the broker did not confirm in time") from None
        except (OSError, aiormq.AMQPError, aio_pika.exceptions.AMQPException) as exc:
            raise BrokerUnavailable(queue, f"{type(exc).__name__}: {exc}"[:200]) from None

    async def publish(self, out: Outgoing) -> tuple[bool, bool]:
        """Publish and await the confirm: ``(acked, cancelled meanwhile)``."""
        frame, cancelled = await to_the_end(self._publish(out))
        return isinstance(frame, aiormq.spec.Basic.Ack), cancelled

    def _stamp(self, out: Outgoing) -> None:
        self.guard.check_eta(out.routing_key, out.headers.get("eta"))
        out.headers.setdefault(SENT_AT_HEADER, time.time())

    async def submit(self, out: Outgoing) -> None:
        """Publish one message: admitted, QueueFull (the broker's nack), BrokerUnavailable."""
        guard, queue = self.guard, out.routing_key
        limit = guard.limit_for(queue)
        if limit is None:
            acked, _ = await self.publish(out)
            if not acked:
                raise BrokerUnavailable(queue, "the broker refused the message (nack)")
            return
        self._stamp(out)
        tenancy = tenancy_of(guard)
        tenant = criticality = None
        epoch = None
        if tenancy is not None:
            tenant, criticality = identify(out.headers)
            reservation = await self._reserve(queue, limit, tenant, criticality, 1)
            if not reservation.admit:
                raise await asyncio.to_thread(tenancy.refusal, queue, reservation,
                                              guard.length_bound(limit), tenant, criticality)
            epoch = reservation.epoch
            if epoch is not None:
                out.headers[EPOCH_HEADER] = epoch
        # A publish that fails unconfirmed keeps its place: the message may have landed
        # (the meter's reconcile repairs the count if not).
        acked, cancelled = await self.publish(out)
        if acked:
            guard.admitted(queue, tenant, criticality)
            return
        refused = await self._refused(queue, limit, tenant, criticality, epoch, 1)
        if cancelled:
            raise asyncio.CancelledError()
        raise refused

    async def _reserve(self, queue: str, limit: Limit, tenant: str, criticality: str,
                       n: int) -> Reservation:
        """The meter's reservation, in a thread; one made after its caller was cancelled is
        given back."""
        tenancy = tenancy_of(self.guard)
        assert tenancy is not None
        bound = self.guard.length_bound(limit)
        task = asyncio.ensure_future(asyncio.to_thread(tenancy.reserve, queue, tenant,
                                                       criticality, bound, n))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: done.cancelled() or done.exception() or (
                asyncio.ensure_future(asyncio.to_thread(
                    tenancy.release, queue, tenant, done.result().epoch,
                    done.result().reserved))))
            raise

    async def _refused(self, queue: str, limit: Limit, tenant: str | None,
                       criticality: str | None, epoch: int | None, n: int) -> QueueFull:
        """The QueueFull of ``n`` nacked messages (their places given back); its Retry-After
        ticket is drawn from the meter in a thread."""
        guard = self.guard
        bound = guard.length_bound(limit)
        tenancy = tenancy_of(guard)
        if tenancy is not None:
            await asyncio.to_thread(tenancy.release, queue, tenant, epoch, n)
        return await asyncio.to_thread(guard.refuse, queue, bound, bound, tenant=tenant,
                                       criticality=criticality)

    async def submit_many(self, queue: str, limit: Limit,
                          outs: list[Outgoing]) -> list[tuple[int, QueueFull]]:
        """`celery_floodgate.batch`'s RabbitMQ admission: every message published at once,
        the confirms awaited together; a nacked message is refused."""
        from celery_floodgate.batch import _same

        guard = self.guard
        for out in outs:
            self._stamp(out)
        tenancy = tenancy_of(guard)
        tenant = criticality = None
        epoch = None
        meter_refused: QueueFull | None = None
        sent = outs
        if tenancy is not None:
            tenant, criticality = identify_batch(out.headers for out in outs)
            reservation = await self._reserve(queue, limit, tenant, criticality, len(outs))
            epoch = reservation.epoch
            if not reservation.admit:
                meter_refused = await asyncio.to_thread(
                    tenancy.refusal, queue, reservation, guard.length_bound(limit), tenant,
                    criticality)
            sent = outs[:reservation.reserved]
            for out in sent:
                if epoch is not None:
                    out.headers[EPOCH_HEADER] = epoch
        outcomes = await asyncio.gather(*(self.publish(out) for out in sent))
        refused: list[tuple[int, QueueFull]] = []
        first: QueueFull | None = None
        nacked = [i for i, (acked, _) in enumerate(outcomes) if not acked]
        for i, (acked, _) in enumerate(outcomes):
            if acked:
                guard.admitted(queue, tenant, criticality)
        if nacked:
            first = await self._refused(queue, limit, tenant, criticality, epoch, len(nacked))
            refused = [(i, first if k == 0 else _same(guard, queue, first))
                       for k, i in enumerate(nacked)]
        if meter_refused is not None:
            refused.extend((i, meter_refused if i == len(sent) else
                            _same(guard, queue, meter_refused))
                           for i in range(len(sent), len(outs)))
        return refused
