"""API_SUBMIT_PATH=threads: a post admitted and stored by Celery's blocking publish and the
blocking database driver, in threads (kept to compare with the async path, bench (f))."""
from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from config.settings import get_settings
from tasks.demo.handoff import admit, store

_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def accept_post(author_id: int, text: str, tenant: str, criticality: str,
                      refuse_if_remembered: Callable[[], None]) -> dict:
    """Admit then store in threads, a few at a time (``slots``); post_id and job_id."""
    async with slots("admit"):
        refuse_if_remembered()  # again: the broker may have refused while this waited
        job_id = await run_in_threadpool(admit, tenant, criticality)
    async with slots("store"):
        return await run_in_threadpool(store, author_id, text, job_id)


def slots(step: str) -> asyncio.Semaphore:
    """A few threads at a time admit (publish), and a few store (API_STORE_THREADS); the
    other requests wait on the event loop.

    Each of those threads gives the GIL up at every round trip and waits for it again
    behind every other runnable thread and the event loop, so forty threads (Starlette's
    default) made each post's handful of round trips take hundreds of milliseconds
    under overload, and refusals answered from threads with them (bench (f)). Admission
    has slots of its own, so that a refusal never waits behind the posts being stored.
    """
    loop = asyncio.get_running_loop()  # a semaphore belongs to one event loop
    per_loop = _slots.get(loop)
    if per_loop is None:
        n = get_settings().api_store_threads
        per_loop = _slots[loop] = {"admit": asyncio.Semaphore(n), "store": asyncio.Semaphore(n)}
    return per_loop[step]
