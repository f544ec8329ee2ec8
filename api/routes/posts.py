from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from api.schemas import PostAccepted, PostIn
from tasks import jobs
from tasks.db import engine
from tasks.submit import submit
from tasks.timeline import create_post

router = APIRouter(tags=["posts"])
FANOUT_TASK = "tasks.fanout.fanout_post"


@router.post(
    "/posts", status_code=202, response_model=PostAccepted,
    responses={503: {"description": "queue full or broker down; see Retry-After"}},
)
def post_post(body: PostIn, response: Response) -> dict:
    """Store the post on its author's timeline and queue its fan-out.

    The broker must accept the fan-out message before the transaction commits:
    a refusal (QueueFull, broker down) rolls everything back, so a 503 leaves
    nothing behind. A 202 means both the post and its job record are committed;
    if the broker then loses the message, the outbox sweep re-sends it.
    """
    job_id = str(uuid.uuid4())
    with engine().begin() as conn:
        post = create_post(conn, body.author, body.text)
        jobs.create_job(conn, job_id, "fanout", post["post_id"])
        submit(FANOUT_TASK, args=(job_id, post["post_id"]), task_id=job_id)
    status_url = f"/jobs/{job_id}"
    response.headers["Location"] = status_url
    return {"post_id": post["post_id"], "job_id": job_id, "status_url": status_url}
