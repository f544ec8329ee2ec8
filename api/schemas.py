"""Request and response bodies. Unknown fields are refused, not ignored."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tasks.demo.models import NAME_MAX, TEXT_MAX


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=NAME_MAX),
    Field(description="letters, digits, '_', '.' or '-'"),
]
Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TEXT_MAX, strip_whitespace=False),
    AfterValidator(_no_nul),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserIn(Strict):
    name: Name


class UserCreated(BaseModel):
    id: int
    name: str
    key_id: str
    api_key: str = Field(description="send as 'Authorization: Bearer <api_key>'; shown only once")


class KeyCreated(BaseModel):
    key_id: str
    api_key: str = Field(description="shown only once")


class FollowIn(Strict):
    followee: Name


class PostIn(Strict):
    text: Text


class PostAccepted(BaseModel):
    post_id: int
    job_id: str
    status_url: str


class TimelinePost(BaseModel):
    post_id: int
    author: str
    text: str
    created_at: str


class Timeline(BaseModel):
    user: str
    posts: list[TimelinePost]


class JobStatus(BaseModel):
    job_id: str
    state: str = Field(description="queued, running, succeeded or failed")
    progress: dict
    result: dict | None
    error: str | None
    submitted_at: float = Field(description="when the job was stored, epoch seconds")
    started_at: float | None = Field(description="when a worker first started it")
    finished_at: float | None = Field(description="when it succeeded or failed")


class Window(BaseModel):
    window_start: str
    window_end: str
    posts: int
    top_hashtags: list[tuple[str, int]]


class Aggregates(BaseModel):
    windows: list[Window]


#: Most posts one ``POST /posts:batch`` takes; more is a 422.
BATCH_MAX = 500


class PostsBatchIn(Strict):
    posts: list[PostIn] = Field(min_length=1, max_length=BATCH_MAX,
                                description=f"1 to {BATCH_MAX} posts")


class BatchItem(BaseModel):
    index: int
    status: str = Field(description="accepted or refused")
    post_id: int | None = None
    job_id: str | None = None
    status_url: str | None = None
    retry_after_s: int | None = Field(default=None, description="refused: when to send it again")
    detail: str | None = None


class PostsBatchResult(BaseModel):
    accepted: int
    refused: int
    results: list[BatchItem]
