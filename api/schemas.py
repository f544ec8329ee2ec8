"""Request and response bodies. Unknown fields are refused, not ignored."""
from __future__ import annotations

from typing import Annotated, Literal

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


Criticality = Annotated[
    Literal["sheddable", "default", "critical"],
    Field(description="how much this work matters under overload: sheddable work is refused "
          "first (above half the queue), default above 90 %, critical only at the full limit "
          "and only for the users in CRITICAL_USERS (403 for others)"),
]


class PostText(Strict):
    """One post of a batch (the batch names the class of all of them)."""

    text: Text


class PostIn(PostText):
    criticality: Criticality = "default"


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
    posts: list[PostText] = Field(min_length=1, max_length=BATCH_MAX,
                                  description=f"1 to {BATCH_MAX} posts")
    criticality: Criticality = "default"


class BatchItem(BaseModel):
    index: int
    status: str = Field(description="accepted or refused")
    post_id: int | None = None
    job_id: str | None = None
    status_url: str | None = None
    retry_after_s: int | None = Field(default=None, description="refused: when to send it again")
    reason: str | None = Field(default=None, description="refused: full (the queue), class (the "
                               "bound of the batch's criticality) or share (your share of it)")
    detail: str | None = None


class PostsBatchResult(BaseModel):
    accepted: int
    refused: int
    results: list[BatchItem]
