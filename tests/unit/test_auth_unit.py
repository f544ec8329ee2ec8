"""The API key check (api/auth.py) and what it costs, counted in database queries.

A made-up key is refused by its signature alone; a key seen within AUTH_CACHE_S is
checked against the process's cache; a key revoked here is refused at once.
"""
import contextlib
import os
import secrets
import uuid

import pytest
from cachetools import TTLCache
from sqlalchemy import event

from api import auth
from tasks.demo import keys
from tasks.demo.db import engine


@contextlib.contextmanager
def queries():
    """The SQL statements the app's engine runs meanwhile."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(engine(), "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine(), "before_cursor_execute", record)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The key cache on a clock the test moves (TTL: AUTH_CACHE_S, as the app's)."""
    clock = Clock()
    ttl = auth.get_settings().auth_cache_s
    monkeypatch.setattr(auth, "_cache", TTLCache(auth.CACHE_SIZE, ttl=ttl, timer=clock))
    return clock


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def signup(client) -> dict:
    answer = client.post("/users", json={"name": f"auth-{uuid.uuid4().hex[:8]}"})
    assert answer.status_code == 201, answer.text
    return answer.json()


def signing_key() -> bytes:
    return os.environ["API_KEY_SECRET"].encode()


def refused(answer) -> bool:
    return answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


FORGED = {
    "not signed": b"fg_" + b"0" * 32 + b"_" + b"s" * 43,
    "signed under another secret":
        f"fg_{keys.sign('0123456789abcdef', b'another secret' * 3)}_secret".encode(),
    # The server reads header bytes as latin-1: an id of the right length (32 characters),
    # two of them not ASCII.
    "non-ASCII id": b"fg_" + b"0" * 30 + "\u00e9".encode() + b"_secret",
    "not a key": b"not-a-key", "empty parts": b"fg__", "no secret": b"fg_x_",
    "too long": b"fg_" + b"a" * 300 + b"_x",
}


@pytest.mark.parametrize("api_key", FORGED.values(), ids=FORGED.keys())
def test_a_forged_key_is_refused_without_a_query(client, clock, api_key):
    with queries() as seen:
        answer = client.post("/posts", json={"text": "forged"},
                             headers={"Authorization": b"Bearer " + api_key})
    assert refused(answer), (answer.status_code, answer.text)
    assert seen == []


def test_no_credential_is_refused_without_a_query_and_before_the_body_is_checked(client, clock):
    with queries() as seen:
        answers = [client.post("/posts", json={"text": "hi"}),
                   client.post("/posts", json={"no": "text"}),  # an invalid body: 401 first
                   client.post("/posts", json={"text": "hi"}, headers={"Authorization": "Basic x"})]
    assert all(refused(a) for a in answers), [a.status_code for a in answers]
    assert seen == []


def test_a_valid_key_costs_one_query_then_none_within_the_cache_time(client, clock):
    user = signup(client)
    ttl = auth.get_settings().auth_cache_s
    with queries() as first:
        assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    assert len(first) == 1  # the key's row
    clock.now += ttl * auth.REFRESH_AFTER * 0.9
    with queries() as cached:
        for _ in range(5):
            assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    assert cached == []
    clock.now += ttl * auth.REFRESH_AFTER * 0.2  # in use and aging: read again once, ahead
    with queries() as ahead:
        for _ in range(5):
            assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    assert len(ahead) == 1
    clock.now += ttl * 1.1  # unused past AUTH_CACHE_S: read again before answering
    with queries() as expired:
        assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    assert len(expired) == 1


def test_requests_waiting_for_the_same_key_share_one_lookup(clock):
    import asyncio

    from starlette.requests import Request

    user_id_key = keys.sign(secrets.token_hex(8), signing_key())  # signed, held by no one
    request = Request({"type": "http", "headers": [
        (b"authorization", f"Bearer fg_{user_id_key}_{'s' * 43}".encode())]})

    async def twenty_at_once():
        return await asyncio.gather(*(auth.user_key(request) for _ in range(20)),
                                    return_exceptions=True)

    with queries() as seen:
        answers = asyncio.run(twenty_at_once())
    assert all(isinstance(a, auth.Unauthenticated) for a in answers), answers
    assert len(seen) == 1


def test_a_wrong_secret_for_a_real_key_id_is_refused_and_repeating_it_costs_nothing(
        client, clock):
    user = signup(client)
    wrong = f"fg_{user['key_id']}_{secrets.token_urlsafe(32)}"
    with queries() as first:
        assert refused(client.get("/users/me", headers=bearer(wrong)))
    with queries() as again:
        for _ in range(5):
            assert refused(client.get("/users/me", headers=bearer(wrong)))
    assert len(first) <= 1 and again == []
    assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200


def test_a_signed_id_no_one_holds_is_refused_and_remembered(client, clock):
    unknown = f"fg_{keys.sign(secrets.token_hex(8), signing_key())}_{secrets.token_urlsafe(32)}"
    with queries() as first:
        assert refused(client.get("/users/me", headers=bearer(unknown)))
    with queries() as again:
        assert refused(client.get("/users/me", headers=bearer(unknown)))
    assert len(first) == 1 and again == []


def test_a_revoked_key_is_refused_at_once_in_the_process_that_revoked_it(client, clock):
    user = signup(client)
    second = client.post("/keys", headers=bearer(user["api_key"])).json()
    assert client.get("/users/me", headers=bearer(second["api_key"])).json()["key_id"] \
        == second["key_id"]  # now cached as valid

    revoked = client.delete(f"/keys/{second['key_id']}", headers=bearer(user["api_key"]))

    assert revoked.status_code == 204
    answer = client.get("/users/me", headers=bearer(second["api_key"]))
    assert refused(answer) and "revoked" in answer.json()["detail"]
    assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    listed = client.get("/keys", headers=bearer(user["api_key"])).json()["keys"]
    assert {k["key_id"]: k["revoked_at"] is not None for k in listed} == {
        user["key_id"]: False, second["key_id"]: True}


def test_a_key_revoked_by_another_process_stops_working_within_the_cache_time(client, clock):
    """Another API process revoking the key cannot clear this one's cache: the key works
    until its entry expires (AUTH_CACHE_S, docs/app/security.md), then is refused."""
    user = signup(client)
    assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    with engine().begin() as conn:  # as another process's DELETE /keys/{id} would
        assert keys.revoke_key(conn, user["id"], user["key_id"])
    assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    clock.now += auth.get_settings().auth_cache_s + 0.1
    assert refused(client.get("/users/me", headers=bearer(user["api_key"])))


def test_someone_elses_key_cannot_be_revoked(client, clock):
    owner, other = signup(client), signup(client)
    answer = client.delete(f"/keys/{owner['key_id']}", headers=bearer(other["api_key"]))
    assert answer.status_code == 404
    assert client.get("/users/me", headers=bearer(owner["api_key"])).status_code == 200


def test_the_operations_routes_take_the_ops_token_and_nothing_else(client, clock):
    user = signup(client)
    ops = bearer(os.environ["OPS_TOKEN"])
    for path in ("/metrics", "/healthz/details"):
        with queries() as seen:
            answers = [client.get(path), client.get(path, headers=bearer(user["api_key"])),
                       client.get(path, headers=bearer(os.environ["OPS_TOKEN"] + "x")),
                       client.get(path, headers=bearer(os.environ["API_KEY_SECRET"]))]
        assert all(refused(a) for a in answers), (path, [a.status_code for a in answers])
        assert seen == [], path
        assert client.get(path, headers=ops).status_code == 200, path


def _with_settings(monkeypatch, module, **changes):
    from config.settings import get_settings

    changed = get_settings().model_copy(update=changes)
    monkeypatch.setattr(module, "get_settings", lambda: changed)


def test_an_account_holds_at_most_max_keys_per_user_live_keys(client, clock, monkeypatch):
    from api.routes import users as users_route

    _with_settings(monkeypatch, users_route, max_keys_per_user=3)
    user = signup(client)  # its first key
    made = [client.post("/keys", headers=bearer(user["api_key"])) for _ in range(2)]
    assert [m.status_code for m in made] == [201, 201]
    with engine().connect() as conn:
        before = len(keys.list_keys(conn, user["id"]))
    over = client.post("/keys", headers=bearer(user["api_key"]))
    assert over.status_code == 409 and "MAX_KEYS_PER_USER" in over.json()["detail"]
    with engine().connect() as conn:
        assert len(keys.list_keys(conn, user["id"])) == before == 3
    assert client.delete(f"/keys/{made[0].json()['key_id']}",
                         headers=bearer(user["api_key"])).status_code == 204
    assert client.post("/keys", headers=bearer(user["api_key"])).status_code == 201


def test_creating_keys_is_rate_limited_per_user(client, clock, monkeypatch):
    from api import ratelimit

    _with_settings(monkeypatch, ratelimit, rate_limit_keys="2/hour")
    user, other = signup(client), signup(client)
    answers = [client.post("/keys", headers=bearer(user["api_key"])) for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert 0 < int(answers[2].headers["Retry-After"]) <= 3600
    assert client.post("/keys", headers=bearer(other["api_key"])).status_code == 201


def test_a_read_begun_before_a_revoke_here_cannot_bring_the_key_back(client, clock):
    user = signup(client)
    key_id = user["key_id"]
    assert client.get("/users/me", headers=bearer(user["api_key"])).status_code == 200
    with engine().connect() as conn:
        stale = keys.find_key(conn, key_id)  # as a background re-read saw it ...
    read_began = clock.now
    clock.now += 1
    assert client.delete(f"/keys/{key_id}", headers=bearer(user["api_key"])).status_code == 204
    auth._remember(key_id, stale, read_began)  # ... landing after the revoke
    answer = client.get("/users/me", headers=bearer(user["api_key"]))
    assert refused(answer) and "revoked" in answer.json()["detail"]


def test_follow_changes_are_limited_per_address_over_all_its_accounts(client, clock, monkeypatch):
    from api import ratelimit

    _with_settings(monkeypatch, ratelimit, rate_limit_follows_per_address="3/hour")
    target = signup(client)
    fans = [signup(client) for _ in range(4)]  # one address (the test client's), four accounts
    answers = [client.post("/follows", json={"followee": target["name"]},
                           headers=bearer(fan["api_key"])) for fan in fans]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert "follow changes" in answers[3].json()["detail"]
