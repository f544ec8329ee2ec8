"""A Celery app that is not Floodgate adopts back pressure with install() (tests/second_app.py):
its own queues, no database, no Floodgate settings, on the broker of this pass."""
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from celery_floodgate import QueueFull
from celery_floodgate.stats import depth
from tests import processes, support
from tests.integration.helpers import wait_for

KEY_PREFIX = f"{support.PREFIX}-shop-test"


@pytest.fixture(scope="module")
def shop():
    support.reset_namespace("shop")
    meter = redis.Redis.from_url(support.results_url())
    for key in meter.scan_iter(f"{KEY_PREFIX}:*"):
        meter.delete(key)
    os.environ.update(SHOP_BROKER_URL=support.broker_url("shop"),
                      SHOP_METER_URL=support.results_url(), SHOP_KEY_PREFIX=KEY_PREFIX)
    import tests.second_app as shop

    yield shop
    with shop.app.connection_for_write() as conn:
        for queue in ("emails", "reports"):
            try:
                conn.default_channel.queue_delete(queue)
            except Exception:  # noqa: BLE001 - never declared on this broker
                pass


def empty(shop) -> None:
    with shop.app.connection_for_write() as conn:
        for queue in ("emails", "reports"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - not declared yet
                pass


def test_the_second_app_gets_exact_limits_under_concurrent_submitters(shop):
    empty(shop)

    def submit(i):
        try:
            shop.send_email.delay(f"user{i}@example.com")
            return "accepted"
        except QueueFull as full:
            assert (full.queue, full.limit) == ("emails", shop.EMAILS_LIMIT)
            assert full.retry_after_s >= 1
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(submit, range(4 * shop.EMAILS_LIMIT)))
    assert outcomes.count("accepted") == shop.EMAILS_LIMIT
    assert depth(shop.app, "emails") == shop.EMAILS_LIMIT


def test_other_apps_in_the_process_are_unaffected(shop):
    from config import app as floodgate
    from celery_floodgate import guard_for

    assert TRANSPORT_ALIASES["redis"] == "kombu.transport.redis:Transport"
    assert TRANSPORT_ALIASES["amqp"] == "kombu.transport.pyamqp:Transport"
    assert guard_for(floodgate) is not shop.guard
    assert set(guard_for(floodgate).limits) == {"fanout", "aggregation", "default"}
    assert set(shop.guard.limits) <= {"emails", "reports"}

    plain = Celery("plain", broker=support.broker_url("shop"), set_as_current=False)
    plain.conf.task_default_queue = "plain_unbounded"
    assert guard_for(plain) is None
    with plain.connection_for_write() as conn:
        conn.default_channel.queue_purge("plain_unbounded") if _exists(conn, "plain_unbounded") else None
    for _ in range(shop.EMAILS_LIMIT + 10):  # past any limit: nothing guards this app
        plain.send_task("plain.noop")
    assert depth(plain, "plain_unbounded") == shop.EMAILS_LIMIT + 10
    with plain.connection_for_write() as conn:
        conn.default_channel.queue_delete("plain_unbounded")


@pytest.mark.skipif(support.broker_kind() != "redis", reason="a wait limit needs the Redis broker")
def test_a_wait_limit_admits_a_bootstrap_length_until_a_rate_is_measured(shop):
    from celery_floodgate.limits import WAIT_LIMIT_BOOTSTRAP_LENGTH

    empty(shop)
    accepted = 0
    with pytest.raises(QueueFull) as full:
        for _ in range(WAIT_LIMIT_BOOTSTRAP_LENGTH + 1):
            shop.build_report.delay("daily")
            accepted += 1
    assert accepted == WAIT_LIMIT_BOOTSTRAP_LENGTH and full.value.queue == "reports"


def test_a_worker_of_its_own_drains_it_and_retry_after_follows_its_own_rate(shop, tmp_path):
    empty(shop)
    # Celery's CLI reads BROKER_URL and RESULT_BACKEND itself; this process has Floodgate's.
    env = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "RESULT_BACKEND")}
    env.update(PYTHONPATH=str(processes.ROOT))
    worker = processes.Part("shop-worker", [
        str(processes.BIN / "celery"), "-A", "tests.second_app", "worker", "-Q", "emails",
        "-P", "solo", "--prefetch-multiplier", "1", "-n", "shop@%h", "--loglevel=INFO",
    ], env, tmp_path)
    try:
        wait_for(lambda: "ready." in worker.output(), 30, "the shop worker never became ready")
        rate = backlogged_rate(shop, warm_s=5, timeout_s=40)
        with pytest.raises(QueueFull) as full:
            for _ in range(2 * shop.EMAILS_LIMIT):
                shop.send_email.delay("someone@example.com", 0.02)
        # The ticket is about one queue's turnover at this app's own rate, not a constant.
        assert 1 <= full.value.retry_after_s <= shop.EMAILS_LIMIT / rate + 2
        assert "Task shop.send_email[" in worker.output()  # its own worker ran them
    finally:
        worker.stop()
    # Floodgate's meter knows nothing of this app's queues: the keys are the shop's own.
    meter = redis.Redis.from_url(support.results_url())
    assert any(meter.scan_iter(f"{KEY_PREFIX}:drained:emails:*"))
    assert not any(meter.scan_iter("floodgate:drained:emails:*"))


def backlogged_rate(shop, warm_s: float, timeout_s: float) -> float:
    """Keep a backlog of 20 ms emails (at most ~50/s here) until the meter reports a rate
    in a plausible range. The rate believes a slow second at once (FAST_WINDOW_S), so a
    moment the shared machine stalls the worker is measured too: keep the backlog and
    ask again, up to ``timeout_s``."""
    start, rate = time.monotonic(), None
    next_look = start + warm_s
    while time.monotonic() < start + timeout_s:
        try:
            shop.send_email.delay("someone@example.com", 0.02)
        except QueueFull:
            time.sleep(0.05)
        if time.monotonic() >= next_look:
            shop.guard.forget_rates()
            rate = shop.guard.drain_rate("emails")
            if rate is not None and 5 <= rate <= 60:
                return rate
            next_look += 1
    raise AssertionError(f"after {timeout_s} s of backlog the meter's rate was {rate}, "
                         "not 5 to 60 emails/s")


def _exists(conn, queue: str) -> bool:
    try:
        conn.default_channel.queue_declare(queue, passive=True)
        return True
    except Exception:  # noqa: BLE001
        return False
