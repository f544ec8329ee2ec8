"""Accounts, their API keys, follows and timelines.

Rules (README): anyone may create an account; everything else acts as the account
whose key it sends. A timeline is private to its owner: it is what they follow.
"""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from api import authors, ratelimit
from api.auth import CurrentUser, forget, signing_key
from api.deps import Limit, iso
from api.schemas import FollowIn, KeyCreated, Name, Timeline, UserCreated, UserIn
from config.settings import RESERVED_NAMES, get_settings
from tasks.demo import keys
from tasks.demo.db import engine
from tasks.demo.errors import Forbidden, KeyLimit, KeyNotFound, NameTaken
from tasks.demo.timeline import create_user, follow, lock_user, read_timeline, unfollow

router = APIRouter(tags=["users"])
_401 = {401: {"description": "no API key, or not a valid one"}}


@router.post("/users", status_code=201, response_model=UserCreated,
             responses={409: {"description": "name taken"},
                        429: {"description": "too many accounts from this address"}})
def post_user(body: UserIn, request: Request) -> dict:
    """Create an account and its first API key. The key is shown only in this answer."""
    ratelimit.signups(_host(request))
    if body.name in RESERVED_NAMES:  # the service's own tenants (fair admission)
        raise NameTaken(body.name)
    with engine().begin() as conn:
        uid = create_user(conn, body.name)
        key_id, api_key = keys.create_key(conn, uid, signing_key())
    authors.forget(engine(), body.name)
    return {"id": uid, "name": body.name, "key_id": key_id, "api_key": api_key}


@router.get("/users/me", responses=_401)
def get_me(me: CurrentUser) -> dict:
    return {"id": me.user_id, "name": me.name, "key_id": me.key_id}


@router.post("/keys", status_code=201, response_model=KeyCreated,
             responses={**_401, 409: {"description": "MAX_KEYS_PER_USER live keys already"},
                        429: {"description": "too many keys created"}})
def post_key(me: CurrentUser) -> dict:
    """Another key for the caller (to rotate: make one, switch, revoke the old one)."""
    ratelimit.new_keys(me.user_id)
    cap = get_settings().max_keys_per_user
    with engine().begin() as conn:
        lock_user(conn, me.user_id)  # two requests at once cannot both take the last place
        if keys.live_keys(conn, me.user_id) >= cap:
            raise KeyLimit(cap)
        key_id, api_key = keys.create_key(conn, me.user_id, signing_key())
    return {"key_id": key_id, "api_key": api_key}


@router.get("/keys", responses=_401)
def get_keys(me: CurrentUser) -> dict:
    """Your newest 100 keys (ids and dates; never the keys themselves), newest first."""
    with engine().connect() as conn:
        return {"keys": keys.list_keys(conn, me.user_id)}


@router.delete("/keys/{key_id}", status_code=204,
               responses={**_401, 404: {"description": "not a live key of yours"}})
def delete_key(key_id: str, me: CurrentUser) -> Response:
    """Revoke a key: at once in this process, within AUTH_CACHE_S in the others."""
    with engine().begin() as conn:
        revoked = keys.revoke_key(conn, me.user_id, key_id[:64])
    if not revoked:
        raise KeyNotFound(key_id[:64])
    forget(key_id)
    return Response(status_code=204)


@router.post("/follows", status_code=201,
             responses={**_401, 404: {"description": "unknown user"},
                        409: {"description": "MAX_FOLLOWS_PER_USER reached"},
                        429: {"description": "too many follow changes"}})
def post_follow(body: FollowIn, me: CurrentUser, request: Request) -> dict:
    if body.followee == me.name:
        raise HTTPException(422, "a user cannot follow themselves")
    ratelimit.follows(me.user_id, _host(request))
    followee_id = authors.resolve(engine(), body.followee)
    with engine().begin() as conn:
        created = follow(conn, me.user_id, followee_id, get_settings().max_follows_per_user)
    return {"follower": me.name, "followee": body.followee, "created": created}


@router.delete("/follows/{followee}", responses={**_401, 404: {"description": "unknown user"}})
def delete_follow(followee: Name, me: CurrentUser, request: Request) -> dict:
    ratelimit.follows(me.user_id, _host(request))
    followee_id = authors.resolve(engine(), followee)
    with engine().begin() as conn:
        removed = unfollow(conn, me.user_id, followee_id)
    return {"follower": me.name, "followee": followee, "removed": removed}


@router.get("/timelines/{name}", response_model=Timeline,
            responses={**_401, 403: {"description": "another user's timeline"}})
def get_timeline(name: Name, me: CurrentUser, limit: Limit = 50) -> dict:
    if name != me.name:
        raise Forbidden(f"timelines are private: you may read only your own "
                        f"(/timelines/{me.name})")
    with engine().connect() as conn:
        posts = read_timeline(conn, me.user_id, limit)
    for post in posts:
        post["created_at"] = iso(post["created_at"])
    return {"user": me.name, "posts": posts}


def _host(request: Request) -> str | None:
    return request.client.host if request.client else None
