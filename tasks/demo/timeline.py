"""Plain work functions for the demo domain. No Celery, no HTTP.

Each takes an open SQLAlchemy connection, so the caller owns the transaction.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tasks.demo.db import insert_ignore
from tasks.demo.errors import FollowLimit, NameTaken, UnknownUser
from tasks.demo.models import follows, posts, timeline_entries, users


def create_user(conn, name: str) -> int:
    try:
        with conn.begin_nested():
            return conn.execute(
                users.insert().values(name=name, created_at=time.time())
            ).inserted_primary_key[0]
    except IntegrityError:
        raise NameTaken(name) from None


def user_id(conn, name: str) -> int:
    found = conn.execute(select(users.c.id).where(users.c.name == name)).scalar()
    if found is None:
        raise UnknownUser(name)
    return found


def follow(conn, follower_id: int, followee_id: int, max_follows: int) -> bool:
    """Make one user follow another; False if it already did. FollowLimit when the
    follower already follows ``max_follows`` accounts.

    The follower's row is locked first (PostgreSQL; SQLite serialises writers anyway),
    so two requests at once cannot both take the last place.
    """
    lock_user(conn, follower_id)
    row = {"follower_id": follower_id, "followee_id": followee_id}
    if conn.execute(insert_ignore(conn, follows).values(row)).rowcount == 0:
        return False
    if following_count(conn, follower_id) > max_follows:
        raise FollowLimit(max_follows)  # the caller's transaction rolls the insert back
    return True


def lock_user(conn, uid: int) -> None:
    """Serialise one user's capped writes (follows, keys) until the transaction ends."""
    conn.execute(select(users.c.id).where(users.c.id == uid).with_for_update())


def unfollow(conn, follower_id: int, followee_id: int) -> bool:
    """Stop following; False if it did not follow."""
    return conn.execute(follows.delete().where(
        follows.c.follower_id == follower_id, follows.c.followee_id == followee_id)).rowcount == 1


def following_count(conn, follower_id: int) -> int:
    return conn.execute(
        select(func.count()).where(follows.c.follower_id == follower_id)).scalar_one()


def create_post(conn, author: str, text: str) -> dict:
    """Store a post and put it on its author's own timeline at once."""
    return insert_post(conn, user_id(conn, author), text)


def insert_post(conn, author_id: int, text: str) -> dict:
    """:func:`create_post` for an author whose id is already known."""
    now = time.time()
    post_id = conn.execute(
        posts.insert().values(author_id=author_id, text=text, created_at=now)
    ).inserted_primary_key[0]
    conn.execute(
        timeline_entries.insert().values(user_id=author_id, post_id=post_id, created_at=now)
    )
    return {"post_id": post_id, "author_id": author_id, "created_at": now}


def follower_ids(conn, author_id: int) -> list[int]:
    query = (
        select(follows.c.follower_id)
        .where(follows.c.followee_id == author_id)
        .order_by(follows.c.follower_id)
    )
    return list(conn.execute(query).scalars())


def chunked(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def deliver(conn, post_id: int, created_at: float, follower_ids: Sequence[int]) -> int:
    """Bulk-insert the post into these timelines; duplicates are ignored."""
    if not follower_ids:
        return 0
    if conn.dialect.name == "postgresql":
        # One statement whatever the chunk's size: the ids travel as one array parameter
        # and the server expands them (no per-row parameters, no RETURNING to send back);
        # a single statement's rowcount is exact. bench/RESULTS.md (fanout).
        return conn.exec_driver_sql(_DELIVER_PG, {
            "ids": list(follower_ids), "post_id": post_id, "created_at": created_at,
        }).rowcount
    rows = [{"user_id": u, "post_id": post_id, "created_at": created_at} for u in follower_ids]
    # RETURNING counts what was really inserted: executemany's rowcount is -1 on psycopg.
    stmt = insert_ignore(conn, timeline_entries).returning(timeline_entries.c.user_id)
    return len(conn.execute(stmt, rows).all())


_DELIVER_PG = (
    "INSERT INTO timeline_entries (user_id, post_id, created_at) "
    "SELECT u, %(post_id)s, %(created_at)s FROM unnest(%(ids)s::integer[]) AS u "
    "ON CONFLICT DO NOTHING"
)


def post_row(conn, post_id: int):
    return conn.execute(select(posts).where(posts.c.id == post_id)).first()


def read_timeline(conn, uid: int, limit: int) -> list[dict]:
    query = (
        select(posts.c.id, users.c.name, posts.c.text, posts.c.created_at)
        .join(timeline_entries, timeline_entries.c.post_id == posts.c.id)
        .join(users, users.c.id == posts.c.author_id)
        .where(timeline_entries.c.user_id == uid)
        .order_by(timeline_entries.c.created_at.desc(), posts.c.id.desc())
        .limit(limit)
    )
    return [
        {"post_id": r.id, "author": r.name, "text": r.text, "created_at": r.created_at}
        for r in conn.execute(query)
    ]


def count_timeline_entries(conn, post_id: int) -> int:
    query = select(func.count()).where(timeline_entries.c.post_id == post_id)
    return conn.execute(query).scalar_one()
