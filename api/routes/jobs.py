from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.schemas import JobStatus
from tasks.demo.errors import JobNotFound
from tasks.demo.job_status import job_status

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "never issued"}})
def get_job(job_id: str) -> dict:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise JobNotFound(job_id) from None
    return job_status(job_id)
