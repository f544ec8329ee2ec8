from __future__ import annotations

import time
import uuid

from sqlalchemy import func, select

from tasks.demo.db import engine


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


def make_following(api, followers: int) -> tuple[str, list[str]]:
    author = unique("author")
    assert api.post("/users", json={"name": author}).status_code == 201
    names = []
    for _ in range(followers):
        name = unique("fan")
        assert api.post("/users", json={"name": name}).status_code == 201
        assert api.post("/follows", json={"follower": name, "followee": author}).status_code == 201
        names.append(name)
    return author, names
