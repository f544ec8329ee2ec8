from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from api import events
from api.schemas import JobStatus
from tasks.demo.errors import JobNotFound
from tasks.demo.job_status import job_status


@asynccontextmanager
async def lifespan(_):
    yield
    await events.close_hub()  # the one Redis subscriber of this process, if one was opened


router = APIRouter(tags=["jobs"], lifespan=lifespan)
#: Seconds between comment lines on an idle stream, so proxies keep it open.
PING_S = 15


def _known(job_id: str) -> None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(job_id) from None


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "never issued"}})
def get_job(job_id: str) -> dict:
    _known(job_id)
    return job_status(job_id)


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}},
              "description": "Server-Sent Events: `status` (the current status, then each "
                             "change of state or progress), then one `final`; then it closes"},
        404: {"description": "never issued"},
    },
)
async def job_events(job_id: str) -> EventSourceResponse:
    """Follow a job live. Each event's data is the JSON of ``GET /jobs/{job_id}``."""
    _known(job_id)
    sub, status = await events.open_stream(job_id)  # JobNotFound: a 404, nothing held
    # The stream's generator unsubscribes when it ends; the background task also does
    # when it never started (a client gone at once).
    return EventSourceResponse(events.events(sub, status), ping=PING_S,
                               background=BackgroundTask(sub.aclose))
