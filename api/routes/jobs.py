from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from api import events
from api.auth import CurrentUser
from api.schemas import JobStatus
from tasks.demo.errors import JobNotFound
from tasks.demo.job_status import job_status


@asynccontextmanager
async def lifespan(_):
    yield
    await events.close_hub()  # the one Redis subscriber of this process, if one was opened


router = APIRouter(tags=["jobs"], lifespan=lifespan)


def _known(job_id: str) -> None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(job_id) from None


@router.get("/jobs/{job_id}", response_model=JobStatus,
            responses={404: {"description": "never issued, or not yours"}})
async def get_job(job_id: str, me: CurrentUser) -> dict:
    """The status of a job you submitted; anyone else's is a 404, as if it did not exist."""
    _known(job_id)
    return await run_in_threadpool(job_status, job_id, me.user_id)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}},
              "description": "Server-Sent Events: `status` (the current status, then each "
                             "change of state or progress), then one `final`; then it closes. "
                             "After SSE_MAX_LIFETIME_S a `reconnect` event ends it instead"},
        404: {"description": "never issued, or not yours"},
        429: {"description": "you have SSE_MAX_PER_USER streams open; see Retry-After"},
        503: {"description": "this process has SSE_MAX_PER_PROCESS streams open; see "
                             "Retry-After"},
    },
)
async def job_events(job_id: str, me: CurrentUser) -> EventSourceResponse:
    """Follow a job you submitted live. Each event's data is the JSON of
    ``GET /jobs/{job_id}``."""
    _known(job_id)
    return await events.stream(job_id, me.user_id)  # 404/429/503: nothing held
