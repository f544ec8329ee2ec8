"""Bad input gets a 4xx with a sentence naming the problem, and changes nothing."""
import uuid

import pytest
from sqlalchemy import func, select

from tasks.demo.db import engine
from tasks.demo.models import posts, users


def count(table) -> int:
    with engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def signup(client, prefix: str) -> tuple[str, dict[str, str]]:
    """(name, headers acting as it) of a new account."""
    response = client.post("/users", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["name"], {"Authorization": f"Bearer {body['api_key']}"}


@pytest.fixture(scope="module")
def alice(client):
    return signup(client, "alice")


def test_creating_a_user_twice_answers_409_naming_the_name(client):
    name = f"carol-{uuid.uuid4().hex[:8]}"
    assert client.post("/users", json={"name": name}).status_code == 201
    again = client.post("/users", json={"name": name})
    assert again.status_code == 409 and f"{name!r} is already taken" in again.json()["detail"]


def test_a_new_user_gets_a_key_that_acts_as_it(client):
    answer = client.post("/users", json={"name": f"dave-{uuid.uuid4().hex[:8]}"})
    body = answer.json()
    assert set(body) == {"id", "name", "key_id", "api_key"}
    assert body["api_key"].startswith(f"fg_{body['key_id']}_")
    me = client.get("/users/me", headers={"Authorization": f"Bearer {body['api_key']}"})
    assert me.json() == {"id": body["id"], "name": body["name"], "key_id": body["key_id"]}


@pytest.mark.parametrize("body", [
    b"{not json",
    b"{}",
    b'{"text": "hi", "extra": 1}',
    b'{"text": 42}',
    b'{"text": ""}',
    b'{"text": "a\\u0000b"}',
    b'{"author": "alice", "text": "hi"}',  # the author is the caller, never the body
    b'[' * 5000 + b']' * 5000,
    b'"just a string"',
])
def test_malformed_posts_get_422_and_write_nothing(client, alice, body):
    before = count(posts)
    response = client.post("/posts", content=body,
                           headers={"content-type": "application/json", **alice[1]})
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]
    assert count(posts) == before


def test_a_body_naming_an_author_is_refused_naming_the_field(client, alice):
    before = count(posts)
    response = client.post("/posts", json={"author": "someone-else", "text": "hello"},
                           headers=alice[1])
    assert response.status_code == 422 and "author" in response.json()["detail"]
    assert count(posts) == before


def test_following_an_unknown_user_is_404(client, alice):
    response = client.post("/follows", json={"followee": "ghost"}, headers=alice[1])
    assert response.status_code == 404 and "ghost" in response.json()["detail"]


def test_a_body_naming_the_follower_is_refused(client, alice):
    bob, _ = signup(client, "bob")
    response = client.post("/follows", json={"follower": alice[0], "followee": bob},
                           headers=alice[1])
    assert response.status_code == 422 and "follower" in response.json()["detail"]


def test_following_oneself_is_422(client, alice):
    response = client.post("/follows", json={"followee": alice[0]}, headers=alice[1])
    assert response.status_code == 422 and "themselves" in response.json()["detail"]


def test_a_body_over_the_size_limit_is_413_before_anything_runs(client, alice):
    before = count(posts), count(users)
    response = client.post("/posts", content=b'{"text":"' + b"a" * 70_000 + b'"}',
                           headers={"content-type": "application/json", **alice[1]})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert (count(posts), count(users)) == before


def test_a_wrong_content_type_is_a_4xx(client, alice):
    response = client.post("/posts", content=b"text=hi",
                           headers={"content-type": "application/x-www-form-urlencoded",
                                    **alice[1]})
    assert response.status_code == 422


def test_a_job_id_never_issued_is_404_not_queued(client, alice):
    assert client.get(f"/jobs/{uuid.uuid4()}", headers=alice[1]).status_code == 404
    assert client.get("/jobs/not-a-uuid", headers=alice[1]).status_code == 404


def test_another_users_timeline_is_403_and_limits_are_checked(client, alice):
    name, _ = alice
    other = client.get("/timelines/ghost", headers=alice[1])
    assert other.status_code == 403 and f"/timelines/{name}" in other.json()["detail"]
    assert client.get(f"/timelines/{name}?limit=0", headers=alice[1]).status_code == 422
    assert client.get(f"/timelines/{name}?limit=201", headers=alice[1]).status_code == 422


def test_a_post_is_on_its_authors_timeline_before_the_202(client, alice, submit_path):
    name, headers = alice
    response = client.post("/posts", json={"text": "first #hello"}, headers=headers)
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == body["status_url"] == f"/jobs/{body['job_id']}"
    timeline = client.get(f"/timelines/{name}", headers=headers).json()["posts"]
    assert timeline[0]["post_id"] == body["post_id"] and timeline[0]["text"] == "first #hello"
    assert timeline[0]["author"] == name
    job = client.get(body["status_url"], headers=headers).json()
    assert job["state"] == "queued" and job["error"] is None


def test_a_batch_of_posts_is_on_its_authors_timeline_before_the_202(client, submit_path):
    name, headers = signup(client, "batcher")
    response = client.post("/posts:batch", json={"posts": [{"text": "one"}, {"text": "two"}]},
                           headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 0)
    timeline = client.get(f"/timelines/{name}", headers=headers).json()["posts"]
    assert sorted(p["post_id"] for p in timeline) == sorted(r["post_id"] for r in body["results"])
    for item in body["results"]:
        assert client.get(item["status_url"], headers=headers).json()["state"] == "queued"


def test_openapi_docs_are_served_and_name_the_bearer_scheme(client):
    spec = client.get("/openapi.json").json()
    assert "/posts" in spec["paths"]
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())


def test_a_post_body_that_is_not_json_by_its_content_type_is_422(client, alice):
    before = count(posts)
    response = client.post("/posts", content=b'{"text": "hi"}', headers={
        **alice[1], "content-type": "text/plain"})
    assert response.status_code == 422 and "Content-Type: application/json" in response.text
    assert count(posts) == before
