"""Admission on the real broker (FLOODGATE_TEST_BROKER), no worker: the plain project's
"bounded" queue (limit 20) admits exactly 20 however many submit at once, and what it
refuses leaves nothing behind."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import group, uuid

from celery_floodgate import QueueFull, queue_stats
from celery_floodgate.stats import depth
from conftest import take_queued_ids

LIMIT = 20
SUBMITTERS, EACH = 8, 15


def fill(project, n: int = LIMIT) -> list[str]:
    return [project.slow.delay(0).id for _ in range(n)]


def test_exactly_the_limit_is_admitted_under_concurrent_submitters(project) -> None:
    barrier = threading.Barrier(SUBMITTERS)
    deepest, stop = [0], threading.Event()

    def watch_depth() -> None:
        while not stop.is_set():
            deepest[0] = max(deepest[0], depth(project.app, "bounded") or 0)

    def submitter(_: int) -> tuple[list[str], list[tuple[str, QueueFull]]]:
        accepted, refused = [], []
        barrier.wait()
        for _ in range(EACH):
            task_id = uuid()
            try:
                project.slow.apply_async((0,), task_id=task_id)
                accepted.append(task_id)
            except QueueFull as full:
                refused.append((task_id, full))
        return accepted, refused

    watcher = threading.Thread(target=watch_depth)
    watcher.start()
    try:
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            outcomes = list(pool.map(submitter, range(SUBMITTERS)))
    finally:
        stop.set()
        watcher.join()
    accepted = [task_id for ids, _ in outcomes for task_id in ids]
    refused = [pair for _, pairs in outcomes for pair in pairs]

    assert len(accepted) == LIMIT
    assert len(refused) == SUBMITTERS * EACH - LIMIT
    for _, full in refused:
        assert (full.queue, full.limit) == ("bounded", LIMIT)
        assert full.depth >= LIMIT and full.retry_after_s >= 1
    assert deepest[0] <= LIMIT
    assert depth(project.app, "bounded") == LIMIT
    queued = take_queued_ids(project.app, "bounded")
    assert sorted(queued) == sorted(accepted)  # each admitted message once, and nothing else
    assert not {task_id for task_id, _ in refused} & set(queued)


def test_every_way_of_sending_is_refused_alike_by_a_full_queue(project) -> None:
    admitted = fill(project)
    sig = project.slow.s(0)
    ways = {
        "delay": lambda: project.slow.delay(0),
        "apply_async": lambda: project.slow.apply_async((0,), task_id="refused-apply-async"),
        "signature": sig.apply_async,
        "send_task": lambda: project.app.send_task("tasks.slow", (0,), task_id="refused-send"),
        "group": lambda: group([sig, sig]).apply_async(),
    }
    for name, send in ways.items():
        with pytest.raises(QueueFull, match=r"queue 'bounded' is full \(\d+/20\); retry in \d+ s"):
            send()
    assert queue_stats(project.app)["bounded"]["depth"] == LIMIT
    assert sorted(take_queued_ids(project.app, "bounded")) == sorted(admitted)


def test_a_full_queue_refuses_only_its_own_submissions(project) -> None:
    fill(project)
    with pytest.raises(QueueFull):
        project.slow.delay(0)
    other = project.add.apply_async((1, 2), queue="celery")  # "celery" has room
    assert other.id
    assert depth(project.app, "celery") == 1 and depth(project.app, "bounded") == LIMIT


def test_taking_one_message_off_makes_room_for_exactly_one(project) -> None:
    fill(project)
    with project.app.connection_for_write() as conn:
        assert project.app.amqp.queues["bounded"].bind(conn.default_channel).get(no_ack=True)
    assert project.slow.delay(0).id
    with pytest.raises(QueueFull):
        project.slow.delay(0)
    assert depth(project.app, "bounded") == LIMIT


def test_a_refusal_keeps_the_pooled_connection(project) -> None:
    """A refusal is not a connection error: kombu would otherwise replace the connection."""
    def pooled_connection() -> object:
        with project.app.producer_pool.acquire(block=True) as producer:
            return producer.connection.connection

    fill(project)
    before = pooled_connection()
    for _ in range(5):
        with pytest.raises(QueueFull):
            project.slow.delay(0)
    assert pooled_connection() is before


def test_queue_stats_report_depth_and_limit_of_each_bounded_queue(project) -> None:
    fill(project, 7)
    stats = queue_stats(project.app)
    assert set(stats) == {"bounded", "celery"}
    assert (stats["bounded"]["depth"], stats["bounded"]["limit"]) == (7, LIMIT)
    assert stats["celery"]["limit"] == 1000
    assert stats["bounded"]["drain_rate"] is None  # no worker has drained anything yet
