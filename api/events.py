"""Live job events for ``GET /jobs/{job_id}/events``: one Redis subscriber per API process.

What feeds a stream: :mod:`api.hub`, this process's one Redis subscriber. A stream
the client drops is unsubscribed by the generator's ``finally`` (sse-starlette
cancels it on disconnect).

What a stream may cost (:func:`stream`): each API process serves at most
SSE_MAX_PER_USER streams per user (429 past that) and SSE_MAX_PER_PROCESS in all
(503), both with Retry-After; a stream ends after SSE_MAX_LIFETIME_S with a
``reconnect`` event, and a client that takes no data for SSE_SEND_TIMEOUT_S is dropped.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException
from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.hub import RESYNC, Subscription, close_hub, hub
from config.settings import get_settings
from tasks.demo.job_status import job_status
from tasks.demo.jobs import FINAL

__all__ = ["close_hub", "stream", "slots"]

log = logging.getLogger(__name__)

_ORDER = {"queued": 0, "running": 1}
#: Seconds between comment lines on an idle stream, so proxies keep it open.
PING_S = 15
#: Retry-After of a refused stream: most streams end within seconds (their job finishes).
RETRY_AFTER_S = 5
#: How long an EventSource waits before reconnecting once a stream's lifetime is over.
RECONNECT_MS = 1000


def newer(event: dict, last: dict | None) -> bool:
    """Whether ``event`` moves the stream forward: state, then finished chunks.

    Workers publish from several processes, so two events can arrive out of order;
    a stream never goes backwards and never repeats itself.
    """
    if last is None:
        return True
    if last["state"] in FINAL:
        return False
    if event["state"] in FINAL:
        return True
    rank = (_ORDER.get(event["state"], 0), event["progress"].get("chunks_done") or 0,
            event["progress"].get("chunks_total") or 0)
    last_rank = (_ORDER.get(last["state"], 0), last["progress"].get("chunks_done") or 0,
                 last["progress"].get("chunks_total") or 0)
    return rank > last_rank


async def open_stream(job_id: str, owner_id: int) -> tuple[Subscription, dict]:
    """Subscribe, then read the current status; JobNotFound (404), holding nothing, when
    ``owner_id`` did not submit the job."""
    sub = await hub().subscribe(job_id)
    try:
        status = await run_in_threadpool(job_status, job_id, owner_id)
    except BaseException:
        sub.close()
        raise
    return sub, status


async def events(sub: Subscription, status: dict, lifetime_s: float) -> AsyncIterator[dict]:
    """The SSE events of one stream: the current status, each change, the final one;
    or, once ``lifetime_s`` is over, a ``reconnect`` event."""
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + lifetime_s
    last = None
    try:
        item: Any = status
        while True:
            if item is RESYNC:
                item = await _reread(sub.job_id)
            if isinstance(item, dict) and newer(item, last):
                last = item
                final = item["state"] in FINAL
                yield {"event": "final" if final else "status", "data": json.dumps(item)}
                if final:
                    return
            try:
                item = await asyncio.wait_for(sub.get(), max(0.0, ends_at - loop.time()))
            except TimeoutError:
                yield _reconnect(lifetime_s)
                return
    finally:
        sub.close()


async def _reread(job_id: str) -> dict | None:
    try:
        return await run_in_threadpool(job_status, job_id)
    except Exception:  # noqa: BLE001 - keep streaming what the hub sends
        return None


def _reconnect(lifetime_s: float) -> dict:
    detail = (f"this stream reached its maximum lifetime ({lifetime_s:g} s, "
              "SSE_MAX_LIFETIME_S); reconnect to keep following the job")
    return {"event": "reconnect", "retry": RECONNECT_MS, "data": json.dumps({"detail": detail})}


# ---------------------------------------------------------------- what a stream may cost


class StreamsFull(HTTPException):
    """Too many open streams: 429 for one user's (``scope="user"``), 503 for the
    process's (``scope="process"``); both with Retry-After."""

    def __init__(self, scope: str, limit: int, retry_after_s: int = RETRY_AFTER_S) -> None:
        self.scope, self.limit, self.retry_after_s = scope, limit, retry_after_s
        if scope == "user":
            status, detail = 429, (
                f"you already have {limit} event streams open on this API process, the most "
                f"one user may (SSE_MAX_PER_USER); close one, or retry in {retry_after_s} s")
        else:
            status, detail = 503, (
                f"this API process already serves {limit} event streams "
                f"(SSE_MAX_PER_PROCESS); retry in {retry_after_s} s")
        super().__init__(status, detail, headers={"Retry-After": str(retry_after_s)})


class Slots:
    """The streams one API process has open, per user and in all (on its event loop)."""

    def __init__(self, per_user: int, per_process: int) -> None:
        self.per_user, self.per_process = per_user, per_process
        self.by_user: dict[int, int] = {}
        self.total = 0

    def acquire(self, user_id: int) -> Callable[[], None]:
        """Hold a slot for ``user_id``, or raise :class:`StreamsFull`; returns the
        function that gives it back (calling it again does nothing)."""
        held = self.by_user.get(user_id, 0)
        if held >= self.per_user:
            raise StreamsFull("user", self.per_user)
        if self.total >= self.per_process:
            raise StreamsFull("process", self.per_process)
        self.by_user[user_id] = held + 1
        self.total += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release(user_id)

        return release

    def _release(self, user_id: int) -> None:
        self.total -= 1
        left = self.by_user[user_id] - 1
        if left:
            self.by_user[user_id] = left
        else:
            del self.by_user[user_id]


_slots: Slots | None = None


def slots() -> Slots:
    global _slots
    if _slots is None:
        settings = get_settings()
        _slots = Slots(settings.sse_max_per_user, settings.sse_max_per_process)
    return _slots


class JobEventStream(EventSourceResponse):
    """An event stream that runs its ``on_close`` callables however it ends: finished,
    past its lifetime, client gone or too slow to read, or never started."""

    def __init__(self, content: AsyncIterator[dict], on_close: tuple[Callable[[], None], ...],
                 **options: Any) -> None:
        super().__init__(content, **options)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:  # uvicorn closes the connection: nothing left to send
            log.info("job events: dropped a client that took no data for %g s "
                     "(SSE_SEND_TIMEOUT_S)", self.send_timeout)
        finally:
            for close in self._on_close:
                close()


async def stream(job_id: str, user_id: int) -> JobEventStream:
    """``job_id``'s event stream for the user who submitted it.

    Raises :class:`StreamsFull` (429/503) or, when ``user_id`` did not submit the job,
    JobNotFound (404); either way nothing is held.
    """
    release = slots().acquire(user_id)
    try:
        sub, status = await open_stream(job_id, user_id)
    except BaseException:
        release()
        raise
    settings = get_settings()
    return JobEventStream(events(sub, status, settings.sse_max_lifetime_s),
                          on_close=(sub.close, release), ping=PING_S,
                          send_timeout=settings.sse_send_timeout_s)
