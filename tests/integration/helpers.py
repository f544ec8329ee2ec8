from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select

from tasks.demo.db import engine


@dataclass(frozen=True)
class User:
    """An account made through ``POST /users``, with the key that acts as it."""

    id: int
    name: str
    key_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.api_key)


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def ops_headers() -> dict[str, str]:
    """The operations routes' credential (GET /metrics, GET /healthz/details)."""
    return bearer(os.environ["OPS_TOKEN"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def count(table, *where) -> int:
    with engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def wait_for(predicate, timeout_s: float = 30.0, message: str = "condition not met",
             interval_s: float = 0.2):
    """Poll until ``predicate()`` is truthy and return it; fail with ``message``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{message} (within {timeout_s} s)")


def signup(api, prefix: str = "user", *, name: str | None = None) -> User:
    """A new account (``name``, or ``prefix`` and a random suffix) and its first key.

    ``api`` is the suite's TestClient or an ``httpx.Client`` on a running API."""
    response = api.post("/users", json={"name": name or unique(prefix)})
    assert response.status_code == 201, response.text
    body = response.json()
    return User(body["id"], body["name"], body["key_id"], body["api_key"])


def follow(api, fan: User, followee: User | str) -> None:
    name = followee if isinstance(followee, str) else followee.name
    response = api.post("/follows", json={"followee": name}, headers=fan.headers)
    assert response.status_code == 201, response.text


def make_following(api, followers: int, prefix: str = "author") -> tuple[User, list[User]]:
    """An author and ``followers`` fans who follow it, each through its own key."""
    author = signup(api, prefix)
    fans = []
    for _ in range(followers):
        fan = signup(api, "fan")
        follow(api, fan, author)
        fans.append(fan)
    return author, fans


def post_as(api, author: User, text: str):
    """``POST /posts`` as ``author``; the response."""
    return api.post("/posts", json={"text": text}, headers=author.headers)


def timeline_of(api, user: User, limit: int | None = None) -> list[dict]:
    """The posts on ``user``'s own timeline (only its owner may read it)."""
    query = f"?limit={limit}" if limit else ""
    response = api.get(f"/timelines/{user.name}{query}", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["posts"]


def read_job(api, user: User, status_url: str) -> dict:
    """A job's status as its submitter reads it."""
    response = api.get(status_url, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()
