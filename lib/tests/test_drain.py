"""With a real worker (the plain project's, as a subprocess): what is admitted runs exactly
once, a drained queue admits again, and the drain rate the workers measure sets Retry-After
and, for a wait limit, the queue's length bound. Runs are recorded in the suite's Redis by
the project's ``record`` task, so every id that ran is known."""
from __future__ import annotations

import ast
import time
import uuid
from collections import Counter

import pytest
import redis

from celery_floodgate import QueueFull, submit_many
from celery_floodgate.guard import wait_bound
from celery_floodgate.limits import WAIT_LIMIT_BOOTSTRAP_LENGTH
from celery_floodgate.stats import depth
from conftest import broker_kind, meter_url, wait_for

LIMIT = 20


def ran(key: str) -> Counter[str]:
    """How many times each value recorded under ``key`` ran."""
    values = redis.Redis.from_url(meter_url()).lrange(key, 0, -1)
    return Counter(ast.literal_eval(v.decode()) for v in values)


def record(project, key: str) -> tuple[str, bool]:
    """Submit one ``record`` to the bounded queue; its id, and whether it was admitted."""
    task_id = uuid.uuid4().hex
    try:
        project.record.apply_async((key, task_id), task_id=task_id, queue="bounded")
        return task_id, True
    except QueueFull:
        return task_id, False


def stop(worker, guard) -> None:  # type: ignore[no-untyped-def]
    """Kill the worker; it holds nothing prefetched any more (its report would count for
    another 3 s on Redis)."""
    worker.kill()
    worker.wait(timeout=30)
    client = guard.meter.client
    for held in client.scan_iter(guard.meter.keys.window("bounded", "*")):
        client.delete(held)


def test_a_drained_queue_admits_again_and_each_admitted_job_runs_exactly_once(
        project, start_worker) -> None:
    key = f"ran-{uuid.uuid4().hex}"
    first = [record(project, key) for _ in range(LIMIT + 5)]
    admitted = [task_id for task_id, ok in first if ok]
    refused = [task_id for task_id, ok in first if not ok]
    assert len(admitted) == LIMIT and len(refused) == 5

    start_worker()
    wait_for(lambda: sum(ran(key).values()) >= LIMIT, timeout_s=60)
    wait_for(lambda: depth(project.app, "bounded") == 0, timeout_s=30)
    later = [record(project, key) for _ in range(10)]
    assert all(ok for _, ok in later)  # room again: every one admitted
    admitted += [task_id for task_id, _ in later]

    wait_for(lambda: sum(ran(key).values()) >= len(admitted), timeout_s=60)
    counts = ran(key)
    assert set(counts) == set(admitted)  # no refused job ran
    assert set(counts.values()) == {1}


def test_everything_a_batch_admits_runs_exactly_once_and_nothing_it_refused(
        project, start_worker) -> None:
    key = f"batch-{uuid.uuid4().hex}"
    ids = [uuid.uuid4().hex for _ in range(LIMIT + 6)]
    result = submit_many(project.app, "tasks.record", [(key, i) for i in ids], task_ids=ids,
                         queue="bounded")
    assert result.accepted == ids[:LIMIT]
    assert [i for i, _ in result.refused] == list(range(LIMIT, LIMIT + 6))

    start_worker()
    wait_for(lambda: sum(ran(key).values()) >= LIMIT, timeout_s=60)
    wait_for(lambda: depth(project.app, "bounded") == 0, timeout_s=30)
    counts = ran(key)
    assert set(counts) == set(result.accepted) and set(counts.values()) == {1}


TASK_S, CONCURRENCY = 0.5, 2  # the worker drains at most 4 a second


def keep_full(project, seconds: float) -> float:
    """Keep the bounded queue full for ``seconds`` while a worker drains it; the rate it
    drained at, counted by the submissions the queue took back in."""
    wait_for(lambda: refused_once(project), timeout_s=30, interval_s=0.02)
    start, taken = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        try:
            project.slow.delay(TASK_S)
            taken += 1
        except QueueFull:
            time.sleep(0.05)
    return taken / elapsed


def refused_once(project) -> bool:
    try:
        project.slow.delay(TASK_S)
        return False
    except QueueFull:
        return True


def test_retry_after_follows_the_drain_rate_the_worker_measured(project, start_worker) -> None:
    guard = project.guard
    wait_for(lambda: refused_once(project), timeout_s=30, interval_s=0.01)
    worker = start_worker(concurrency=CONCURRENCY)
    wait_for(lambda: guard.meter.drain_rate("bounded"), timeout_s=60)  # it is draining
    observed = keep_full(project, seconds=4)
    stop(worker, guard)  # the rate stays what it was measured to be
    guard.forget_rates()  # read afresh: the stopped worker holds nothing
    wait_for(lambda: refused_once(project), timeout_s=30)  # full again, and stays full
    guard.meter.client.delete(guard.meter.keys.ticket("bounded"))  # a fresh waiting line
    guard.forget_rates()
    rate = guard.drain_rate("bounded")
    assert 0.5 <= observed <= CONCURRENCY / TASK_S * 1.25, observed
    assert rate <= CONCURRENCY / TASK_S * 1.5 and observed / 3 <= rate <= observed * 3, (
        rate, observed)

    refusals = 12
    told = []
    for _ in range(refusals):
        with pytest.raises(QueueFull) as refused:
            project.slow.delay(TASK_S)
        told.append(refused.value.retry_after_s)
    # the k-th refused caller's slot is about k / rate away, no further than the queue's
    # turnover (LIMIT / rate); whole seconds, rounded up
    expected_last_s = min(refusals, LIMIT) / rate
    assert told == sorted(told), told
    assert expected_last_s - 1 <= told[-1] <= expected_last_s + 2, (told, rate)
    assert told[0] <= 1 + 1 / rate


@pytest.mark.skipif(broker_kind() != "redis",
                    reason="wait limits need the Redis broker (RabbitMQ enforces a length)")
def test_a_wait_limit_bounds_the_queue_by_what_the_worker_drains_in_that_time(
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, start_worker) -> None:
    monkeypatch.setenv("LIB_TEST_LIMIT", "2s")
    project = request.getfixturevalue("project")
    guard = project.guard

    # No rate measured yet: the bootstrap length.
    admitted = 0
    with pytest.raises(QueueFull) as refused:
        for _ in range(WAIT_LIMIT_BOOTSTRAP_LENGTH + 1):
            project.slow.delay(0.1)
            admitted += 1
    assert admitted == WAIT_LIMIT_BOOTSTRAP_LENGTH == refused.value.limit

    worker = start_worker(concurrency=2)  # at most 20 a second
    wait_for(lambda: guard.meter.drain_rate("bounded"), timeout_s=30)
    wait_for(lambda: (depth(project.app, "bounded") or 0) < 60, timeout_s=30)
    stop(worker, guard)
    killed_at = int(time.time())
    wait_for(lambda: time.time() >= killed_at + 2, timeout_s=5)  # its last second is counted
    with project.app.connection_for_write() as conn:
        conn.default_channel.queue_purge("bounded")
    guard.forget_rates()

    rate = guard.drain_rate("bounded")
    bound = wait_bound(2, rate)
    assert rate is not None and 1 <= rate <= 30, rate
    assert bound < WAIT_LIMIT_BOOTSTRAP_LENGTH
    admitted = 0
    with pytest.raises(QueueFull) as refused:
        for _ in range(WAIT_LIMIT_BOOTSTRAP_LENGTH + 1):
            project.slow.delay(0.1)
            admitted += 1
    assert admitted == bound == refused.value.limit
    assert depth(project.app, "bounded") == bound
