"""The handoff of tasks/demo/handoff.py, awaited: ``POST /posts`` with API_SUBMIT_PATH=async.

The same two steps in the same order, publish first, then store, with the same
crash window and the same fence; only the waiting differs. The publish is
`celery_floodgate.aio.submit_async` (the same guard, the same message, no thread) and the
store runs on the event loop's asyncio engine (tasks/demo/db.py: asyncpg, or aiosqlite
for development). The statements are handoff.py's own, run through SQLAlchemy's
``run_sync`` (greenlets on the loop, not threads), so both paths write the same rows.
"""
from __future__ import annotations

import uuid

from kombu.exceptions import KombuError, OperationalError
from sqlalchemy.exc import SQLAlchemyError

from celery_floodgate import BrokerUnavailable, QueueFull
from celery_floodgate.aio import submit_async, submit_many_async
from celery_floodgate.fairness import submitting_as
from tasks.demo import handoff
from tasks.demo import submit as submit_module
from tasks.demo.db import async_engine
from tasks.demo.errors import StoreFailed
from tasks.demo.handoff import FANOUT, FANOUT_TASK

#: What a failed store raises: asyncpg's connect lets the socket's OSError through unwrapped.
DB_ERRORS = (SQLAlchemyError, OSError)


async def admit(tenant: str | None = None, criticality: str | None = None) -> str:
    """Step 1: publish the fan-out of a post not yet stored, as ``tenant`` and
    ``criticality``; returns its job id. Raises QueueFull or BrokerUnavailable, having
    written nothing."""
    job_id = str(uuid.uuid4())
    with submitting_as(tenant, criticality), _broker_errors():
        await submit_async(submit_module.app, FANOUT_TASK, (job_id,), task_id=job_id)
    return job_id


async def store(author_id: int, text: str, job_id: str) -> dict:
    """Step 2, for an admitted job: the post and the job (one statement on PostgreSQL, one
    transaction on SQLite); post_id and job_id. Raises StoreFailed (nothing kept, the job
    fenced) when the database fails."""
    eng = async_engine()
    try:
        async with eng.connect() as conn:
            if eng.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                post_id = (await conn.execute(
                    handoff.post_and_job(author_id, text, job_id))).scalar_one()
            else:
                async with conn.begin():
                    post_id = await conn.run_sync(handoff.store_rows, author_id, text, job_id)
    except DB_ERRORS as exc:
        return await _recovered(handoff.fence_or_find, job_id, job_id, exc)
    return {"post_id": post_id, "job_id": job_id}


async def publish_then_store_many(items: list[tuple[int, str]], tenant: str | None = None,
                                  criticality: str | None = None) -> list[dict]:
    """handoff.publish_then_store_many, awaited: one batch publish, then the admitted
    posts in one transaction; one dict per item, ``{"post_id", "job_id"}`` or
    ``{"refused": QueueFull}``. Raises BrokerUnavailable or StoreFailed."""
    job_ids = [str(uuid.uuid4()) for _ in items]
    with submitting_as(tenant, criticality), _broker_errors():
        batch = await submit_many_async(submit_module.app, FANOUT_TASK,
                                        [(j,) for j in job_ids], task_ids=job_ids)
    out, admitted = handoff.sorted_out(batch, len(items))
    if not admitted:
        return out
    chosen = [items[i] for i in admitted], [job_ids[i] for i in admitted]
    try:
        async with async_engine().begin() as conn:
            stored = await conn.run_sync(handoff.store_many_rows, *chosen)
    except DB_ERRORS as exc:
        stored = await _recovered(handoff.fence_or_find_many, chosen[1], chosen[1][0], exc)
    return handoff.filled_in(out, admitted, stored, job_ids)


async def _recovered(fence_or_find, ids, job_id: str, exc: Exception):
    """The store failed: fence ``ids`` (StoreFailed, nothing kept), or find them committed
    after all; StoreFailed(fenced=False) when even that fails."""
    try:
        async with async_engine().begin() as conn:
            found = await conn.run_sync(fence_or_find, ids)
    except DB_ERRORS:
        raise StoreFailed(job_id, handoff.cause_of(exc), fenced=False) from exc
    if found is None:
        raise StoreFailed(job_id, handoff.cause_of(exc), fenced=True) from exc
    return found


class _broker_errors:
    """kombu's and the socket's errors (from the steps the library runs in a thread: a
    queue's first declaration, the fallback's send_task) as BrokerUnavailable, as
    tasks/demo/submit.py turns them on the threaded path."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _tb) -> bool:
        if exc is None or isinstance(exc, (QueueFull, BrokerUnavailable)):
            return False
        if isinstance(exc, (OperationalError, KombuError, OSError, TimeoutError)):
            raise BrokerUnavailable(FANOUT, submit_module._short(exc)) from exc
        return False
