"""Redis: a worker takes a batch per round trip and acks in batches
(lib/src/celery_floodgate/transports/redis_consume.py), and still loses nothing.

Worker subprocesses on the 'faults' namespace, killed by their PID. (c) reads Redis'
INFO commandstats, so it needs a Redis of its own (FLOODGATE_TEST_REDIS).
"""
import os
import signal
import uuid

import pytest
import redis

from tests import support
from tests.integration import workers
from tests.integration.workers import counter, wait_until

pytestmark = pytest.mark.skipif(support.broker_kind() != "redis", reason="a Redis row")

#: Small enough to wait for: settings require the visibility timeout above the hard limit.
LIMITS = {"TASK_SOFT_TIME_LIMIT_S": 4, "TASK_TIME_LIMIT_S": 5, "REDIS_VISIBILITY_TIMEOUT_S": 10}
PREFETCH = 8


def broker() -> redis.Redis:
    return redis.Redis.from_url(support.broker_url("faults"))


def key() -> str:
    return uuid.uuid4().hex


def test_a_worker_killed_holding_a_batch_loses_nothing_and_each_effect_happens_once(
        app, tmp_path):
    keys = [key() for _ in range(PREFETCH + 2)]
    app.send_task("tests.fault_tasks.slow_effect", args=(keys[0], 3), queue="default")
    for k in keys[1:]:
        app.send_task("tests.fault_tasks.slow_effect", args=(k, 0.1), queue="default")
    first = workers.start(tmp_path, name="first", prefetch=PREFETCH, **LIMITS)
    wait_until(lambda: counter("attempts", keys[0]) == 1, 20, "the first task never started")
    # one round trip took the batch: the running task and 7 prefetched ones, all unacked
    assert broker().hlen("unacked") == PREFETCH and broker().zcard("unacked_index") == PREFETCH
    assert broker().llen("default") == 2
    first.kill(signal.SIGKILL)
    first.stop()
    second = workers.start(tmp_path, name="second", prefetch=PREFETCH, **LIMITS)
    try:
        wait_until(lambda: all(counter("effects", k) == 1 for k in keys), 45,
                   "not every message ran after the visibility timeout")
        wait_until(lambda: broker().hlen("unacked") == 0, 5, "acks were never sent")
        assert [counter("effects", k) for k in keys] == [1] * len(keys)
        assert counter("attempts", keys[0]) == 2  # killed mid-task, run again
        assert all(counter("attempts", k) == 1 for k in keys[1:])  # held, never started
    finally:
        second.stop()


def test_b_a_message_that_kills_the_whole_worker_every_time_is_failed_after_a_bound(
        app, tmp_path):
    poison, healthy = key(), [key() for _ in range(3)]
    result = app.send_task("tests.fault_tasks.kill_whole_worker", args=(poison,))
    for k in healthy:  # fetched in the poison's batch, redelivered with it each time
        app.send_task("tests.fault_tasks.slow_effect", args=(k, 0), queue="default")
    workers.supervise_until_failed(
        tmp_path, result, timeout_s=45, prefetch=PREFETCH, MAX_REDELIVERIES=1, **LIMITS,
        on_failure=lambda: wait_until(lambda: all(counter("effects", k) == 1 for k in healthy),
                                      20, "the healthy messages of the poison's batch never ran"))
    assert result.state == "FAILURE" and "TooManyDeliveries" in repr(result.result)
    assert counter("attempts", poison) == 2  # the first delivery and one redelivery
    assert [counter("effects", k) for k in healthy] == [1, 1, 1]


@pytest.mark.skipif(not os.environ.get("FLOODGATE_TEST_REDIS"),
                    reason="commandstats need a Redis of the test's own (FLOODGATE_TEST_REDIS)")
def test_c_at_a_backlog_a_task_costs_well_under_two_redis_calls(app, tmp_path):
    n = 400
    for _ in range(n):
        app.send_task("tests.fault_tasks.nothing", queue="default")
    server = broker()
    server.config_resetstat()
    worker = workers.start(tmp_path, name="counted", prefetch=PREFETCH)
    try:
        wait_until(lambda: server.llen("default") == 0 and server.hlen("unacked") == 0, 60,
                   "the backlog was not drained")
        stats = server.info("commandstats")
    finally:
        worker.stop()
    calls = {name.split("_", 1)[1]: s["calls"] for name, s in stats.items()}
    for ours in ("llen", "hlen", "info", "config"):  # this test's own
        calls.pop(ours, None)
    # commands a Lua script runs are counted too, but cost no round trip
    in_scripts = sum(calls.get(c, 0) for c in ("zadd", "hset", "zrem", "hdel", "rpop"))
    per_task = (sum(calls.values()) - in_scripts) / n
    assert per_task < 2, calls  # kombu's own channel: 3 round trips, 9 commands per task
    assert calls.get("brpop", 0) + calls.get("evalsha", 0) < n / 2, calls
