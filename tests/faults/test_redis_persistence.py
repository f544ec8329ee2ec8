"""FAULTS.md row 6: ``kill -9`` of the Redis broker under load; the outbox sweep recovers.

The private redis-server runs with the persistence the project documents
(docs/guarantees.md, docker-compose.yml, config/up.py): ``appendonly yes``, ``appendfsync
everysec``, ``maxmemory-policy noeviction``. Documented loss bound: about one
second of writes. A 202 commits the job row, so whatever the broker loses the
outbox sweep (scheduler.tasks.republish_stale_jobs) re-publishes from the
database; here it is sent through the broker with ``celery call``, as beat does,
after the lost jobs' ``updated_at`` is backdated past REPUBLISH_AFTER_S.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from tests.faults.brokers import Broker, PrivateRedis
from tests.faults.harness import (
    SUCCEEDED_LINE,
    make_author,
    requires_redis,
    wait_for,
)

pytestmark = requires_redis
FOLLOWERS = 1
# appendfsync everysec: "you can lose 1 second of data"; Redis may postpone the write of
# the AOF buffer by up to another second while a slow fsync is in flight.
LOSS_BOUND_S = 2.0
SWEEP = "scheduler.tasks.republish_stale_jobs"


def load_until_killed(system, broker: Broker, author: dict[str, str], tag: str, *,
                      before_s: float, min_answers: int = 0, after_s: float = 0.7,
                      max_requests: int = 10**6):
    """Post from 8 clients; ``kill -9`` the broker once the load has run ``before_s`` and
    got ``min_answers`` answers, keep posting ``after_s`` longer (``max_requests`` at most);
    ``author`` is the headers that post as the author.
    Returns (answers [(index, status, body, answered_at)], killed_at)."""
    stop, answers, lock, counter = threading.Event(), [], threading.Lock(), iter(range(10**6))

    def client():
        with httpx.Client(base_url=system.base_url, timeout=10, headers=author) as http:
            while not stop.is_set():
                with lock:
                    i = next(counter)
                if i >= max_requests:
                    return
                try:
                    r = http.post("/posts", json={"text": f"{tag} #{i}"})
                    status, body = r.status_code, r.json()
                except (httpx.HTTPError, ValueError) as exc:
                    status, body = None, repr(exc)
                with lock:
                    answers.append((i, status, body, time.time()))

    with ThreadPoolExecutor(8) as pool:
        clients = [pool.submit(client) for _ in range(8)]
        time.sleep(before_s)
        wait_for(lambda: len(answers) >= min_answers, 30, "the load never got going")
        killed_at = time.time()
        broker.kill9()
        time.sleep(after_s)
        stop.set()
    for done in clients:
        done.result()  # a client that broke is a test failure, not a silent gap
    return answers, killed_at


def queued_job_ids(server: PrivateRedis) -> set[str]:
    return {json.loads(m)["headers"]["id"] for m in server.queued_messages("fanout")}


def sweep(system, worker, lost: set[str]) -> None:
    """Backdate the jobs still queued past REPUBLISH_AFTER_S and send the sweep through the
    broker, as beat would; it must re-publish exactly those."""
    with system.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET updated_at = updated_at - 60 WHERE state = 'queued'"))
    system.call(SWEEP)
    sent = wait_for(lambda: [int(m["result"]) for m in SUCCEEDED_LINE.finditer(worker.output())
                             if m["task"] == SWEEP], 30, "the sweep did not run")
    assert sent == [len(lost)], f"the sweep re-published {sent}, {len(lost)} were lost"


def split(answers):
    accepted = {b["job_id"]: (b["post_id"], at) for _, s, b, at in answers if s == 202}
    refused = [i for i, s, _, _ in answers if s == 503]
    others = [(i, s, b) for i, s, b, _ in answers if s not in (202, 503)]
    return accepted, refused, others


def test_row6_kill9_of_redis_under_load_loses_at_most_a_second_and_the_sweep_recovers_it(
        private_redis, floodgate):
    system = floodgate(private_redis.url, queue_limits="fanout=100000,aggregation=100,default=5000")
    system.start_api()
    with system.http() as http:
        make_author(http, FOLLOWERS)
        author = {"Authorization": http.headers["Authorization"]}

    # The load runs well past the bound before the kill, so the bound is really tested.
    answers, killed_at = load_until_killed(system, private_redis, author, "row6",
                                           before_s=LOSS_BOUND_S + 1.5)
    accepted, refused, others = split(answers)
    assert not others, f"answers other than 202 or 503: {others[:5]}"
    assert refused, "the kill did not land in the middle of the load"
    assert len([j for j, (_, at) in accepted.items() if at < killed_at - LOSS_BOUND_S]) >= 20, \
        "too few posts were accepted before the loss window to test the bound"

    private_redis.start()  # same port, same directory: the AOF is replayed
    queued = queued_job_ids(private_redis.server)
    lost = set(accepted) - queued
    late = {j: round(killed_at - accepted[j][1], 3) for j in lost
            if accepted[j][1] < killed_at - LOSS_BOUND_S}
    assert not late, f"accepted more than {LOSS_BOUND_S} s before the kill, yet lost " \
                     f"(job: seconds before the kill): {late}"
    print(f"row6 aof: {len(accepted)} accepted, {len(refused)} refused, {len(lost)} lost, "
          f"{len(queued - set(accepted))} queued without a 202")

    worker = system.start_worker(concurrency=4)
    system.wait_jobs(set(accepted) - lost, timeout_s=60)
    still_queued = {j for j, s in system.job_states().items() if s == "queued"}
    assert still_queued == lost, "jobs left queued are not exactly the lost ones"
    sweep(system, worker, lost)

    system.wait_jobs(accepted, timeout_s=60)
    system.assert_effects_once({j: p for j, (p, _) in accepted.items()}, FOLLOWERS)
    texts = system.post_texts()
    assert not [i for i in refused if f"row6 #{i}" in texts], "a refused post was stored"


@pytest.fixture
def redis_without_aof(tmp_path):
    server = PrivateRedis(tmp_path, aof=False)
    try:
        server.start()
        yield Broker(server)
    finally:
        server.close()


def test_row6_redis_without_persistence_loses_every_queued_message_and_the_sweep_recovers_all(
        redis_without_aof, floodgate):
    """The bound when persistence is off (docs/guarantees.md: a restart loses every queued message):
    the sweep alone must bring every accepted job back, each taking effect once."""
    broker = redis_without_aof
    system = floodgate(broker.url, queue_limits="fanout=100000,aggregation=100,default=5000")
    system.start_api()
    with system.http() as http:
        make_author(http, FOLLOWERS)
        author = {"Authorization": http.headers["Authorization"]}

    # at most 400 requests: one sweep re-publishes up to 500 jobs
    answers, _ = load_until_killed(system, broker, author, "row6-noaof", before_s=0.5,
                                   min_answers=60, max_requests=400)
    accepted, refused, others = split(answers)
    assert not others and accepted and refused, (len(accepted), len(refused), others[:5])

    broker.start()
    assert broker.depth("fanout") == 0, "without persistence the queue should come back empty"
    worker = system.start_worker(concurrency=4)
    sweep(system, worker, set(accepted))
    system.wait_jobs(accepted, timeout_s=60)
    system.assert_effects_once({j: p for j, (p, _) in accepted.items()}, FOLLOWERS)
