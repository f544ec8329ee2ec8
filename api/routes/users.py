from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import Limit, iso
from api.schemas import FollowIn, Name, Timeline, UserIn
from tasks.demo.db import engine
from tasks.demo.timeline import create_user, follow, read_timeline

router = APIRouter(tags=["users"])


@router.post("/users", status_code=201, responses={409: {"description": "name taken"}})
def post_user(body: UserIn) -> dict:
    with engine().begin() as conn:
        return {"id": create_user(conn, body.name), "name": body.name}


@router.post("/follows", status_code=201, responses={404: {"description": "unknown user"}})
def post_follow(body: FollowIn) -> dict:
    if body.follower == body.followee:
        raise HTTPException(422, "a user cannot follow themselves")
    with engine().begin() as conn:
        created = follow(conn, body.follower, body.followee)
    return {"follower": body.follower, "followee": body.followee, "created": created}


@router.get("/timelines/{name}", response_model=Timeline)
def get_timeline(name: Name, limit: Limit = 50) -> dict:
    with engine().connect() as conn:
        posts = read_timeline(conn, name, limit)
    for post in posts:
        post["created_at"] = iso(post["created_at"])
    return {"user": name, "posts": posts}
