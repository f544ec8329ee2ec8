"""Redis transport whose push refuses atomically when the queue is at its limit."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from celery_floodgate.errors import BrokerUnavailable
from celery_floodgate.fairness import identify
from celery_floodgate.limits import RETRY_AFTER_MAX_S
from celery_floodgate.transports import LuaScript, broker_id, guard_of, redis_fair
from celery_floodgate.transports.redis_consume import BatchConsume

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard

ADMIT = LuaScript("line.lua", "admit.lua")
SENT_AT_HEADER = "fg_sent_at"


class Admission:
    """The guarded push, mixed into a kombu Redis channel (plain, or Sentinel's)."""

    # Batched publishes would bypass the per-message admission below.
    supports_batch_publish = False
    connection: Any

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        guard = guard_of(self.connection.client)
        if guard is None or (limit := guard.limit_for(queue)) is None:
            # reply, pidbox and other apps' queues are not ours
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        headers = message.setdefault("headers", {})
        guard.check_eta(queue, headers.get("eta"))
        headers.setdefault(SENT_AT_HEADER, time.time())  # for the oldest message's age
        bound = guard.length_bound(limit)
        room = guard.room_in_broker(queue, self.broker_id(), bound)
        channel: Any = self
        lists = list(dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps))
        target = channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False))
        if guard.fairness is not None:
            self._put_fair(guard, queue, message, lists, lists.index(target) + 1, bound, room)
            return
        rate = guard.drain_rate(queue) or 0
        args = (room, lists.index(target) + 1, dumps(message), rate,
                RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0,
                guard.pending_tickets(queue))
        try:
            reply = ADMIT(self._admit_client(guard), [*lists, guard.meter.keys.ticket(queue)], args)
        except redis.TimeoutError as exc:
            raise BrokerUnavailable(queue, f"the broker did not answer in time: {exc}") from None
        if not reply[0]:  # the depth reported counts what workers hold, as the limit does
            wait_s = float(reply[2])
            raise guard.refuse(queue, int(reply[1]) + bound - room, bound,
                               wait_s=wait_s if wait_s >= 0 else None)
        guard.admitted(queue)

    def _put_fair(self, guard: Guard, queue: str, message: dict[str, Any], lists: list[str],
                  index: int, bound: int, room: int) -> None:
        """`_put` with shares and classes (`celery_floodgate.fairness`)."""
        tenant, criticality = identify(message["headers"])
        try:
            reply = redis_fair.admit(guard, self._admit_client(guard), queue, lists, bound, room,
                                     tenant, criticality, [(index, dumps(message))])
        except redis.TimeoutError as exc:
            raise BrokerUnavailable(queue, f"the broker did not answer in time: {exc}") from None
        if not reply.admitted:
            raise redis_fair.refusal(guard, queue, reply, bound, room, tenant, criticality)
        guard.admitted(queue, tenant, criticality)

    def broker_id(self) -> str:
        """Which broker this is (password masked): prefetch windows are counted per broker."""
        found = getattr(self, "_fg_broker_id", None)
        if found is None:
            found = self._fg_broker_id = broker_id(self.connection.client)
        return found

    def _admit_client(self, guard: Guard) -> redis.Redis:
        """A client whose reads time out, kept apart from the worker's blocking BRPOPs."""
        client: redis.Redis | None = getattr(self, "_fg_admit_client", None)
        if client is None:
            client = self._fg_admit_client = self._timed_client(guard.publish_timeout_s)
        return client

    def _timed_client(self, timeout_s: float) -> redis.Redis:
        """A client of the channel's Redis (TCP, TLS or unix socket) with a read timeout."""
        params = {**self._connparams(), "socket_timeout": timeout_s}  # type: ignore[attr-defined]
        return redis.Redis(connection_pool=redis.ConnectionPool(**params))


class Channel(Admission, BatchConsume, kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with the guarded push and the batched consume."""


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """redis://, rediss:// and redis+socket://, guarded (install() sets it)."""

    Channel = Channel
