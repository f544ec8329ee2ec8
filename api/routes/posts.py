from __future__ import annotations

import functools

from fastapi import APIRouter, Response
from sqlalchemy import Engine

from api.schemas import PostAccepted, PostIn
from tasks.demo.db import engine
from tasks.demo.handoff import publish_then_store
from tasks.demo.timeline import user_id

router = APIRouter(tags=["posts"])
AUTHOR_CACHE_SIZE = 65_536


@router.post(
    "/posts", status_code=202, response_model=PostAccepted,
    responses={503: {"description": "queue full, broker or database down; see Retry-After"}},
)
def post_post(body: PostIn, response: Response) -> dict:
    """Queue a post's fan-out, then store it on its author's timeline.

    Admission comes first and touches no table, so a 503 for a full queue costs
    one broker round trip and leaves nothing behind; a 202 is sent after the post
    and its job are committed (tasks/handoff.py says why that is safe).
    """
    accepted = publish_then_store(author_id(engine(), body.author), body.text)
    status_url = f"/jobs/{accepted['job_id']}"
    response.headers["Location"] = status_url
    return {**accepted, "status_url": status_url}


@functools.lru_cache(maxsize=AUTHOR_CACHE_SIZE)
def author_id(eng: Engine, name: str) -> int:
    """Users are never renamed or deleted, so a known name's id is cached for good;
    an unknown name raises UnknownUser (a 404) and is looked up again next time."""
    with eng.connect() as conn:
        return user_id(conn, name)
