"""Bad input gets a 4xx with a sentence naming the problem, and changes nothing."""
import uuid

import pytest
from sqlalchemy import func, select

from tasks.demo.db import engine
from tasks.demo.models import posts, users


def count(table) -> int:
    with engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture(scope="module", autouse=True)
def alice(client):
    client.post("/users", json={"name": "alice"})


def test_creating_a_user_twice_answers_409_naming_the_name(client):
    assert client.post("/users", json={"name": "carol"}).status_code == 201
    again = client.post("/users", json={"name": "carol"})
    assert again.status_code == 409 and "'carol' is already taken" in again.json()["detail"]


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"author": "alice"}',
    b'{"author": "alice", "text": "hi", "extra": 1}',
    b'{"author": "alice", "text": 42}',
    b'{"author": "alice", "text": ""}',
    b'{"author": "alice", "text": "a\\u0000b"}',
    b'{"author": "' + b"x" * 65 + b'", "text": "hi"}',
    b'{"author": "al ice", "text": "hi"}',
    b'[' * 5000 + b']' * 5000,
    b'"just a string"',
])
def test_malformed_posts_get_422_and_write_nothing(client, body):
    before = count(posts)
    response = client.post("/posts", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]
    assert count(posts) == before


def test_a_post_by_an_unknown_user_is_404_and_writes_nothing(client):
    before = count(posts)
    response = client.post("/posts", json={"author": "nobody", "text": "hello"})
    assert response.status_code == 404
    assert "unknown user 'nobody'" in response.json()["detail"]
    assert count(posts) == before


def test_following_an_unknown_user_is_404(client):
    response = client.post("/follows", json={"follower": "alice", "followee": "ghost"})
    assert response.status_code == 404 and "ghost" in response.json()["detail"]


def test_a_body_over_the_size_limit_is_413_before_anything_runs(client):
    before = count(posts), count(users)
    response = client.post("/posts", content=b'{"author":"alice","text":"' + b"a" * 70_000 + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert (count(posts), count(users)) == before


def test_a_wrong_content_type_is_a_4xx(client):
    response = client.post("/posts", content=b"author=alice&text=hi",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422


def test_a_job_id_never_issued_is_404_not_queued(client):
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    assert client.get("/jobs/not-a-uuid").status_code == 404


def test_timeline_of_an_unknown_user_is_404_and_limits_are_checked(client):
    assert client.get("/timelines/ghost").status_code == 404
    assert client.get("/timelines/alice?limit=0").status_code == 422
    assert client.get("/timelines/alice?limit=201").status_code == 422


def test_a_post_is_on_its_authors_timeline_before_the_202(client):
    response = client.post("/posts", json={"author": "alice", "text": "first #hello"})
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == body["status_url"] == f"/jobs/{body['job_id']}"
    timeline = client.get("/timelines/alice").json()["posts"]
    assert timeline[0]["post_id"] == body["post_id"] and timeline[0]["text"] == "first #hello"
    job = client.get(body["status_url"]).json()
    assert job["state"] == "queued" and job["error"] is None


def test_openapi_docs_are_served(client):
    assert "/posts" in client.get("/openapi.json").json()["paths"]
