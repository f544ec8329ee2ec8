"""Fan-out tasks: thin wrappers owning retries and idempotency.

``fanout_post`` splits the author's followers into chunks and sends one
``deliver_chunk`` per chunk as a group, so large followings are delivered in
parallel. Delivery is idempotent (timeline primary key) and progress counts
distinct chunks, so redelivery and duplicates change nothing.
"""
from __future__ import annotations

from celery import group
from celery.utils.log import get_task_logger
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError as DBOperationalError

from config import app
from config.settings import get_settings
from tasks.demo import jobs
from tasks.demo.db import engine
from tasks.runtime.base import FloodgateTask
from celery_floodgate import BrokerUnavailable, QueueFull, submitting_as
from celery_floodgate.fairness import CLASS_HEADER, TENANT_HEADER
from tasks.demo.handoff import committed_job
from tasks.demo.notify import notify
from tasks.demo.timeline import chunked, deliver, follower_ids, post_row

log = get_task_logger(__name__)


class PostNotVisible(Exception):
    """The post's transaction has not committed yet (or was rolled back)."""


class JobTask(FloodgateTask):
    """Marks the job failed, with a sanitised error, once retries are exhausted."""

    #: Database hiccups are retried with exponential backoff and jitter.
    autoretry_for = (DBOperationalError, PostNotVisible)
    retry_backoff = 1
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 5
    acks_late = True

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        job_id = kwargs.get("job_id") or (args[0] if args else None)
        if job_id:
            with engine().begin() as conn:
                jobs.fail(conn, job_id, sanitise(exc))
            notify(job_id)


def sanitise(exc: BaseException) -> str:
    """An error a user may see: the kind of failure, never a traceback or a secret."""
    return f"{type(exc).__name__}: the job failed after its retries; see worker logs"


# ignore_result: the job row is the status users read (state, progress, times). A stored
# result would also make every submitter subscribe to the task's result channel (Celery's
# Redis backend does so in send_task): a round trip per submission, refusals included,
# and a subscription the API process never drops.
@app.task(bind=True, base=JobTask, name="tasks.fanout.fanout_post", ignore_result=True)
def fanout_post(self, job_id: str, post_id: int | None = None) -> dict:
    """``post_id`` is optional: the API publishes before the post exists (tasks/demo/handoff.py)."""
    job = committed_job(job_id, "fanout", get_settings().commit_grace_s)
    if job is None:
        log.warning("job %s skipped: the API never committed it (abandoned)", job_id)
        return {"skipped": "abandoned: the API never committed this job"}
    log.info("job %s taken: fanning out post %s", job_id, job.post_id)
    post_id = job.post_id
    with engine().begin() as conn:
        post = post_row(conn, post_id)
        if post is None:
            raise PostNotVisible(post_id)
        ids = follower_ids(conn, post.author_id)
        chunks = list(chunked(ids, get_settings().fanout_chunk_size))
        if not jobs.start(conn, job_id, len(chunks)):
            return {"skipped": "job already finished"}
    notify(job_id)
    if len(chunks) <= 1:
        deliver_chunk.run(job_id, post_id, 0, chunks[0] if chunks else [])
    else:
        # The chunks are the post's own work: they count against its author's share
        # and class (celery_floodgate.fairness), as the post did.
        with submitting_as(getattr(self.request, TENANT_HEADER, None),
                           getattr(self.request, CLASS_HEADER, None)):
            _send_chunks(job_id, post_id, chunks)
    return {"followers": len(ids), "chunks": len(chunks)}


def _send_chunks(job_id: str, post_id: int, chunks: list[list[int]]) -> None:
    signatures = [deliver_chunk.s(job_id, post_id, i, c) for i, c in enumerate(chunks)]
    try:
        group(signatures).apply_async()
    except (QueueFull, BrokerUnavailable, BrokerError) as full:
        # Back pressure from our own queue, or the broker went away: deliver here
        # rather than fail an accepted job. Chunks already sent become harmless duplicates.
        log.warning("fan-out of post %s delivering inline: %s", post_id, full)
        for i, chunk in enumerate(chunks):
            deliver_chunk.run(job_id, post_id, i, chunk)


@app.task(base=JobTask, name="tasks.fanout.deliver_chunk", ignore_result=True)
def deliver_chunk(job_id: str, post_id: int, chunk_index: int, follower_ids: list) -> int:
    with engine().begin() as conn:
        post = post_row(conn, post_id)
        if post is None:
            raise PostNotVisible(post_id)
        # Insert first, then lock the job row: chunks of one job insert in parallel
        # (their rows differ) and only their short completions are serialised.
        delivered = deliver(conn, post_id, post.created_at, follower_ids)
        jobs.lock(conn, job_id)
        jobs.finish_chunk(conn, job_id, chunk_index, delivered)
    notify(job_id)
    return delivered
