"""Admission on Redis from asyncio: the Lua scripts of the threaded path, run by redis.asyncio.

The message is the envelope kombu's virtual channel writes (``prepare_message``,
``_inplace_augment_message``, then the Redis channel's ``_put``): the body encoded
as the channel encodes it (base64), a fresh delivery tag, ``delivery_info``, and the
priority's sub-list named as ``_q_for_pri`` names it. The channel's settings
(separator, priority steps, body encoding, connection parameters) are read once per
app from a kombu channel, in a thread; nothing sync is made per submission.

A bounded queue is admitted by ``admit.lua`` (``admit_fair.lua`` with a fairness
policy; ``admit_many.lua`` for a batch), exactly as `.redis` and
`celery_floodgate.batch` admit: the same keys, the same arguments, the same replies
turned into the same `QueueFull` by the guard.
"""
from __future__ import annotations

import asyncio
import time
from bisect import bisect
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio as aredis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import Channel as VirtualChannel
from kombu.utils.json import dumps
from kombu.utils.uuid import uuid
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from celery_floodgate.aio_message import Fallback, Outgoing
from celery_floodgate.errors import BrokerUnavailable, QueueFull
from celery_floodgate.fairness import identify, one_identity
from celery_floodgate.limits import RATE_CACHE_S, RETRY_AFTER_MAX_S
from celery_floodgate.transports import LuaScript, broker_id, redis_fair
from celery_floodgate.transports.redis import ADMIT, SENT_AT_HEADER

if TYPE_CHECKING:
    from celery_floodgate.guard import Guard
    from celery_floodgate.limits import Limit

ADMIT_MANY = LuaScript("line.lua", "admit_many.lua")
#: Messages per Lua call of a batch (as `celery_floodgate.batch`).
SCRIPT_MESSAGES = 1000
T = TypeVar("T")
_ASYNC_CONNECTIONS = {redis.SSLConnection: aredis.SSLConnection,
                      redis.UnixDomainSocketConnection: aredis.UnixDomainSocketConnection}


@dataclass(frozen=True)
class RedisSettings:
    """What a kombu Redis channel of the app would use, read once."""

    params: dict[str, Any]
    sep: str
    priority_steps: tuple[int, ...]
    body_encoding: str | None
    default_priority: int
    min_priority: int
    max_priority: int
    broker: str

    def q_for_pri(self, queue: str, priority: int) -> str:
        """The list of ``queue`` holding that priority (kombu's ``_q_for_pri``)."""
        step = self.priority_steps[bisect(self.priority_steps, priority) - 1]
        return f"{queue}{self.sep}{step}" if step else queue

    def lists(self, queue: str) -> list[str]:
        return list(dict.fromkeys(self.q_for_pri(queue, p) for p in self.priority_steps))

    def priority_of(self, message: dict[str, Any]) -> int:
        """kombu's ``_get_message_priority``: the property, within the channel's bounds."""
        try:
            found = int(message["properties"]["priority"])
        except (TypeError, ValueError, KeyError):
            return self.default_priority
        return max(min(found, self.max_priority), self.min_priority)

    def envelope(self, out: Outgoing) -> dict[str, Any]:
        """The message as the channel's ``_put`` receives it (before its JSON)."""
        properties = out.properties
        properties.setdefault("delivery_info", {})
        properties.setdefault("priority", out.priority or self.default_priority)
        body: Any = out.body
        encoding = self.body_encoding
        if encoding and encoding.lower() != "utf-8":
            body = VirtualChannel.codecs[encoding].encode(body)
        properties.update(body_encoding=encoding, delivery_tag=uuid())
        properties["delivery_info"].update(exchange=out.exchange, routing_key=out.routing_key)
        return {"body": body, "content-encoding": out.content_encoding,
                "content-type": out.content_type, "headers": out.headers,
                "properties": properties}


def read_settings(app: Any) -> RedisSettings:
    """The app's Redis channel settings (blocking: connects once; run it in a thread)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        if isinstance(channel, kombu_redis.SentinelChannel):
            raise Fallback("Redis behind Sentinel")
        if channel.global_keyprefix:
            raise Fallback("the global_keyprefix transport option")
        params = dict(channel._connparams())
        return RedisSettings(params, channel.sep, tuple(channel.priority_steps),
                             channel.body_encoding, channel.default_priority,
                             channel.min_priority, channel.max_priority, broker_id(conn))


def make_client(settings: RedisSettings, timeout_s: float) -> aredis.Redis:
    """An asyncio client of the same Redis, its reads timing out after ``timeout_s``.

    No retries: a command re-sent after its reply timed out could admit a message twice.
    redis-py checks a pooled connection before each use, so a restarted Redis costs the
    submission that meets the dead connection nothing but a reconnect.
    """
    params = dict(settings.params)
    sync_class = params.pop("connection_class", redis.Connection)
    connection_class: Any = aredis.Connection
    for sync, async_class in _ASYNC_CONNECTIONS.items():
        if issubclass(sync_class, sync):
            connection_class = async_class
    params.pop("retry_on_timeout", None)
    max_connections = params.pop("max_connections", None) or 10
    params.update(socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    pool = aredis.BlockingConnectionPool(connection_class=connection_class,
                                         max_connections=max_connections,
                                         timeout=timeout_s, **params)
    return aredis.Redis(connection_pool=pool)


async def run_script(script: LuaScript, client: aredis.Redis, keys: list[str],
                     args: tuple[Any, ...]) -> Any:
    """`LuaScript.__call__`, awaited."""
    # Typed as Any: redis-py's stubs call these sync-or-async, differently by release.
    call: Any = client.evalsha
    try:
        return await call(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        call = client.eval
        return await call(script.text, len(keys), *keys, *args)


async def to_the_end(awaitable: Awaitable[T]) -> tuple[T, bool]:
    """Await ``awaitable`` to its end even if cancelled meanwhile: ``(result, cancelled)``.

    Once an admission is on its way the broker decides it atomically; the caller
    learns the outcome rather than being left not knowing whether it was enqueued."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.done():
                if task.cancelled():
                    raise
                return task.result(), True
            cancelled = True


class RedisAdmitter:
    """One app's admissions on one event loop."""

    def __init__(self, guard: Guard, settings: RedisSettings) -> None:
        self.guard, self.settings = guard, settings
        self.client = make_client(settings, guard.publish_timeout_s)
        self._refreshing: dict[str, asyncio.Future[None]] = {}

    async def close(self) -> None:
        await self.client.aclose()

    async def refresh(self, queue: str) -> None:
        """Read the meter (drain rate, prefetched) in a thread when the guard's cached
        reading is stale, so the admission itself never waits on the meter."""
        guard, broker = self.guard, self.settings.broker
        now = time.monotonic()
        rate, held = guard._rates.get(queue), guard._held.get((queue, broker))
        if rate is not None and held is not None and now - rate[0] <= RATE_CACHE_S \
                and now - held[0] <= RATE_CACHE_S:
            return
        pending = self._refreshing.get(queue)
        if pending is None:
            def read() -> None:
                guard.drain_rate(queue)
                guard.room_in_broker(queue, broker, 2)

            pending = self._refreshing[queue] = asyncio.ensure_future(asyncio.to_thread(read))
            pending.add_done_callback(lambda _: self._refreshing.pop(queue, None))
        await asyncio.shield(pending)

    def _stamp(self, out: Outgoing) -> dict[str, Any]:
        message = self.settings.envelope(out)
        headers = message.setdefault("headers", {})
        self.guard.check_eta(out.routing_key, headers.get("eta"))
        headers.setdefault(SENT_AT_HEADER, time.time())
        return message

    async def submit(self, out: Outgoing) -> None:
        """Push one message; QueueFull (nothing pushed), BrokerUnavailable, or admitted."""
        queue, guard = out.routing_key, self.guard
        limit = guard.limit_for(queue)
        if limit is None:
            await self._push_unbounded(out)
            return
        await self.refresh(queue)
        message = self._stamp(out)
        bound = guard.length_bound(limit)
        room = guard.room_in_broker(queue, self.settings.broker, bound)
        lists = self.settings.lists(queue)
        index = lists.index(self.settings.q_for_pri(queue, self.settings.priority_of(message))) + 1
        if guard.fairness is not None:
            await self._submit_fair(queue, message, lists, index, bound, room)
            return
        rate = guard.drain_rate(queue) or 0
        args = (room, index, dumps(message), rate, RETRY_AFTER_MAX_S,
                max(1, bound) / rate if rate else 0, guard.pending_tickets(queue))
        reply, cancelled = await self._call(queue, ADMIT, [*lists, guard.meter.keys.ticket(queue)],
                                            args)
        if not reply[0]:
            wait_s = float(reply[2])
            refused = guard.refuse(queue, int(reply[1]) + bound - room, bound,
                                   wait_s=wait_s if wait_s >= 0 else None)
            if cancelled:
                raise asyncio.CancelledError()
            raise refused
        guard.admitted(queue)

    async def _submit_fair(self, queue: str, message: dict[str, Any], lists: list[str],
                           index: int, bound: int, room: int) -> None:
        guard = self.guard
        tenant, criticality = identify(message["headers"])
        keys, args = redis_fair.admit_arguments(guard, queue, lists, bound, room, tenant,
                                                criticality, [(index, dumps(message))])
        raw, cancelled = await self._call(queue, redis_fair.ADMIT_FAIR, keys, args)
        reply = redis_fair.parse_reply(raw)
        if not reply.admitted:
            refused = redis_fair.refusal(guard, queue, reply, bound, room, tenant, criticality)
            if cancelled:
                raise asyncio.CancelledError()
            raise refused
        guard.admitted(queue, tenant, criticality)

    async def _call(self, queue: str, script: LuaScript, keys: list[str],
                    args: tuple[Any, ...]) -> tuple[Any, bool]:
        try:
            return await to_the_end(run_script(script, self.client, keys, args))
        except (redis.RedisError, OSError) as exc:
            raise BrokerUnavailable(queue, f"{type(exc).__name__}: {exc}"[:200]) from None

    async def _push_unbounded(self, out: Outgoing) -> None:
        """kombu's ``_put`` for a queue the guard does not bound (x-expires included)."""
        message = self.settings.envelope(out)
        queue = out.routing_key
        key = self.settings.q_for_pri(queue, self.settings.priority_of(message))
        expires_ms = next((q.queue_arguments.get("x-expires") for q in out.declare
                           if getattr(q, "name", None) == queue and q.queue_arguments), None)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, dumps(message))
            if expires_ms is not None:
                for step in self.settings.priority_steps:
                    pipe.pexpire(self.settings.q_for_pri(queue, step), expires_ms)
            try:
                await to_the_end(pipe.execute())
            except (redis.RedisError, OSError) as exc:
                raise BrokerUnavailable(queue, f"{type(exc).__name__}: {exc}"[:200]) from None

    async def submit_many(self, queue: str, limit: Limit,
                          outs: list[Outgoing]) -> list[tuple[int, QueueFull]]:
        """`celery_floodgate.batch`'s Redis admission, awaited: in order, exactly what fits."""
        from celery_floodgate.batch import _same

        guard = self.guard
        await self.refresh(queue)
        bound = guard.length_bound(limit)
        room = guard.room_in_broker(queue, self.settings.broker, bound)
        lists = self.settings.lists(queue)
        now = time.time()
        messages = []
        for out in outs:
            message = self.settings.envelope(out)
            guard.check_eta(queue, message["headers"].get("eta"))
            message["headers"].setdefault(SENT_AT_HEADER, now)
            messages.append(message)
        # (tenant, class) written into the headers before they are serialized, as `.redis`
        who = {identify(m["headers"]) for m in messages} if guard.fairness is not None else set()
        payload = [(lists.index(self.settings.q_for_pri(queue, self.settings.priority_of(m))) + 1,
                    dumps(m)) for m in messages]
        if guard.fairness is not None:
            return await self._many_fair(queue, lists, bound, room, who, payload)
        refused: list[tuple[int, QueueFull]] = []
        keys = [*lists, guard.meter.keys.ticket(queue)]
        for start in range(0, len(payload), SCRIPT_MESSAGES):
            part = payload[start:start + SCRIPT_MESSAGES]
            rate = guard.drain_rate(queue) or 0
            args = (room, rate, RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0,
                    guard.pending_tickets(queue), *(x for pair in part for x in pair))
            reply, _ = await self._call(queue, ADMIT_MANY, keys, args)
            admitted, depth = int(reply[0]), int(reply[1])
            for _ in range(admitted):
                guard.admitted(queue)
            if admitted < len(part):
                wait = reply[2].decode() if isinstance(reply[2], bytes) else str(reply[2])
                wait_s = float(wait) if wait not in ("", "-1") else None
                first = guard.refuse(queue, depth + admitted + bound - room, bound, wait_s=wait_s)
                refused.append((start + admitted, first))
                refused.extend((i, _same(guard, queue, first))
                               for i in range(start + admitted + 1, len(payload)))
                break
        return refused

    async def _many_fair(self, queue: str, lists: list[str], bound: int, room: int,
                         who: set[tuple[str, str]], payload: list[tuple[int, str]]
                         ) -> list[tuple[int, QueueFull]]:
        from celery_floodgate.batch import _same

        guard = self.guard
        tenant, criticality = one_identity(who)
        refused: list[tuple[int, QueueFull]] = []
        for start in range(0, len(payload), SCRIPT_MESSAGES):
            part = payload[start:start + SCRIPT_MESSAGES]
            keys, args = redis_fair.admit_arguments(guard, queue, lists, bound, room, tenant,
                                                    criticality, part)
            raw, _ = await self._call(queue, redis_fair.ADMIT_FAIR, keys, args)
            reply = redis_fair.parse_reply(raw)
            for _ in range(reply.admitted):
                guard.admitted(queue, tenant, criticality)
            if reply.admitted < len(part):
                first = redis_fair.refusal(guard, queue, reply, bound, room, tenant, criticality)
                refused.extend((i, first if i == start + reply.admitted
                                else _same(guard, queue, first))
                               for i in range(start + reply.admitted, len(payload)))
                break
        return refused
