"""Per-client rate limits and the follow cap, on two real API processes (issue 19).

The two processes share one rate-limit store (their meter: a redis-server of this
module's own, so no other test's counts mix in), so a client spreading its requests
over both meets one limit. Signups are counted per client address: each client here
connects from an address of its own on the loopback network (127.0.0.x), which is
how the server tells clients apart. The limits are per hour, so a test never races a
window's end.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from tasks.demo.models import follows, users
from tests import processes, support
from tests.faults.brokers import PrivateRedis
from tests.integration.helpers import User, unique

pytestmark = pytest.mark.e2e
SIGNUPS, FOLLOW_CHANGES, CAP = 4, 8, 3
_addresses = itertools.count(2)


class Limited:
    """Two API processes with small limits, a shared meter and one database."""

    def __init__(self, tmp, meter_url: str) -> None:
        self.env = support.stack_env(
            "e2e", "floodgate_limits", tmp, METER_URL=meter_url,
            RATE_LIMIT_SIGNUPS=f"{SIGNUPS}/hour", RATE_LIMIT_FOLLOWS=f"{FOLLOW_CHANGES}/hour",
            MAX_FOLLOWS_PER_USER=CAP)
        self.ports = [support.free_port(), support.free_port()]
        self.parts = []
        for i, port in enumerate(self.ports):
            (tmp / f"api{i}").mkdir()
            self.parts.append(processes.api(self.env, tmp / f"api{i}", port))
        self.engine = create_engine(self.env["DATABASE_URL"])

    def client(self, api: int, address: str, **headers) -> httpx.Client:
        """A client of API process ``api`` (0 or 1) connecting from ``address``."""
        return httpx.Client(base_url=f"http://127.0.0.1:{self.ports[api]}", timeout=10,
                            headers=headers, transport=httpx.HTTPTransport(local_address=address))

    def new_user(self, prefix: str = "limits") -> User:
        """A user signed up from an address no one has used (each has SIGNUPS an hour)."""
        with self.client(0, f"127.0.0.{next(_addresses)}") as http:
            answer = http.post("/users", json={"name": unique(prefix)})
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return User(body["id"], body["name"], body["key_id"], body["api_key"])

    def as_user(self, api: int, user: User) -> httpx.Client:
        return self.client(api, "127.0.0.1", **user.headers)

    def names(self, prefix: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(users.c.name).where(users.c.name.like(f"{prefix}%")))
                       .scalars())

    def following(self, user: User) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(follows)
                                .where(follows.c.follower_id == user.id)).scalar_one()


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    support.reset_namespace("e2e")
    meter = PrivateRedis(tmp / "meter", aof=False)
    meter.start()
    system = None
    try:
        system = Limited(tmp, f"redis://127.0.0.1:{meter.port}/0")
        for port in system.ports:
            processes.wait_http(f"http://127.0.0.1:{port}/healthz")
        yield system
    finally:
        if system is not None:
            for part in system.parts:
                part.stop()
            system.engine.dispose()
        meter.close()


def assert_429(answer, limit: str) -> None:
    assert answer.status_code == 429, (answer.status_code, answer.text)
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= 3600, retry_after
    assert limit in answer.json()["detail"]


def test_signups_over_the_limit_get_429_across_processes_and_create_no_user(limited):
    prefix = unique("signup")
    address = f"127.0.0.{next(_addresses)}"
    with limited.client(0, address) as first, limited.client(1, address) as second:
        made = [http.post("/users", json={"name": f"{prefix}-{i}"})
                for i, http in zip(range(SIGNUPS), itertools.cycle([first, second]))]
        assert [a.status_code for a in made] == [201] * SIGNUPS
        over = [first.post("/users", json={"name": f"{prefix}-over-0"}),
                second.post("/users", json={"name": f"{prefix}-over-1"})]
    for answer in over:
        assert_429(answer, f"{SIGNUPS}/hour")
    assert limited.names(prefix) == {f"{prefix}-{i}" for i in range(SIGNUPS)}


def test_the_signup_limit_is_per_address_and_a_forwarded_header_does_not_reset_it(limited):
    prefix = unique("spoof")
    address = f"127.0.0.{next(_addresses)}"
    with limited.client(0, address) as http:
        for i in range(SIGNUPS):
            assert http.post("/users", json={"name": f"{prefix}-{i}"}).status_code == 201
        # The peer is not a trusted proxy, so the header is not taken for its address.
        spoofed = http.post("/users", json={"name": f"{prefix}-spoofed"},
                            headers={"X-Forwarded-For": "203.0.113.9"})
    assert_429(spoofed, f"{SIGNUPS}/hour")
    with limited.client(1, f"127.0.0.{next(_addresses)}") as elsewhere:
        assert elsewhere.post("/users", json={"name": f"{prefix}-other"}).status_code == 201
    assert f"{prefix}-spoofed" not in limited.names(prefix)


def test_follow_changes_over_the_limit_get_429_across_processes_and_change_nothing(limited):
    fan, other = limited.new_user("fan"), limited.new_user("fan")
    first, second = limited.new_user("idol"), limited.new_user("idol")
    with limited.as_user(0, fan) as a, limited.as_user(1, fan) as b:
        changes = [(a.post, "/follows", first), (b.post, "/follows", second),
                   (a.delete, "/follows/", first), (b.delete, "/follows/", second)] * 2
        assert len(changes) == FOLLOW_CHANGES
        for send, path, idol in changes:
            answer = (send(path, json={"followee": idol.name}) if path == "/follows"
                      else send(path + idol.name))
            assert answer.status_code in (200, 201), answer.text
        following = limited.following(fan)
        over = [a.post("/follows", json={"followee": first.name}),
                b.delete(f"/follows/{second.name}")]
    for answer in over:
        assert_429(answer, f"{FOLLOW_CHANGES}/hour")
    assert limited.following(fan) == following == 0
    with limited.as_user(1, other) as http:  # counted per user: another user may follow
        assert http.post("/follows", json={"followee": first.name}).status_code == 201


def test_follows_stop_at_the_cap_with_409_and_an_unfollow_frees_a_place(limited):
    fan = limited.new_user("capped")
    idols = [limited.new_user("idol") for _ in range(CAP + 1)]
    with limited.as_user(0, fan) as a, limited.as_user(1, fan) as b:
        for idol in idols[:CAP]:
            assert a.post("/follows", json={"followee": idol.name}).status_code == 201
        extra = idols[CAP].name
        refused = [a.post("/follows", json={"followee": extra}),
                   b.post("/follows", json={"followee": extra})]
        for answer in refused:
            assert answer.status_code == 409, answer.text
            assert "MAX_FOLLOWS_PER_USER" in answer.json()["detail"]
        assert limited.following(fan) == CAP

        unfollowed = b.delete(f"/follows/{idols[0].name}")
        assert unfollowed.status_code == 200 and unfollowed.json()["removed"] is True
        assert a.post("/follows", json={"followee": extra}).status_code == 201
    assert limited.following(fan) == CAP


def test_follows_racing_for_the_last_place_take_it_once(limited):
    """Six follows at once, over both processes, for the one place left under the cap."""
    fan = limited.new_user("racer")
    idols = [limited.new_user("idol") for _ in range(CAP - 1 + 6)]
    with limited.as_user(0, fan) as a:
        for idol in idols[:CAP - 1]:
            assert a.post("/follows", json={"followee": idol.name}).status_code == 201

    def follow(args):
        api, idol = args
        with limited.as_user(api, fan) as http:
            return http.post("/follows", json={"followee": idol.name}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(follow, [(i % 2, idol) for i, idol in
                                            enumerate(idols[CAP - 1:])]))
    assert statuses == [201] + [409] * 5
    assert limited.following(fan) == CAP


def test_a_limit_store_that_is_down_refuses_in_words(limited, tmp_path):
    """Without its store the limit is not skipped: 503, naming what is down, no user made."""
    env = {**limited.env, "METER_URL": f"redis://127.0.0.1:{support.free_port()}/0"}
    port = support.free_port()
    part = processes.api(env, tmp_path, port)
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=30)
        name = unique("nostore")
        answer = httpx.post(f"http://127.0.0.1:{port}/users", json={"name": name}, timeout=10)
    finally:
        part.stop()
    assert answer.status_code == 503 and "Retry-After" in answer.headers, answer.text
    assert "rate limit" in answer.json()["detail"] and "Error" not in answer.json()["detail"]
    assert limited.names(name) == set()


def test_a_key_made_by_one_process_works_on_the_other(limited):
    user = limited.new_user()  # signed up on the first
    with limited.as_user(1, user) as http:
        assert http.get("/users/me").json()["name"] == user.name
