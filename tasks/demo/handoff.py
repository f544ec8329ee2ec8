"""Publish first, then store: how ``POST /posts`` hands a job to the workers.

Admission is decided before any row is written or any lock is taken:

1. The API picks the job id (a UUID) and publishes ``fanout_post(job_id)``. The
   guarded transport admits or refuses it in one broker round trip. A refusal
   (``QueueFull``) or a broker error (``BrokerUnavailable``) is a 503 that did
   no database work and left nothing behind.
2. Only an admitted job is stored: the post, its author's timeline entry and the
   job row, all or nothing (:func:`store_post_and_job`: one statement on PostgreSQL,
   one transaction elsewhere). The 202 is sent after that commit.

The worker may take the message before that commit, or the commit may never
come (the database failed, the API process died). So the worker waits for the
job row (:func:`committed_job`), and if it is still missing after
``COMMIT_GRACE_S`` it inserts the row itself, as ``abandoned``: a *fence*. The
job id is the primary key, so the database lets exactly one of the two inserts
win:

- the API's commit came first: the fence inserts nothing; the job runs.
- the fence came first: the API's insert conflicts, its transaction (post and
  timeline entry included) rolls back, and its client gets a 503. The worker
  acks the message without doing anything.

No clock is trusted: the grace only decides how long a worker waits before it
fences, never who wins. On PostgreSQL a fence racing an open transaction that
already inserted the row blocks until that transaction ends; on SQLite the
writes are serialised. Either way a 503 leaves nothing behind, and a 202's job
runs (if the broker later loses its message, the outbox sweep re-sends it).

When the API's own write fails it fences the id at once, so the worker need
not wait; if the fence finds the row, the commit went through after all (its
answer was lost) and the client gets its 202.

A batch (``POST /posts:batch``, :func:`publish_then_store_many`) is the same
handoff for many posts at once: one batch publish admits as many as fit and
refuses the rest (nothing is written for a refused item), then the admitted
posts, timeline entries and jobs are stored in one transaction. The fence works
per job id as above; since the transaction is one, a fence that wins on any of
its ids rolls the whole batch back (every admitted item then gets a 503-like
failure and its message is skipped).

Both name the submission's tenant and class (``submitting_as``: the guard reads them
from the context of the thread that publishes), so a fair admission policy
(celery_floodgate.fairness) counts the post against its author's share.
"""
from __future__ import annotations

import functools
import time
import uuid

from celery.utils.log import get_logger
from sqlalchemy import Engine, literal, select
from sqlalchemy.exc import SQLAlchemyError

from celery_floodgate.fairness import submitting_as
from tasks.demo import jobs
from tasks.demo import submit as submit_module
from tasks.demo.db import engine
from tasks.demo.errors import StoreFailed
from tasks.demo.submit import submit
from tasks.demo.models import jobs as jobs_table
from tasks.demo.models import posts, timeline_entries
from tasks.demo.timeline import insert_post

FANOUT_TASK = "tasks.fanout.fanout_post"
FANOUT = "fanout"
FIRST_LOOK_S = 0.002
LONGEST_LOOK_S = 0.25

log = get_logger(__name__)


def admit(tenant: str | None = None, criticality: str | None = None) -> str:
    """Step 1: publish the fan-out of a post not yet stored, as ``tenant`` and
    ``criticality`` (None: the library's defaults); returns its job id.

    Raises QueueFull or BrokerUnavailable, having written nothing.
    """
    job_id = str(uuid.uuid4())
    with submitting_as(tenant, criticality):
        submit(FANOUT_TASK, args=(job_id,), task_id=job_id)
    return job_id


def store(author_id: int, text: str, job_id: str) -> dict:
    """Step 2, for an admitted job: store the post and the job; post_id and job_id.

    Raises StoreFailed (nothing kept, the job fenced) when the database fails.
    """
    try:
        post_id = store_post_and_job(author_id, text, job_id)
    except SQLAlchemyError as exc:
        return _recover(job_id, exc)
    return {"post_id": post_id, "job_id": job_id}


def store_post_and_job(author_id: int, text: str, job_id: str) -> int:
    """The post, its author's timeline entry and its job, all or nothing; the post's id.

    On PostgreSQL one statement (:func:`post_and_job`) in autocommit: one round trip
    where a transaction takes five, each of which a thread of the API waits for the
    GIL again after (bench (f)). Elsewhere, one transaction (:func:`store_rows`).
    """
    eng = engine()
    if eng.dialect.name != "postgresql":
        with eng.begin() as conn:
            return store_rows(conn, author_id, text, job_id)
    with _autocommit(eng).connect() as conn:
        return conn.execute(post_and_job(author_id, text, job_id)).scalar_one()


def store_rows(conn, author_id: int, text: str, job_id: str) -> int:
    """The post, its timeline entry and its job in ``conn``'s transaction; the post's id."""
    post = insert_post(conn, author_id, text)
    jobs.create_job(conn, job_id, FANOUT, post["post_id"])
    return post["post_id"]


def post_and_job(author_id: int, text: str, job_id: str):
    """PostgreSQL: the three inserts as one statement (CTEs) answering the post's id."""
    now = time.time()
    post = posts.insert().values(author_id=author_id, text=text, created_at=now).returning(
        posts.c.id).cte("post")
    entry = timeline_entries.insert().from_select(
        ["user_id", "post_id", "created_at"],
        select(literal(author_id), post.c.id, literal(now))).cte("entry")
    job = jobs_table.insert().from_select(
        ["id", "kind", "post_id", "state", "created_at", "updated_at"],
        select(literal(job_id), literal(FANOUT), post.c.id, literal(jobs.QUEUED), literal(now),
               literal(now))).cte("job")
    return select(post.c.id).add_cte(entry).add_cte(job)


@functools.cache
def _autocommit(eng: Engine) -> Engine:
    return eng.execution_options(isolation_level="AUTOCOMMIT")


def publish_then_store_many(items: list[tuple[int, str]], tenant: str | None = None,
                            criticality: str | None = None) -> list[dict]:
    """Admit the fan-outs of many new posts in one batch publish, then store the admitted.

    ``items``: (author_id, text) pairs, submitted as ``tenant`` and ``criticality``
    (as :func:`admit`). Returns one dict per item, in order: either
    ``{"post_id", "job_id"}`` or ``{"refused": QueueFull}`` (nothing written for it).
    Raises BrokerUnavailable (nothing written) or StoreFailed (nothing kept).
    """
    from celery_floodgate import submit_many

    job_ids = [str(uuid.uuid4()) for _ in items]
    with submitting_as(tenant, criticality):
        batch = submit_many(submit_module.app, FANOUT_TASK, [(j,) for j in job_ids],
                            task_ids=job_ids)
    out, admitted = sorted_out(batch, len(items))
    if not admitted:
        return out
    chosen = [items[i] for i in admitted], [job_ids[i] for i in admitted]
    try:
        with engine().begin() as conn:
            stored = store_many_rows(conn, *chosen)
    except SQLAlchemyError as exc:
        stored = _recover_many(chosen[1], exc)
    return filled_in(out, admitted, stored, job_ids)


def sorted_out(batch, n: int) -> tuple[list[dict], list[int]]:
    """One dict per item (``{"refused": QueueFull}`` for the refused), and the indexes of
    the admitted ones, in order."""
    out: list[dict] = [{} for _ in range(n)]
    for index, full in batch.refused:
        out[index] = {"refused": full}
    return out, batch.accepted_indexes()


def filled_in(out: list[dict], admitted: list[int], stored: list[dict],
              job_ids: list[str]) -> list[dict]:
    for i, post in zip(admitted, stored):
        out[i] = {"post_id": post["post_id"], "job_id": job_ids[i]}
    return out


def store_many_rows(conn, items: list[tuple[int, str]], job_ids: list[str]) -> list[dict]:
    """The admitted posts, their timeline entries and their jobs in ``conn``'s transaction."""
    stored = _insert_posts(conn, items)
    _create_jobs(conn, [(j, p["post_id"]) for j, p in zip(job_ids, stored)])
    return stored


def _recover_many(job_ids: list[str], exc: SQLAlchemyError) -> list[dict]:
    """The batch's one transaction failed: fence its ids, or find it committed after all."""
    try:
        with engine().begin() as conn:
            found = fence_or_find_many(conn, job_ids)
    except SQLAlchemyError:
        raise StoreFailed(job_ids[0], cause_of(exc), fenced=False) from exc
    if found is None:
        raise StoreFailed(job_ids[0], cause_of(exc), fenced=True) from exc
    return found


def fence_or_find_many(conn, job_ids: list[str]) -> list[dict] | None:
    """Fence every id; None when any was fenced (so nothing was kept), the stored posts
    when every row was there (committed; only the answer was lost)."""
    fenced = [jobs.fence(conn, j, FANOUT) for j in job_ids]
    if any(fenced):
        return None
    rows = {r.id: r for r in conn.execute(
        select(jobs_table).where(jobs_table.c.id.in_(job_ids)))}
    if any(rows[j].state == jobs.ABANDONED for j in job_ids):
        return None
    return [{"post_id": rows[j].post_id} for j in job_ids]


def cause_of(exc: Exception) -> str:
    """The driver's error in one line, for the log (StoreFailed.cause)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) else (
        type(exc).__name__)


def _insert_posts(conn, items: list[tuple[int, str]]) -> list[dict]:
    """:func:`insert_post` for many posts: one multi-row insert each for posts and entries."""
    now = time.time()
    ids = conn.execute(
        posts.insert().returning(posts.c.id, sort_by_parameter_order=True),
        [{"author_id": a, "text": t, "created_at": now} for a, t in items],
    ).scalars().all()
    conn.execute(timeline_entries.insert(), [
        {"user_id": a, "post_id": p, "created_at": now} for (a, _), p in zip(items, ids)])
    return [{"post_id": p, "author_id": a, "created_at": now} for (a, _), p in zip(items, ids)]


def _create_jobs(conn, rows: list[tuple[str, int]]) -> None:
    """:func:`jobs.create_job` for many jobs, in one statement."""
    now = time.time()
    conn.execute(jobs_table.insert(), [
        {"id": j, "kind": FANOUT, "post_id": p, "state": jobs.QUEUED, "created_at": now,
         "updated_at": now} for j, p in rows])


def _recover(job_id: str, exc: SQLAlchemyError) -> dict:
    try:
        with engine().begin() as conn:
            found = fence_or_find(conn, job_id)
    except SQLAlchemyError:
        raise StoreFailed(job_id, cause_of(exc), fenced=False) from exc
    if found is None:
        raise StoreFailed(job_id, cause_of(exc), fenced=True) from exc
    return found


def fence_or_find(conn, job_id: str) -> dict | None:
    """After a failed store: fence the id (None: nothing was kept), or find the job
    committed after all (only the answer was lost): its post_id and job_id."""
    if jobs.fence(conn, job_id, FANOUT):
        return None
    row = jobs.find(conn, job_id)
    return None if row.state == jobs.ABANDONED else {"post_id": row.post_id, "job_id": job_id}


def committed_job(job_id: str, kind: str, grace_s: float):
    """The job row the API committed, or None once fenced as abandoned.

    Looks with growing pauses (the commit usually lands within milliseconds of
    the publish), then fences. Called by the worker that took the message.
    """
    deadline = time.monotonic() + grace_s
    pause = FIRST_LOOK_S
    while True:
        with engine().connect() as conn:
            row = jobs.find(conn, job_id)
        if row is not None:
            return None if row.state == jobs.ABANDONED else row
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(2 * pause, LONGEST_LOOK_S)
    with engine().begin() as conn:
        if jobs.fence(conn, job_id, kind):
            log.warning("job %s was never committed within %.1f s: fenced as abandoned",
                        job_id, grace_s)
            return None
        row = jobs.find(conn, job_id)
    return None if row.state == jobs.ABANDONED else row
