"""Bounded queues: exact limits under concurrency, honest refusals, computed Retry-After."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from config.queues import KEY_PREFIX
from celery_floodgate import QueueFull, guard_for
from celery_floodgate import guard as guard_module
from celery_floodgate.limits import RETRY_AFTER_UNMEASURED_S, Keys
from celery_floodgate.transports import broker_id
from tasks.demo.models import posts, timeline_entries
from tests import support
from tests.integration.helpers import count, make_following, post_as, read_job, timeline_of

LIMIT = 200  # QUEUE_LIMITS in conftest: fanout=200
FANOUT = "tasks.fanout.fanout_post"
KEYS = Keys(KEY_PREFIX)
drained_key, backlog_key, ticket_key, window_key = KEYS.drained, KEYS.backlog, KEYS.ticket, KEYS.window


def main_guard():
    from config import app

    return guard_for(app)


def meter_client():
    return main_guard().meter.client


def forget_rates() -> None:
    """Every guard in this process reads the meter afresh (each caches for a second)."""
    for guard in guard_module._registry.values():
        guard.forget_rates()


def depth(app, queue="fanout") -> int:
    from celery_floodgate.stats import depth as broker_depth

    found = broker_depth(app, queue)
    assert found is not None, "the broker did not answer"
    return found


def fill(app, n: int) -> None:
    for _ in range(n):
        app.send_task(FANOUT, args=("00000000-0000-0000-0000-000000000000", 0))


def set_drain_rate(queue: str, per_s: float, backlogged=lambda s: True) -> None:
    """Inject a measured drain rate, as workers would have recorded it."""
    import time

    client = meter_client()
    now = int(time.time())
    with client.pipeline() as pipe:
        for s in range(now - 70, now + 60):
            pipe.set(drained_key(queue, s), int(per_s(s) if callable(per_s) else per_s), ex=90)
            if backlogged(s):
                pipe.set(backlog_key(queue, s), 1, ex=90)
            else:
                pipe.delete(backlog_key(queue, s))
        pipe.delete(ticket_key(queue))
        pipe.execute()
    if support.broker_kind() == "redis":  # the Redis guard keeps its line beside the queue
        redis.Redis.from_url(support.broker_url("guard")).delete(ticket_key(queue))
    forget_rates()


def test_the_limit_is_exact_with_many_concurrent_submitters(idle_app):
    def submit(_):
        try:
            idle_app.send_task(FANOUT, args=("00000000-0000-0000-0000-000000000000", 0))
            return "accepted"
        except QueueFull as full:
            assert (full.queue, full.limit) == ("fanout", LIMIT)
            return "refused"

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(submit, range(3 * LIMIT)))
    assert outcomes.count("accepted") == LIMIT
    assert outcomes.count("refused") == 2 * LIMIT
    assert depth(idle_app) == LIMIT


def test_a_refusal_is_raised_by_delay_apply_async_and_canvas_alike(idle_app):
    from celery import group

    fill(idle_app, LIMIT)
    sig = idle_app.signature(FANOUT, args=("00000000-0000-0000-0000-000000000000", 0))
    for submit in (sig.delay, sig.apply_async, lambda: group([sig, sig]).apply_async()):
        with pytest.raises(QueueFull, match=r"queue 'fanout' is full \(200/200\); retry in \d+ s"):
            submit()
    assert depth(idle_app) == LIMIT


@pytest.mark.skipif(__import__("tests.support").support.broker_kind() != "redis",
                    reason="RabbitMQ's x-max-length counts ready messages only")
def test_messages_prefetched_by_workers_count_against_the_limit(idle_app):
    import time

    with idle_app.connection_for_write() as conn:
        key = window_key("fanout", broker_id(conn))
    client = meter_client()
    client.hset(key, "w1@host", f"30|{time.time()}")
    client.hset(key, "w2@host", f"20|{time.time()}")
    client.hset(key, "gone@host", f"500|{time.time() - 60}")  # stopped reporting: ignored
    forget_rates()
    try:
        fill(idle_app, LIMIT - 50)
        with pytest.raises(QueueFull, match=r"is full \(200/200\)"):
            fill(idle_app, 1)
        assert depth(idle_app) == LIMIT - 50
    finally:
        client.delete(key)
        forget_rates()


def test_a_flush_marks_backlogged_seconds_and_reports_the_window():
    import time

    from celery_floodgate.meter import DrainCounter

    held_by_workers = main_guard().meter.held_by_workers
    counter, depths = DrainCounter(main_guard().meter), {"fanout": 7, "quiet-test": 0}
    counter.watch(["fanout", "quiet-test"], depth=depths.get, worker="w@test",
                  broker="test-broker", window=8)
    counter.add("fanout", 3)
    counter.flush()
    now, client = int(time.time()), meter_client()
    try:
        seconds = (now - 1, now)  # the flush's second
        assert any(client.get(backlog_key("fanout", s)) == b"1" for s in seconds)  # depth 7
        assert not any(client.get(backlog_key("quiet-test", s)) for s in seconds)  # empty
        assert held_by_workers("fanout", "test-broker") == 8
    finally:
        counter._queues, counter._window = (), None  # its flush thread reports nothing more
        client.delete(window_key("fanout", "test-broker"), window_key("quiet-test", "test-broker"))


def test_a_live_worker_reports_its_prefetch_window(celery_session_worker, celery_session_app):
    import time

    time.sleep(1.5)  # one flush
    with celery_session_app.connection_for_write() as conn:
        assert main_guard().meter.held_by_workers("fanout", broker_id(conn)) >= 1


def test_a_refusal_keeps_the_pooled_connection(idle_app):
    """Refusing a message must not cost a reconnect (kombu replaces it on any error)."""
    def pooled_connection():
        with idle_app.producer_pool.acquire(block=True) as producer:
            return producer.connection.connection

    fill(idle_app, LIMIT)
    before = pooled_connection()
    for _ in range(5):
        with pytest.raises(QueueFull):
            fill(idle_app, 1)
    assert pooled_connection() is before


def test_retry_after_comes_from_the_drain_rate_and_halves_when_it_doubles(idle_app):
    fill(idle_app, LIMIT)

    import time

    def last_retry_after(refusals: int) -> tuple[int, float]:
        """The last refused caller's hint, and how long the refusals took."""
        start = time.monotonic()
        for _ in range(refusals):
            with pytest.raises(QueueFull) as info:
                fill(idle_app, 1)
        return info.value.retry_after_s, time.monotonic() - start

    # The 100th refused caller's slot is 100 / rate after the first refusal's.
    set_drain_rate("fanout", 10)
    slow, took = last_retry_after(100)
    assert 10 - took - 0.5 <= slow <= 10 + 1, (slow, took)
    set_drain_rate("fanout", 20)  # twice as fast: come back twice as soon
    fast, took = last_retry_after(100)
    assert 5 - took - 0.5 <= fast <= 5 + 1, (fast, took)
    assert fast < slow


def test_quiet_seconds_do_not_count_as_slow_draining(idle_app):
    """After light traffic the rate is what workers drained while the queue had a backlog."""
    import time

    drain_rate = main_guard().meter.drain_rate

    burst_at = int(time.time()) - 20  # a 6 s burst drained at 90/s, 1/s before and since
    in_burst = lambda s: burst_at <= s < burst_at + 6  # noqa: E731
    set_drain_rate("fanout", lambda s: 90 if in_burst(s) else 1, backlogged=in_burst)
    assert drain_rate("fanout") == 90
    fill(idle_app, LIMIT)
    with pytest.raises(QueueFull) as info:
        fill(idle_app, 1)
    assert info.value.retry_after_s <= 2  # 1/90 s, rounded up: not the 60 s of a 1/s reading

    set_drain_rate("fanout", 1, backlogged=lambda s: False)  # no backlog: demand, not capacity
    assert drain_rate("fanout") is None
    forget_rates()
    with pytest.raises(QueueFull) as info:
        fill(idle_app, 1)
    assert info.value.retry_after_s == RETRY_AFTER_UNMEASURED_S  # not 60 s from 1/s


def test_a_full_queue_answers_503_with_retry_after_and_writes_nothing(api, idle_app, monkeypatch,
                                                                      submit_path):
    import tasks.demo.submit

    author, fans = make_following(api, followers=2)
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)  # the API's broker now has no consumer
    fill(idle_app, LIMIT)
    before = count(posts), count(timeline_entries)

    response = post_as(api, author, "refused")

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["queue"] == "fanout" and "is full" in response.json()["detail"]
    assert (count(posts), count(timeline_entries)) == before
    assert timeline_of(api, author) == []
    assert depth(idle_app) == LIMIT


def test_concurrent_posts_at_the_limit_are_admitted_exactly_to_it(api, idle_app, monkeypatch,
                                                                  submit_path):
    """Thirty posts at once with room for five: five 202s, each stored; the rest 503s that
    wrote nothing; the queue exactly at its limit."""
    import tasks.demo.submit

    author, _ = make_following(api, followers=1)
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)
    fill(idle_app, LIMIT - 5)
    before = count(posts)

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda i: post_as(api, author, f"race {i}"), range(30)))

    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 5 + [503] * 25, codes
    assert count(posts) == before + 5
    assert {p["post_id"] for p in timeline_of(api, author)} == {
        a.json()["post_id"] for a in answers if a.status_code == 202}
    assert depth(idle_app) == LIMIT


def test_an_accepted_post_survives_a_broker_that_loses_its_message(api, idle_app, monkeypatch):
    import tasks.demo.submit
    from scheduler.tasks import republish_stale_jobs
    from sqlalchemy import update
    from tasks.demo.db import engine
    from tasks.demo.models import jobs

    author, fans = make_following(api, followers=3)
    with monkeypatch.context() as patch:
        patch.setattr(tasks.demo.submit, "app", idle_app)
        body = post_as(api, author, "survives").json()
    with idle_app.connection_for_write() as conn:  # the broker loses the message
        conn.default_channel.queue_purge("fanout")
    with engine().begin() as conn:  # ... and the sweep's patience runs out
        conn.execute(update(jobs).where(jobs.c.id == body["job_id"]).values(updated_at=0))

    assert republish_stale_jobs.delay().get(timeout=30) >= 1

    from tests.integration.helpers import wait_for

    wait_for(lambda: read_job(api, author, body["status_url"])["state"] == "succeeded")
    for fan in fans:
        assert [p["post_id"] for p in timeline_of(api, fan)] == [body["post_id"]]


def test_the_meter_records_what_workers_drain(api):
    author, _ = make_following(api, followers=0)
    client: redis.Redis = meter_client()
    import time

    for _ in range(5):
        post_as(api, author, "drain")
    time.sleep(2.5)  # one flush interval and a bit
    now = int(time.time())
    drained = sum(int(v or 0) for v in client.mget([drained_key("fanout", s) for s in range(now - 5, now + 1)]))
    assert drained >= 5


def test_the_backoff_helper_honours_retry_after_within_its_bounds(api, idle_app, monkeypatch):
    import time

    import tasks.demo.submit
    from celery_floodgate.client import post_with_backoff

    author, _ = make_following(api, followers=0)
    monkeypatch.setattr(tasks.demo.submit, "app", idle_app)
    fill(idle_app, LIMIT)
    set_drain_rate("fanout", 2)  # refusals 1/2 s apart in the waiting line
    waits, hints = [], []

    class Recording:
        def post(self, url, json):
            response = api.post(url, json=json, headers=author.headers)
            hints.append(int(response.headers.get("Retry-After", 0)))
            return response

    start = time.monotonic()
    response = post_with_backoff(Recording(), "/posts", {"text": "patient"},
                                 max_attempts=3, max_total_s=30, hint_jitter=0.2,
                                 sleep=lambda s: (waits.append(s), time.sleep(min(s, 0.01))))
    assert response.status_code == 503  # still full after the bounded attempts
    assert len(hints) == 3 and len(waits) == 2 and min(hints) >= 1
    for wait, hint in zip(waits, hints):
        assert hint <= wait <= 1.2 * hint + 1e-9  # never sooner than asked, jitter bounded
    assert time.monotonic() - start < 10


@pytest.mark.skipif(__import__("tests.support").support.broker_kind() != "amqp",
                    reason="queue versions are RabbitMQ's")
def test_rabbitmq_holds_the_queues_as_classic_version_2(idle_app):
    """What the broker itself reports for the queues install() declared."""
    import subprocess

    vhost = support.NAMESPACES["guard"][1]
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "-p", vhost, "list_queues",
                          "name", "arguments"], capture_output=True, text=True, check=True).stdout
    fanout = next(line for line in out.splitlines() if line.split("\t")[0] == "fanout")
    assert '{"x-queue-version",2}' in fanout.replace(" ", "")
    assert '{"x-overflow","reject-publish"}' in fanout.replace(" ", "")


@pytest.mark.skipif(__import__("tests.support").support.broker_kind() != "amqp",
                    reason="quorum queues are RabbitMQ's")
def test_quorum_queues_refuse_honestly_but_may_overshoot_by_a_message():
    """Measured here: quorum queues admit limit+1 with one publisher (limit+2..3 with 24),
    unlike classic queues, which are exact. Nothing accepted is ever dropped."""
    from celery import Celery

    from config.queues import as_install_limits, parse_queue_limits
    from config.settings import get_settings
    from celery_floodgate import install

    support.reset_namespace("quorum")  # a vhost of its own: quorum is not our default
    idle_app = Celery("floodgate-quorum", set_as_current=False)
    idle_app.config_from_object("config.celeryconfig")
    idle_app.conf.broker_url = support.broker_url("quorum")
    limits = as_install_limits(parse_queue_limits(get_settings().queue_limits))
    install(idle_app, limits, key_prefix=KEY_PREFIX, rabbitmq_queue_type="quorum")
    fanout = next(q for q in idle_app.conf.task_queues if q.name == "fanout")
    assert fanout.queue_arguments["x-queue-type"] == "quorum"
    with idle_app.connection_for_write() as conn:
        fanout.bind(conn.default_channel).declare()
    outcomes = []
    for _ in range(LIMIT + 5):
        try:
            fill(idle_app, 1)
            outcomes.append("accepted")
        except QueueFull:
            outcomes.append("refused")
    accepted = outcomes.count("accepted")
    assert LIMIT <= accepted <= LIMIT + 1 and outcomes[-4:] == ["refused"] * 4
    assert depth(idle_app) == accepted  # what was accepted is all there: no drop-head
