"""Hostile input never produces a 5xx, on SQLite and on PostgreSQL, and writes nothing."""
import json

import pytest

from tasks.demo.models import posts, users
from tests.integration.helpers import count, signup


@pytest.fixture(scope="module")
def author(api):
    return signup(api, "hostile")


# The author is the caller (its key); a body naming one is refused like any unknown field.
CASES = {
    "lone surrogate": b'{"text": "\\ud800 broken"}',
    "nul in text": b'{"text": "a\\u0000b"}',
    "huge integer as text": b'{"text": 1' + b"0" * 4000 + b'}',
    "float as text": b'{"text": 1.5e308}',
    "null text": b'{"text": null}',
    "duplicate keys": b'{"text": "a", "text": "b", "text": 3}',
    "array body": b'[{"text": "hi"}]',
    "deep nesting": b'{"text": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    "invalid utf-8": b'{"text": "\xff\xfe"}',
    "an author in the body": b'{"author": "%s", "text": "hi"}',
    "sql-ish author in the body": b'{"author": "x\'; DROP TABLE posts; --", "text": "hi"}',
    "unicode lookalike author": '{"author": "\u0430dmin", "text": "hi"}'.encode(),
    "empty body": b"",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_posts_get_a_4xx_with_a_sentence_and_write_nothing(api, author, case):
    body = CASES[case].replace(b"%s", author.name.encode())
    before = count(posts)
    response = api.post("/posts", content=body,
                        headers={"content-type": "application/json", **author.headers})
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    assert json.dumps(response.json()["detail"])
    assert count(posts) == before


@pytest.mark.parametrize("path", [
    "/timelines/" + "x" * 5000, "/timelines/%00", "/timelines/a%2Fb", "/jobs/" + "9" * 5000,
    "/timelines/{me}?limit=abc", "/timelines/{me}?limit=99999999999999999999",
    "/aggregates?limit=-1", "/jobs/%00/events", "/keys/" + "k" * 5000,
])
def test_hostile_paths_and_queries_get_a_4xx(api, author, path):
    path = path.replace("{me}", author.name)
    method = "DELETE" if path.startswith("/keys/") else "GET"
    response = api.request(method, path, headers=author.headers)
    assert 400 <= response.status_code < 500, (path, response.status_code)


@pytest.mark.parametrize("authorization", [
    b"Bearer", b"Bearer ", b"Bearer fg__", b"Bearer fg_%00_x", b"Bearer " + b"fg_" * 5000,
    b"Basic YWRtaW46YWRtaW4=", b"bearer fg_0123456789abcdef0123456789abcdef_x",
    b"Bearer fg_../../etc_x", b"Token abc", b"Bearer " + "\u00e9".encode() * 10,
    # read as latin-1 by the server: a 32-character key id, two characters not ASCII
    b"Bearer fg_" + b"0" * 30 + "\u00e9".encode() + b"_x",
    b"Bearer fg_" + b"\xff" * 32 + b"_x",
])
def test_hostile_credentials_get_401_and_write_nothing(api, authorization):
    before = count(posts), count(users)
    response = api.post("/posts", json={"text": "hi"}, headers={"Authorization": authorization})
    assert response.status_code == 401, (authorization[:40], response.status_code)
    assert response.headers["www-authenticate"] == "Bearer"
    assert (count(posts), count(users)) == before


def test_hostile_user_names_are_refused_and_not_stored(api):
    before = count(users)
    for name in ["", " ", "a" * 65, "a\u0000", "\ud800", "名前", "a b", "../etc"]:
        response = api.post("/users", content=json.dumps({"name": name}).encode(),
                            headers={"content-type": "application/json"})
        assert response.status_code == 422, (name, response.status_code)
    assert count(users) == before
