"""Hostile input never produces a 5xx, on SQLite and on PostgreSQL, and writes nothing."""
import json

import pytest

from tasks.demo.models import posts, users
from tests.integration.helpers import count, make_following


@pytest.fixture(scope="module")
def author(api):
    name, _ = make_following(api, followers=0)
    return name


CASES = {
    "lone surrogate": b'{"author": "%s", "text": "\\ud800 broken"}',
    "nul in text": b'{"author": "%s", "text": "a\\u0000b"}',
    "nul in name": b'{"author": "a\\u0000b", "text": "hi"}',
    "huge integer as text": b'{"author": "%s", "text": 1' + b"0" * 4000 + b'}',
    "float as name": b'{"author": 1.5e308, "text": "hi"}',
    "null fields": b'{"author": null, "text": null}',
    "duplicate keys": b'{"author": "%s", "text": "a", "text": "b", "text": 3}',
    "array body": b'[{"author": "%s", "text": "hi"}]',
    "deep nesting": b'{"author": "%s", "text": ' + b"[" * 10000 + b"]" * 10000 + b"}",
    "invalid utf-8": b'{"author": "%s", "text": "\xff\xfe"}',
    "sql-ish name": b'{"author": "x\'; DROP TABLE posts; --", "text": "hi"}',
    "unicode lookalike name": '{"author": "\u0430dmin", "text": "hi"}'.encode(),
    "empty body": b"",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_posts_get_a_4xx_with_a_sentence_and_write_nothing(api, author, case):
    body = CASES[case].replace(b"%s", author.encode()) if b"%s" in CASES[case] else CASES[case]
    before = count(posts)
    response = api.post("/posts", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:200])
    assert json.dumps(response.json()["detail"])
    assert count(posts) == before


@pytest.mark.parametrize("path", [
    "/timelines/" + "x" * 5000, "/timelines/%00", "/timelines/a%2Fb", "/jobs/" + "9" * 5000,
    "/timelines/alice?limit=abc", "/timelines/alice?limit=99999999999999999999",
    "/aggregates?limit=-1",
])
def test_hostile_paths_and_queries_get_a_4xx(api, path):
    response = api.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code)


def test_hostile_user_names_are_refused_and_not_stored(api):
    before = count(users)
    for name in ["", " ", "a" * 65, "a\u0000", "\ud800", "名前", "a b", "../etc"]:
        response = api.post("/users", content=json.dumps({"name": name}).encode(),
                            headers={"content-type": "application/json"})
        assert response.status_code == 422, (name, response.status_code)
    assert count(users) == before
