"""A job's status for users, from the database's record: the worker marks it running
when it starts, counts finished chunks, and marks it succeeded or failed."""
from __future__ import annotations

from sqlalchemy import func, select

from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.demo.models import job_chunks


def job_status(job_id: str, owner_id: int | None = None) -> dict:
    """The job's status; with ``owner_id``, JobNotFound unless that user submitted it."""
    with engine().connect() as conn:
        row = jobs.get_job(conn, job_id, owner_id)
        done, delivered = conn.execute(
            select(func.count(), func.coalesce(func.sum(job_chunks.c.delivered), 0))
            .where(job_chunks.c.job_id == job_id)
        ).one()
    result = None
    if row.state == jobs.SUCCEEDED:
        result = {"delivered": int(delivered), "chunks": row.chunks_total}
    return {
        "job_id": job_id,
        "state": row.state,
        "progress": {"chunks_done": done, "chunks_total": row.chunks_total},
        "result": result,
        "error": row.error,
        "submitted_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }
