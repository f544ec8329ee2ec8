"""FAULTS.md row 11: the broker is stopped, or up but blocked.

POST /posts must answer 503 within about a second (asserted: under 2 s), no
request may hang, a refused post leaves nothing behind, GET /healthz/details must
answer 503 naming the broker, and the same API process recovers once the broker is
back. Runs on this pass's broker, a private instance.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.faults.harness import make_author, only_on, wait_for

ANSWER_WITHIN_S = 2.0
HEALTH_WITHIN_S = 3.0  # each dependency check is bounded to 2 s
HUNG_AFTER_S = 4.0     # a request still unanswered after this is hanging


def timed_post(base_url: str, author: dict[str, str], text: str) -> tuple[int | str, float]:
    """POST /posts with ``author``'s headers; (status or error name, seconds)."""
    start = time.monotonic()
    try:
        status = httpx.post(f"{base_url}/posts", json={"text": text}, headers=author,
                            timeout=HUNG_AFTER_S).status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, round(time.monotonic() - start, 2)


def timed_health(base_url: str) -> tuple[int | str, dict, float]:
    """GET /healthz/details: the checks run now (the public /healthz may answer from a
    result up to HEALTH_CACHE_S old)."""
    start = time.monotonic()
    try:
        response = httpx.get(f"{base_url}/healthz/details", timeout=HUNG_AFTER_S,
                             headers={"Authorization": f"Bearer {os.environ['OPS_TOKEN']}"})
        status, body = response.status_code, response.json()
    except httpx.HTTPError as exc:
        status, body = type(exc).__name__, {}
    return status, body, round(time.monotonic() - start, 2)


def check_refused_fast(answers, what: str) -> None:
    late = [a for a in answers if a[0] != 503 or a[1] >= ANSWER_WITHIN_S]
    if late:
        raise AssertionError(f"{what}: every POST must get 503 within {ANSWER_WITHIN_S} s; "
                       f"(status, seconds): {answers}")


def check_health_names_broker(health, what: str) -> None:
    status, body, elapsed = health
    if not (status == 503 and body.get("status") == "degraded"
            and str(body["checks"].get("broker")).startswith("down")
            and "broker" in body.get("detail", "") and elapsed < HEALTH_WITHIN_S):
        raise AssertionError(f"{what}: /healthz/details must answer 503 naming the broker "
                             f"within {HEALTH_WITHIN_S} s; got {status} {body} in {elapsed} s")


def assert_nothing_stored(system, tag: str) -> None:
    stored = {t for t in system.post_texts() if t.startswith(tag)}
    assert not stored, f"refused posts were stored: {sorted(stored)}"


def assert_recovers(system, author: dict[str, str]) -> None:
    """After the fault the same API process answers 202 and /healthz 200 again."""
    def accepts():
        return timed_post(system.base_url, author, "after the fault")[0] == 202
    wait_for(accepts, 20, "the API did not accept posts again after the broker came back", 0.5)
    assert timed_health(system.base_url)[0] == 200


@pytest.fixture
def running(broker, floodgate):
    """The API (no worker) on this pass's private broker, and the headers of an author to
    post as."""
    system = floodgate(broker.url)
    system.start_api()
    with system.http() as http:
        make_author(http, followers=1)
        assert http.post("/posts", json={"text": "warm"}).status_code == 202
        author = {"Authorization": http.headers["Authorization"]}
    return system, author


def test_row11_broker_stopped_each_post_gets_503_within_2s_and_health_names_broker(
        broker, running):
    system, author = running
    broker.stop()
    try:
        answers = [timed_post(system.base_url, author, f"row11-stopped #{i}") for i in range(5)]
        health = timed_health(system.base_url)
    finally:
        broker.start()
    assert_nothing_stored(system, "row11-stopped")
    assert_recovers(system, author)
    check_refused_fast(answers, f"{broker.kind} stopped")
    check_health_names_broker(health, f"{broker.kind} stopped")


def test_row11_broker_stopped_concurrent_posts_all_get_503_within_2s(broker, running):
    system, author = running
    broker.stop()
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(
                lambda i: timed_post(system.base_url, author, f"row11-burst #{i}"), range(12)))
    finally:
        broker.start()
    assert_nothing_stored(system, "row11-burst")
    assert_recovers(system, author)
    check_refused_fast(sorted(answers, key=lambda a: a[1]), f"{broker.kind} stopped, 12 at once")


@pytest.mark.parametrize("kind", [
    pytest.param("amqp", id="rabbitmq-memory-alarm", marks=[only_on("amqp")]),
    pytest.param("redis", id="redis-client-pause", marks=[only_on("redis")]),
])
def test_row11_broker_blocked_posts_get_503_within_2s_and_health_names_broker(
        kind, broker, running):
    system, author = running
    # long enough for the POST and /healthz below to both meet the block (Redis lifts it then)
    broker.block(seconds=HUNG_AFTER_S + HEALTH_WITHIN_S + 1)
    try:
        answers = [timed_post(system.base_url, author, "row11-blocked #0")]
        health = timed_health(system.base_url)
    finally:
        broker.unblock()
    # A 503 left nothing behind; a request the client gave up on may still finish later.
    assert_recovers(system, author)
    texts = system.post_texts()
    for i, (status, _) in enumerate(answers):
        if status == 503:
            assert f"row11-blocked #{i}" not in texts, "a refused post was stored"
    check_refused_fast(answers, f"{broker.kind} blocked")
    check_health_names_broker(health, f"{broker.kind} blocked")
