"""Authentication on every route, on this pass's broker and database (issue 19).

Every route the app serves is listed below with a request that a right key would have
answered; a route added without an entry fails ``test_every_route_is_listed``. For each:
no credential and every kind of wrong one get 401 with ``WWW-Authenticate: Bearer``;
another user's resource gets 403 (timelines) or 404 (jobs, their events, keys); and a
refused request writes no row and publishes nothing. Publishing is observed on a broker
namespace no worker drains (``idle_app``, which the API's submissions are pointed at):
its queues' depths, and the guard's accepted and refused counters, stay as they were.
"""
from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi import routing
from prometheus_client import REGISTRY

from config.queues import NAMES
from tasks.demo import keys
from tasks.demo.models import api_keys, follows, jobs, posts, timeline_entries, users
from tests.integration.helpers import (
    User,
    bearer,
    count,
    follow,
    ops_headers,
    post_as,
    read_job,
    signup,
    wait_for,
)
from tests.integration.test_back_pressure import LIMIT, depth, fill

PUBLIC = {("POST", "/users"), ("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
OPS = {("GET", "/metrics"), ("GET", "/healthz/details")}


@dataclass(frozen=True)
class World:
    """What the requests below act on: the owner's resources, and the other users."""

    owner: User
    stranger: User
    followee: User    # the owner follows them
    job_id: str       # the owner's post's job
    spare_key: User   # the owner's second key (its key_id is what DELETE /keys/{id} names)
    revoked_key: str  # a key of the owner's, revoked


Request = tuple[str, dict | None]  # (path, JSON body)
#: Every route that needs a user's key: a request on the owner's resources.
ROUTES: dict[tuple[str, str], Callable[[World], Request]] = {
    ("GET", "/users/me"): lambda w: ("/users/me", None),
    ("POST", "/keys"): lambda w: ("/keys", None),
    ("GET", "/keys"): lambda w: ("/keys", None),
    ("DELETE", "/keys/{key_id}"): lambda w: (f"/keys/{w.spare_key.key_id}", None),
    ("POST", "/follows"): lambda w: ("/follows", {"followee": w.stranger.name}),
    ("DELETE", "/follows/{followee}"): lambda w: (f"/follows/{w.followee.name}", None),
    ("GET", "/timelines/{name}"): lambda w: (f"/timelines/{w.owner.name}", None),
    ("POST", "/posts"): lambda w: ("/posts", {"text": "refused #auth"}),
    ("POST", "/posts:batch"): lambda w: ("/posts:batch", {"posts": [{"text": "refused"}] * 3}),
    ("GET", "/jobs/{job_id}"): lambda w: (f"/jobs/{w.job_id}", None),
    ("GET", "/jobs/{job_id}/events"): lambda w: (f"/jobs/{w.job_id}/events", None),
    ("GET", "/aggregates"): lambda w: ("/aggregates", None),
}
#: Routes whose path names a resource: what another user's key gets for the owner's.
SOMEONE_ELSES = {
    ("DELETE", "/keys/{key_id}"): 404,
    ("DELETE", "/follows/{followee}"): 200,  # acts on the caller's own follows only
    ("GET", "/timelines/{name}"): 403,
    ("GET", "/jobs/{job_id}"): 404,
    ("GET", "/jobs/{job_id}/events"): 404,
}
WRONG_CREDENTIALS: dict[str, Callable[[World], dict[str, str]]] = {
    "forged": lambda w: bearer(f"fg_{secrets.token_hex(16)}_{secrets.token_urlsafe(32)}"),
    "wrong secret": lambda w: bearer(f"fg_{w.owner.key_id}_{secrets.token_urlsafe(32)}"),
    "truncated": lambda w: bearer(w.owner.api_key[:-1]),
    "revoked": lambda w: bearer(w.revoked_key),
    "signed, never issued": lambda w: bearer(
        f"fg_{keys.sign(secrets.token_hex(8), os.environ['API_KEY_SECRET'].encode())}"
        f"_{secrets.token_urlsafe(32)}"),
    "the ops token": lambda w: bearer(os.environ["OPS_TOKEN"]),
    "another scheme": lambda w: {"Authorization": f"Basic {w.owner.api_key}"},
    "not a key": lambda w: bearer("letmein"),
}


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (HEAD aside)."""
    from api.main import app

    contexts = routing.iter_route_contexts(app.routes)
    return {(method, r.path) for r in contexts for method in (r.methods or ()) if method != "HEAD"}


@pytest.fixture(scope="module")
def world(api) -> World:
    owner, stranger = signup(api, "owner"), signup(api, "stranger")
    followee = signup(api, "followee")
    follow(api, owner, followee)
    accepted = post_as(api, owner, "mine #auth")
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    wait_for(lambda: read_job(api, owner, f"/jobs/{job_id}")["state"] == "succeeded")
    spare, doomed = (api.post("/keys", headers=owner.headers).json() for _ in range(2))
    assert api.delete(f"/keys/{doomed['key_id']}", headers=owner.headers).status_code == 204
    spare_key = User(owner.id, owner.name, spare["key_id"], spare["api_key"])
    return World(owner, stranger, followee, job_id, spare_key, doomed["api_key"])


# -- nothing written, nothing published ------------------------------------------------------
TABLES = {"users": (users,), "api_keys": (api_keys,),
          "live api_keys": (api_keys, api_keys.c.revoked_at.is_(None)), "posts": (posts,),
          "jobs": (jobs,), "follows": (follows,), "timeline_entries": (timeline_entries,)}


def admissions() -> dict[str, float]:
    """The guard's accepted and refused counts, every queue (every guard of this process)."""
    found = {}
    for outcome in ("accepted", "refused"):
        for queue in NAMES:
            value = REGISTRY.get_sample_value(f"floodgate_{outcome}_total", {"queue": queue})
            found[f"{outcome} {queue}"] = value or 0.0
    return found


@pytest.fixture
def effects(idle_app, monkeypatch):
    """``effects()``: a snapshot of every table's rows, the depth of every queue of the
    broker the API now publishes to, and the guard's admission counts."""
    import tasks.demo.submit

    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)  # a broker no worker drains

    def snapshot() -> dict:
        return {**{name: count(*t) for name, t in TABLES.items()},
                **{f"depth {q}": depth(idle_app, q) for q in NAMES}, **admissions()}

    return snapshot


def call(api, world: World, route: tuple[str, str], headers: dict[str, str] | None = None):
    method, _ = route
    path, body = ROUTES[route](world)
    return api.request(method, path, json=body, headers=headers or {})


def is_401(response) -> bool:
    return (response.status_code == 401
            and response.headers.get("www-authenticate") == "Bearer"
            and bool(response.json().get("detail")))


# -- the routes --------------------------------------------------------------------------------
def test_every_route_is_listed():
    """A route added without an entry here (or in PUBLIC or OPS) fails: each route needs
    its authentication test."""
    listed = PUBLIC | OPS | set(ROUTES)
    served = served_routes()
    assert served - listed == set(), "routes without an authentication test"
    assert listed - served == set(), "listed routes the app does not serve"
    with_resource = {r for r in ROUTES if "{" in r[1]}
    assert with_resource == set(SOMEONE_ELSES), "routes naming a resource need an owner test"


@pytest.mark.parametrize("route", sorted(ROUTES), ids=" ".join)
def test_no_credential_is_401_and_changes_nothing(api, world, effects, route):
    before = effects()
    response = call(api, world, route)
    assert is_401(response), (response.status_code, response.headers, response.text[:300])
    assert effects() == before


@pytest.mark.parametrize("route", sorted(ROUTES), ids=" ".join)
def test_a_wrong_credential_is_401_and_changes_nothing(api, world, effects, route):
    before = effects()
    wrong = {kind: call(api, world, route, make(world))
             for kind, make in WRONG_CREDENTIALS.items()}
    accepted = {kind: (r.status_code, r.text[:200]) for kind, r in wrong.items() if not is_401(r)}
    assert accepted == {}, "wrong credentials not refused with 401"
    assert effects() == before


@pytest.mark.parametrize("route", sorted(SOMEONE_ELSES), ids=" ".join)
def test_someone_elses_resource_is_refused_and_changes_nothing(api, world, effects, route):
    before = effects()
    response = call(api, world, route, world.stranger.headers)
    assert response.status_code == SOMEONE_ELSES[route], (response.status_code, response.text)
    assert effects() == before
    if route == ("DELETE", "/follows/{followee}"):
        assert response.json()["removed"] is False  # the owner still follows them


def test_another_users_job_looks_like_one_never_issued(api, world):
    """A job id tells a stranger nothing, not even that the job exists."""
    never = str(uuid.uuid4())
    theirs = api.get(f"/jobs/{world.job_id}", headers=world.stranger.headers)
    missing = api.get(f"/jobs/{never}", headers=world.stranger.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(world.job_id, never) == missing.json()["detail"]


def test_another_users_timeline_is_403_and_shows_none_of_it(api, world):
    response = api.get(f"/timelines/{world.owner.name}", headers=world.stranger.headers)
    assert response.status_code == 403
    assert "mine #auth" not in response.text and "posts" not in response.json()
    assert f"/timelines/{world.stranger.name}" in response.json()["detail"]


def test_the_owner_is_answered_on_each_resource(api, world):
    """The refusals above are about whose resource it is: its owner gets an answer."""
    owner = world.owner.headers
    mine = api.get(f"/timelines/{world.owner.name}", headers=owner)
    assert mine.status_code == 200 and mine.json()["posts"][0]["text"] == "mine #auth"
    assert api.get(f"/jobs/{world.job_id}", headers=owner).json()["state"] == "succeeded"
    with api.stream("GET", f"/jobs/{world.job_id}/events", headers=owner) as events:
        assert events.status_code == 200
        assert "event: final" in events.read().decode()
    spare = world.spare_key.headers  # another key of the same user acts as that user
    assert api.get("/users/me", headers=spare).json()["name"] == world.owner.name


def test_the_check_comes_before_admission(api, world, effects, idle_app):
    """With the queue full, a post without a valid key is still a 401, not a 503: it never
    reached the broker (the refusal counter does not move)."""
    fill(idle_app, LIMIT)
    before = effects()
    assert call(api, world, ("POST", "/posts")).status_code == 401
    forged = WRONG_CREDENTIALS["forged"](world)
    assert call(api, world, ("POST", "/posts"), forged).status_code == 401
    assert call(api, world, ("POST", "/posts:batch"), forged).status_code == 401
    assert effects() == before
    assert call(api, world, ("POST", "/posts"), world.owner.headers).status_code == 503
    assert admissions()["refused fanout"] > before["refused fanout"]  # the counter works


def test_the_snapshot_sees_what_an_accepted_post_writes_and_publishes(api, world, effects):
    """The observation the refusals above rely on, shown to work."""
    before = effects()
    assert call(api, world, ("POST", "/posts"), world.owner.headers).status_code == 202
    after = effects()
    assert (after["posts"], after["jobs"]) == (before["posts"] + 1, before["jobs"] + 1)
    assert after["depth fanout"] == before["depth fanout"] + 1
    assert after["accepted fanout"] == before["accepted fanout"] + 1


# -- public and operations routes --------------------------------------------------------------
def test_the_public_routes_need_no_credential(api):
    assert api.get("/healthz").status_code == 200
    assert api.get("/healthz", headers=bearer("not a key")).status_code == 200
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert api.get(path).status_code == 200, path
    before = count(users)
    created = api.post("/users", json={"name": f"public-{secrets.token_hex(4)}"},
                       headers=bearer("ignored"))
    assert created.status_code == 201 and count(users) == before + 1


@pytest.mark.parametrize("path", sorted(p for _, p in OPS))
def test_the_operations_routes_take_the_ops_token_only(api, world, path):
    refused = {"none": {}, "a user's key": world.owner.headers,
               "the ops token, altered": bearer(os.environ["OPS_TOKEN"][:-1]),
               "the key-signing secret": bearer(os.environ["API_KEY_SECRET"]),
               "another scheme": {"Authorization": f"Basic {os.environ['OPS_TOKEN']}"}}
    answers = {kind: api.get(path, headers=headers) for kind, headers in refused.items()}
    assert {k: r.status_code for k, r in answers.items() if not is_401(r)} == {}
    assert api.get(path, headers=ops_headers()).status_code == 200
