"""Job records: what the API reports and what the outbox sweeper re-publishes.

A job's state only moves forward: queued -> running -> succeeded | failed.
Progress is the count of finished chunks, so a redelivered chunk counts once.

``abandoned`` is the fourth end: a worker found a message whose job the API never
committed, and fenced the id so that a late commit fails (:mod:`tasks.handoff`).
Its client got a 503, so to users the job was never issued.
"""
from __future__ import annotations

import time

from sqlalchemy import func, select, update

from tasks.demo.db import insert_ignore
from tasks.demo.errors import JobNotFound
from tasks.demo.models import job_chunks, jobs, posts

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ABANDONED = "abandoned"
FINAL = (SUCCEEDED, FAILED, ABANDONED)


def create_job(conn, job_id: str, kind: str, post_id: int | None = None) -> None:
    now = time.time()
    conn.execute(
        jobs.insert().values(
            id=job_id, kind=kind, post_id=post_id, state=QUEUED, created_at=now, updated_at=now
        )
    )


def find(conn, job_id: str):
    return conn.execute(select(jobs).where(jobs.c.id == job_id)).first()


def get_job(conn, job_id: str, owner_id: int | None = None):
    """The job a user was promised; an abandoned one was never issued to anyone.

    With ``owner_id``, only the job of a post by that user: anyone else's job is
    JobNotFound too, so a job id tells a stranger nothing, not even that it exists.
    """
    if owner_id is None:
        row = find(conn, job_id)
    else:
        row = conn.execute(
            select(jobs).join(posts, posts.c.id == jobs.c.post_id)
            .where(jobs.c.id == job_id, posts.c.author_id == owner_id)
        ).first()
    if row is None or row.state == ABANDONED:
        raise JobNotFound(job_id)
    return row


def fence(conn, job_id: str, kind: str) -> bool:
    """Claim ``job_id`` as abandoned unless its job is already there; True if claimed.

    The primary key decides: whichever of this insert and the API's commits first
    wins, and the other one conflicts (see :mod:`tasks.handoff`).
    """
    now = time.time()
    row = {"id": job_id, "kind": kind, "state": ABANDONED, "created_at": now,
           "updated_at": now, "finished_at": now}
    return conn.execute(insert_ignore(conn, jobs).values(row)).rowcount == 1


def start(conn, job_id: str, chunks_total: int) -> bool:
    """Mark running with its chunk count; False if the job is already final."""
    now = time.time()
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.not_in(FINAL))
        .values(state=RUNNING, chunks_total=chunks_total, updated_at=now,
                started_at=func.coalesce(jobs.c.started_at, now))
    )
    return result.rowcount == 1


def lock(conn, job_id: str) -> None:
    """Serialise chunk completions of one job, so the last one sees every other."""
    conn.execute(select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())


def finish_chunk(conn, job_id: str, chunk_index: int, delivered: int) -> tuple[int, int]:
    """Record one finished chunk; returns (chunks_done, chunks_total)."""
    conn.execute(
        insert_ignore(conn, job_chunks).values(
            job_id=job_id, chunk_index=chunk_index, delivered=delivered
        )
    )
    done = chunks_done(conn, job_id)
    total = conn.execute(select(jobs.c.chunks_total).where(jobs.c.id == job_id)).scalar()
    finished = total is not None and done >= total
    now = time.time()
    conn.execute(  # progress refreshes updated_at, so only a stalled job looks stale
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.not_in(FINAL))
        .values(updated_at=now, **({"state": SUCCEEDED, "finished_at": now} if finished else {}))
    )
    return done, total or 0


def chunks_done(conn, job_id: str) -> int:
    return conn.execute(
        select(func.count()).where(job_chunks.c.job_id == job_id)
    ).scalar_one()


def fail(conn, job_id: str, error: str) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state.not_in(FINAL))
        .values(state=FAILED, error=error, updated_at=time.time(), finished_at=time.time())
    )


def stale(conn, kind: str, older_than_s: float, limit: int = 500) -> list:
    """Jobs not finished and not progressing for a while: a message may be lost."""
    cutoff = time.time() - older_than_s
    query = (
        select(jobs.c.id, jobs.c.kind, jobs.c.post_id)
        .where(jobs.c.kind == kind, jobs.c.state.in_((QUEUED, RUNNING)),
               jobs.c.updated_at < cutoff)
        .order_by(jobs.c.created_at)
        .limit(limit)
    )
    return list(conn.execute(query))


def touch(conn, job_id: str) -> None:
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(updated_at=time.time()))
