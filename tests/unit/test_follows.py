"""The follow cap (MAX_FOLLOWS_PER_USER) as the plain functions enforce it."""
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.demo.db import engine
from tasks.demo.errors import FollowLimit
from tasks.demo.timeline import create_user, follow, following_count, unfollow


def users(n: int) -> list[int]:
    tag = uuid.uuid4().hex[:8]
    with engine().begin() as conn:
        return [create_user(conn, f"cap{i}-{tag}") for i in range(n)]


def try_follow(follower: int, followee: int, cap: int) -> bool | None:
    """True/False as follow() returns; None when refused (its transaction rolled back)."""
    try:
        with engine().begin() as conn:
            return follow(conn, follower, followee, cap)
    except FollowLimit:
        return None


@settings(max_examples=20, deadline=None)
@given(cap=st.integers(1, 5), attempts=st.lists(st.integers(1, 7), min_size=1, max_size=12))
def test_an_account_never_follows_more_than_the_cap(cap, attempts):
    me, *others = users(8)
    for target in attempts:
        before = _count(me)
        outcome = try_follow(me, others[target - 1], cap)
        after = _count(me)
        assert after <= cap
        if outcome is None:
            assert before == cap and after == cap  # refused only when full, and nothing kept
        else:
            assert after == before + (1 if outcome else 0)


def test_unfollowing_makes_room():
    me, a, b = users(3)
    assert try_follow(me, a, 1) is True
    assert try_follow(me, b, 1) is None
    with engine().begin() as conn:
        assert unfollow(conn, me, a) is True
        assert unfollow(conn, me, a) is False
    assert try_follow(me, b, 1) is True


def test_the_refusal_names_the_cap_and_the_fix():
    me, a, b = users(3)
    try_follow(me, a, 1)
    with pytest.raises(FollowLimit, match=r"already follow 1 accounts.*DELETE /follows"):
        with engine().begin() as conn:
            follow(conn, me, b, 1)


def _count(uid: int) -> int:
    with engine().connect() as conn:
        return following_count(conn, uid)
