"""Fewer Redis round trips per message for a consuming worker (Floodgate's Redis channel).

kombu's Redis channel costs a worker four sequential round trips per message: a
``BRPOP`` for one message, a pipeline recording it as unacked (``ZADD unacked_index``
+ ``HSET unacked``), the task's own work, and a pipeline removing it on ack; and it
builds a new ``redis.Redis`` object for each pipeline. `BatchConsume`, mixed
into `celery_floodgate.transports.redis.Channel`, changes three things:

* **Fetch a batch, recorded in the same call.** The ``BRPOP`` still waits for the
  first message (an idle worker blocks, it does not spin); then ``consume.lua``, in
  one call, records that message as unacked, pops up to the worker's free prefetch
  slots minus one more from the same queues (priority order, right end, as ``BRPOP``)
  and records each of them as kombu's ``QoS.append`` would: ``ZADD unacked_index tag
  now`` and ``HSET unacked tag [message, exchange, routing_key]``. Popping and
  recording in one script closes the window in which a popped message was recorded
  nowhere. Two round trips per batch instead of two per message.
* **Acks in batches.** An ack marks the message done in memory at once (the prefetch
  window frees) and queues its tag; the tags are removed from Redis by the next
  ``consume.lua`` call (no extra round trip at a backlog), by a timer every
  ``ACK_FLUSH_S`` on the worker's event loop when the queue runs dry, before the
  visibility sweep, and when the channel closes (warm shutdown, hard time limit).
  **Delivery stays at least once**: a worker killed between a task's end and the
  flush leaves those messages in ``unacked``, and kombu's visibility-timeout restore
  delivers them again, so a crash can rerun at most one batch of *finished* tasks
  (up to the prefetch count, plus whatever finished within ``ACK_FLUSH_S``), flagged
  ``redelivered`` (tasks.runtime.base counts them). Tasks with side effects need an
  idempotency key, as they already do for a crash mid-task. With early acks
  (``acks_late=False``) the same window means a task acked on receipt may run again.
* **One client** for the bookkeeping: ``conn_or_acquire`` reuses one ``redis.Redis``
  on the channel's pool instead of building one per call.

Unchanged: delivery tags (assigned at publish, ``_inplace_augment_message``), the
unacked hash and index format, kombu's ``restore_visible`` sweep, ``restore_by_tag``,
``restore_unacked`` at shutdown and the ``redelivered`` flag. Messages fetched but not
yet handed to Celery sit in ``QoS._delivered`` as `Held` placeholders, so they
count against the prefetch window and a warm shutdown or hard time limit hands them
back with the rest. While a batch waits behind long tasks, their ``unacked_index``
scores are refreshed (one ``ZADD XX``) so the visibility clock of a held message starts
when it runs, as kombu's does when it fetches one message at a time.

Needs Redis >= 6.2 (``RPOP`` with a count); with ``global_keyprefix`` or without ack
emulation the channel behaves exactly as kombu's.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from time import time
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis import Redis
from redis.exceptions import ResponseError

from celery_floodgate.transports import LuaScript

if TYPE_CHECKING:  # the mixin's attributes and super() are those of kombu's Redis channel
    from kombu.transport.redis import Channel as _RedisChannel
else:
    _RedisChannel = object

log = logging.getLogger("floodgate.redis_consume")

CONSUME = LuaScript("consume.lua")
#: Messages taken per round trip at most (also when prefetch is unlimited).
BATCH_MAX = 100
#: Seconds between ack flushes on the event loop when no fetch carries them.
ACK_FLUSH_S = 0.1
#: Acks queued beyond this are flushed at once.
ACK_PENDING_MAX = 256


class Held:
    """A message fetched and recorded as unacked, not yet handed to Celery."""

    __slots__ = ("delivery_tag", "fetched_at", "_raw")

    def __init__(self, delivery_tag: str, fetched_at: float, raw: dict[str, Any]) -> None:
        self.delivery_tag, self.fetched_at, self._raw = delivery_tag, fetched_at, raw

    def serializable(self) -> dict[str, Any]:
        """The raw message: kombu's emergency dump, should a restore fail."""
        return self._raw


class BatchQoS(kombu_redis.QoS):  # type: ignore[misc]  # kombu is read as Any
    """kombu's Redis QoS with held messages and batched acks."""

    channel: BatchConsume
    visibility_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: deque[str] = deque()  # acked tags not yet removed from Redis

    # -- fetch side ------------------------------------------------------------------
    def hold(self, delivery_tag: str, fetched_at: float, raw: dict[str, Any]) -> None:
        """Count a fetched message against the prefetch window until Celery takes it."""
        if self._dirty:
            self._flush()
        self._quick_append(delivery_tag, Held(delivery_tag, fetched_at, raw))

    def append(self, message: Any, delivery_tag: str) -> None:
        """Celery took the message: it replaces its placeholder (kombu's ``append`` else)."""
        held = self._delivered.get(delivery_tag)
        if held.__class__ is not Held:  # not fetched by consume.lua: kombu's way
            super().append(message, delivery_tag)
            return
        if time() - held.fetched_at > self._refresh_after:
            self._refresh_held()
        if self._dirty:
            self._flush()
        self._quick_append(delivery_tag, message)  # replaces the placeholder in place

    @property
    def _refresh_after(self) -> float:
        return min(1.0, self.visibility_timeout / 10)

    def _refresh_held(self) -> None:
        """Restart the visibility clock of the messages still waiting in this batch."""
        now = time()
        held = [m for m in self._delivered.values() if m.__class__ is Held]
        if held:
            self.channel._fg_client().zadd(
                self.unacked_index_key, {m.delivery_tag: now for m in held}, xx=True)
            for m in held:
                m.fetched_at = now

    def give_back(self, tags: list[str]) -> None:
        """Put held messages that will not be handed to Celery back on their queue."""
        for tag in tags:
            if self._delivered.get(tag).__class__ is Held:
                del self._delivered[tag]
                self.restore_by_tag(tag, client=self.channel._fg_client(), leftmost=True)

    # -- ack side --------------------------------------------------------------------
    def ack(self, delivery_tag: str) -> None:
        """Done in memory now; removed from Redis with the next batch of acks."""
        if not self.channel._fg_batching:
            super().ack(delivery_tag)
            return
        self._acks.append(delivery_tag)
        self._quick_ack(delivery_tag)  # done in memory: the prefetch window frees now
        if len(self._acks) >= ACK_PENDING_MAX:
            self.flush_acks()

    def take_acks(self) -> list[str]:
        """The queued acks, taken out of the queue (put them back with `return_acks`)."""
        acks, tags = self._acks, []
        while True:  # popleft is atomic: an ack from another thread is never lost
            try:
                tags.append(acks.popleft())
            except IndexError:
                return tags

    def return_acks(self, tags: list[str]) -> None:
        """Queue taken acks again, in front (they could not be sent)."""
        self._acks.extendleft(reversed(tags))

    def flush_acks(self) -> None:
        """Remove the queued acks from Redis now, in one call."""
        tags = self.take_acks()
        if not tags:
            return
        try:
            CONSUME(self.channel._fg_client(), [self.unacked_index_key, self.unacked_key],
                    (0, 0, len(tags), *tags))
        except BaseException:
            self.return_acks(tags)
            raise

    # -- every path that reads or restores unacked messages sends the acks first --------
    def restore_unacked(self, client: Redis | None = None) -> None:
        """kombu's, after the queued acks are sent."""
        self.flush_acks()
        super().restore_unacked(client)

    def restore_unacked_once(self, stderr: Any = None) -> None:
        """kombu's, after the queued acks are sent (or logged if they cannot be)."""
        try:
            self.flush_acks()
        except Exception:  # noqa: BLE001 - they stay unacked: redelivered, at least once
            log.exception("could not send %d acks before restoring", len(self._acks))
        super().restore_unacked_once(stderr)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's, after the queued acks are sent."""
        self.flush_acks()
        super().restore_visible(*args, **kwargs)


_NO_HUB = object()


class BatchConsume(_RedisChannel):  # type: ignore[misc]  # kombu is read as Any
    """Channel mixin: ``class Channel(BatchConsume, kombu_redis.Channel)``."""

    QoS = BatchQoS
    qos: BatchQoS
    _fg_sync: Redis | None = None
    _fg_timer: Any = None  # the hub's timer entry, _NO_HUB without a hub, None before
    _fg_disabled = False

    @property
    def _fg_batching(self) -> bool:
        return self.ack_emulation and not self.global_keyprefix and not self._fg_disabled

    # -- one client for the bookkeeping ----------------------------------------------
    def _fg_client(self) -> Redis:
        client = self._fg_sync
        if client is None or client.connection_pool is not self.pool:
            client = self._fg_sync = self._create_client()
        return client

    @contextmanager
    def conn_or_acquire(self, client: Redis | None = None) -> Iterator[Redis]:
        """The client given, or the channel's one bookkeeping client (not a new one per call)."""
        yield client if client else self._fg_client()

    # -- consuming ---------------------------------------------------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._fg_batching:
            if self._fg_timer is None:
                self._fg_start_timer()
            if self._fg_timer is _NO_HUB and self.qos._acks:
                self.qos.flush_acks()  # no timer: never hold acks across a blocking BRPOP
        super()._brpop_start(timeout)

    def _fg_start_timer(self) -> None:
        from kombu.asynchronous import get_event_loop

        hub = get_event_loop()
        self._fg_timer = (hub.call_repeatedly(ACK_FLUSH_S, self._fg_flush_quietly)
                          if hub is not None else _NO_HUB)

    def _fg_flush_quietly(self) -> None:
        if self.qos._acks:
            try:
                self.qos.flush_acks()
            except self.connection_errors:
                log.debug("could not send acks; retrying", exc_info=True)

    def _brpop_read(self, **options: Any) -> bool:
        if not self._fg_batching:
            read: bool = super()._brpop_read(**options)
            return read
        # kombu's _brpop_read up to the delivery, which _fg_deliver_batch does
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                        **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
        finally:
            self._in_poll = None
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7 only
            if flush_reauth is not None:
                flush_reauth()
        self._fg_deliver_batch(dest, item)
        return True

    def _fg_lists(self) -> list[tuple[str, str]]:
        """(list key, queue) in BRPOP's order: priority first, then the queue cycle."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        pairs = {self._q_for_pri(q, pri): q for pri in self.priority_steps for q in queues}
        return list(pairs.items())

    def _fg_deliver_batch(self, dest: str, item: bytes | str) -> None:
        qos = self.qos
        free = qos.can_consume_max_estimate()
        more = BATCH_MAX - 1 if free is None else max(0, min(free, BATCH_MAX) - 1)
        if self._closing:  # kombu reads a pending BRPOP reply at close: take no more
            more = 0
        lists = self._fg_lists() if more else []
        acks = qos.take_acks()
        now = time()
        try:
            reply = CONSUME(self._fg_client(),
                            [self.unacked_index_key, self.unacked_key, *(k for k, _ in lists)],
                            (now, more, len(acks), *acks, 0, item))
        except ResponseError:  # e.g. Redis < 6.2: kombu's way from now on
            qos.return_acks(acks)
            log.warning("consume.lua failed; this channel falls back to kombu's one message "
                        "per BRPOP", exc_info=True)
            self._fg_disabled = True
            qos.flush_acks()
            self.connection._deliver(loads(bytes_to_str(item)), dest)
            return
        except BaseException:
            qos.return_acks(acks)
            self.connection._deliver(loads(bytes_to_str(item)), dest)  # kombu's way, or raises
            raise
        batch = []
        for i in range(0, len(reply), 3):
            index, payload = int(reply[i]), loads(bytes_to_str(reply[i + 1]))
            queue = dest if index == 0 else lists[index - 1][1]
            tag = None
            if int(reply[i + 2]):
                tag = payload["properties"]["delivery_tag"]
                qos.hold(tag, now, payload)
            batch.append((payload, queue, tag))
        done = 0
        try:
            for payload, queue, _ in batch:
                self.connection._deliver(payload, queue)
                done += 1
        finally:
            if done < len(batch):  # a delivery raised: the rest go back to their queue
                qos.give_back([tag for _, _, tag in batch[done:] if tag is not None])

    def close(self) -> None:
        """Stop the ack timer and send the queued acks, then kombu's close."""
        if self._fg_timer not in (None, _NO_HUB):
            self._fg_timer.cancel()
        self._fg_timer = None
        if getattr(self, "_qos", None) is not None:
            try:
                self.qos.flush_acks()
            except Exception:  # noqa: BLE001 - they stay unacked: redelivered, at least once
                log.exception("could not send acks at close")
        super().close()
