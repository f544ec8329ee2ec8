"""The one Redis subscriber of an API process, feeding every open job event stream.

Workers publish a job's status on ``floodgate:job:{id}`` after each commit that
changed it (:mod:`tasks.demo.notify`). Each API process holds ONE Redis pub/sub
connection (:class:`Hub`, redis.asyncio) and one task reading it; it subscribes to a
job's channel while at least one stream of that job is open, and puts every message
on each such stream's :class:`asyncio.Queue`. N open streams cost N small queues and
N sockets to their clients, not N Redis connections, no thread and no polling.

If the Redis connection fails, the hub reconnects with backoff, subscribes again
to every open job, and tells each stream to re-read the job's status once (it may
have missed an event meanwhile).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis

from tasks.demo.notify import CHANNEL_PREFIX, channel, redis_url

log = logging.getLogger(__name__)

#: Events kept for a stream whose client reads slowly; older ones are dropped (the
#: newest status is what matters, and a final one is never dropped: it ends the stream).
QUEUE_SIZE = 64
RESYNC = object()  # "re-read the status": the hub reconnected and may have missed events
RECONNECT_MAX_S = 5.0
READY_WAIT_S = 2.0


class Subscription:
    """One stream's view of one job: a queue the hub fills."""

    def __init__(self, hub: "Hub", job_id: str) -> None:
        self.hub, self.job_id = hub, job_id
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self.closed = False

    def put(self, item: Any) -> None:
        if self.queue.full():  # keep the newest: drop the oldest
            self.queue.get_nowait()
        self.queue.put_nowait(item)

    async def get(self) -> Any:
        return await self.queue.get()

    def close(self) -> None:
        """Stop receiving; synchronous, so it completes even in a cancelled task."""
        if not self.closed:
            self.closed = True
            self.hub.unsubscribe(self)


class Hub:
    """The API process's one Redis pub/sub connection, fanned out to open streams."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.get_running_loop()
        self.subs: dict[str, set[Subscription]] = {}
        self._redis: aioredis.Redis | None = None
        self._pubsub = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self.subs.values())

    async def subscribe(self, job_id: str) -> Subscription:
        """A queue of ``job_id``'s events; the channel is subscribed before this returns,
        so nothing published after it is missed."""
        self._start()
        if not self._ready.is_set():  # the process's first stream: let the hub connect
            try:
                await asyncio.wait_for(self._ready.wait(), READY_WAIT_S)
            except asyncio.TimeoutError:
                pass  # Redis down: stream the status; a RESYNC follows the reconnect
        sub = Subscription(self, job_id)
        async with self._lock:
            first = job_id not in self.subs
            self.subs.setdefault(job_id, set()).add(sub)
            if first and self._ready.is_set():
                try:
                    await self._pubsub.subscribe(channel(job_id))
                except Exception:  # noqa: BLE001 - the reader reconnects and resubscribes
                    log.warning("job events: subscribe failed; reconnecting", exc_info=True)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.job_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.subs[sub.job_id]
            self.loop.create_task(self._drop_channel(sub.job_id))

    async def _drop_channel(self, job_id: str) -> None:
        async with self._lock:  # a stream of the job opened since keeps the channel
            if job_id in self.subs or not self._ready.is_set():
                return
            try:
                await self._pubsub.unsubscribe(channel(job_id))
            except Exception:  # noqa: BLE001
                log.debug("job events: unsubscribe failed", exc_info=True)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run(), name="job-events-hub")

    async def _connect(self) -> None:
        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=2,
                                              health_check_interval=30)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        async with self._lock:
            # Subscribe to a placeholder first: get_message needs a subscribed connection.
            await self._pubsub.subscribe(f"{CHANNEL_PREFIX}hub", *map(channel, self.subs))
            self._ready.set()

    async def _disconnect(self) -> None:
        self._ready.clear()
        pubsub, client, self._pubsub, self._redis = self._pubsub, self._redis, None, None
        for closing in (pubsub, client):
            if closing is not None:
                try:
                    await closing.aclose()
                except Exception:  # noqa: BLE001
                    pass

    async def _run(self) -> None:
        pause, first = 0.2, True
        while True:
            try:
                await self._connect()
                if not first:  # events may have been missed while disconnected
                    for subs in list(self.subs.values()):
                        for sub in subs:
                            sub.put(RESYNC)
                first, pause = False, 0.2
                while True:
                    message = await self._pubsub.get_message(timeout=30)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message)
            except asyncio.CancelledError:
                await self._disconnect()
                raise
            except Exception:  # noqa: BLE001 - Redis went away: reconnect with backoff
                log.warning("job events: Redis subscriber failed; reconnecting in %.1f s",
                            pause, exc_info=True)
                await self._disconnect()
                first = False  # streams opened meanwhile re-read their status on connect
                await asyncio.sleep(pause)
                pause = min(RECONNECT_MAX_S, pause * 2)

    def _dispatch(self, message: dict) -> None:
        name = message["channel"].decode()
        try:
            event = json.loads(message["data"])
        except ValueError:
            return
        for sub in list(self.subs.get(name.removeprefix(CHANNEL_PREFIX), ())):
            sub.put(event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None


_hub: Hub | None = None


def hub() -> Hub:
    """This process's hub, on the running event loop (made on first use)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        url = redis_url()
        if url is None:
            raise RuntimeError("job events need a Redis (METER_URL, a Redis broker or backend)")
        _hub = Hub(url)
    return _hub


async def close_hub() -> None:
    global _hub
    if _hub is not None:
        await _hub.close()
        _hub = None
