"""A job's status for users: the database's record, refined by the result backend."""
from __future__ import annotations

from celery.result import AsyncResult
from sqlalchemy import func, select

from config import app
from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.demo.models import job_chunks


def job_status(job_id: str) -> dict:
    with engine().connect() as conn:
        row = jobs.get_job(conn, job_id)
        done, delivered = conn.execute(
            select(func.count(), func.coalesce(func.sum(job_chunks.c.delivered), 0))
            .where(job_chunks.c.job_id == job_id)
        ).one()
    state = row.state
    if state == jobs.QUEUED and _backend_state(job_id) == "STARTED":
        state = jobs.RUNNING
    result = None
    if state == jobs.SUCCEEDED:
        result = {"delivered": int(delivered), "chunks": row.chunks_total}
    return {
        "job_id": job_id,
        "state": state,
        "progress": {"chunks_done": done, "chunks_total": row.chunks_total},
        "result": result,
        "error": row.error,
        "submitted_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }


def _backend_state(job_id: str) -> str | None:
    try:
        return AsyncResult(job_id, app=app).state
    except Exception:  # noqa: BLE001 - the database record still answers
        return None
