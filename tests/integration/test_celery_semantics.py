"""Celery's own semantics survive the guard, Floodgate's pool and FloodgateTask (issue 9, item 7).

Each test runs a real worker subprocess (``celery -A config worker``, Floodgate's default
pool, the queue's own prefetch unless said otherwise) on the 'faults' namespace, and
publishes from an app built as config.celery_app builds Floodgate's (FloodgateTask as
its task class, install() applied), on both brokers (FLOODGATE_TEST_BROKER).
"""
import time
import uuid

import pytest
from celery import Celery, chord

from celery_floodgate import QueueFull
from tests import support
from tests.integration import workers
from tests.integration.workers import counter, wait_until

REDIS_RESULTS = support.results_url()


@pytest.fixture
def app():
    """Floodgate's app as config.celery_app makes it, publishing to the 'faults' namespace."""
    from config.celery_app import bound_queues

    support.reset_namespace("faults")
    app = Celery("floodgate-semantics", set_as_current=False,
                 task_cls="tasks.runtime.base:FloodgateTask")
    app.config_from_object("config.celeryconfig")
    app.conf.broker_url = support.broker_url("faults")
    bound_queues(app)  # install(): its Redis result backend gets rerunnable chords
    yield app
    app.close()


def key() -> str:
    return uuid.uuid4().hex


def runs(k: str) -> list[str]:
    return [r.decode() for r in workers.store().lrange(f"fgtest:runs:{k}", 0, -1)]


def sig(app, name: str, *args, **options):
    return app.signature(f"tests.fault_tasks.{name}", args=args, **options)


def wait_runs(k: str, n: int, timeout_s: float = 10) -> list[str]:
    wait_until(lambda: len(runs(k)) >= n, timeout_s, f"{k} did not run {n} times")
    return runs(k)


# (a) ---------------------------------------------------------------------------------


def test_a_frozen_chord_applied_twice_runs_its_body_twice(app, tmp_path):
    """Celery 5.7's Redis result backend marks a finished chord 'done' and forgets the
    mark for a new run only just before the last header task is published; a fast worker
    ran the first header task of the second run before that, its result was dropped, and
    the body never ran again (9 rounds in 20 on RabbitMQ). celery_floodgate.results forgets
    the mark before any header task is published. Several rounds: it was a race."""
    worker = workers.start(tmp_path, prefetch=None)
    try:
        for _ in range(5):
            k = key()
            c = chord([sig(app, "record", k + "-header", i) for i in (1, 2)],
                      sig(app, "collect", k))
            c.freeze()
            first = c.apply_async()
            assert first.get(timeout=10) == [1, 2]
            second = c.apply_async()
            assert second.id == first.id  # the same frozen body
            body_runs = wait_runs(k, 2)
            assert body_runs == [f"{first.id}:[1, 2]"] * 2
            assert len(runs(k + "-header")) == 4
    finally:
        worker.stop()


# (b) ---------------------------------------------------------------------------------


def test_a_signature_reapplied_under_the_same_id_runs_again_and_is_no_redelivery(app, tmp_path):
    """A fresh publish under a used id is a new run, however often: FloodgateTask's
    redelivery bound (MAX_REDELIVERIES=1 here) counts only messages the broker redelivered."""
    worker = workers.start(tmp_path, prefetch=None, MAX_REDELIVERIES=1)
    try:
        k, task_id = key(), str(uuid.uuid4())
        for n in range(1, 5):
            result = sig(app, "record", k, n).apply_async(task_id=task_id)
            wait_runs(k, n)  # not result.get(): the id's stored result is the first run's
        assert runs(k) == [f"{task_id}:{n}" for n in range(1, 5)]
        assert result.state == "SUCCESS"
        assert not workers.store().exists(f"floodgate:redeliveries:{task_id}")
    finally:
        worker.stop()


def test_a_redelivered_message_under_a_reused_id_is_still_bounded(app, tmp_path):
    """FAULTS row 3 with an id that already ran twice from fresh publishes: those did not
    count, and the message that kills its worker is failed after MAX_REDELIVERIES=1
    redelivery, as before. On Redis the test does at once what kombu does when the
    visibility timeout has passed (restore the dead worker's unacked message, flagged
    redelivered), rather than wait for it (row 2 waits)."""
    limits = {"MAX_REDELIVERIES": 1}
    task_id, k, poison = str(uuid.uuid4()), key(), key()
    worker = workers.start(tmp_path, name="w0", **limits)
    try:
        for n in (1, 2):
            sig(app, "record", k, n).apply_async(task_id=task_id)
            wait_runs(k, n)
        workers.store().delete(f"celery-task-meta-{task_id}")  # so FAILURE below is this run's
    finally:
        worker.stop()
    result = sig(app, "kill_whole_worker", poison).apply_async(task_id=task_id)
    workers.supervise_until_failed(tmp_path, result, between=restore_unacked_now, **limits)
    assert result.state == "FAILURE" and "TooManyDeliveries" in repr(result.result)
    assert counter("attempts", poison) == 2  # the first delivery and one redelivery


def restore_unacked_now() -> None:
    """Redis: what kombu does once the visibility timeout has passed. RabbitMQ requeues
    a dead connection's unacked messages by itself."""
    if support.broker_kind() != "redis":
        return
    from kombu import Connection

    with Connection(support.broker_url("faults"), transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(interval=1)


# (c) ---------------------------------------------------------------------------------


def test_retry_with_a_countdown_reruns_the_task_through_the_guard_until_it_succeeds(
        app, tmp_path):
    worker = workers.start(tmp_path, prefetch=None)
    try:
        k = key()
        result = sig(app, "retry_then_succeed", k, 2, 0.3).apply_async()
        assert result.get(timeout=15) == 3
        assert runs(k) == [f"{result.id}:{n}" for n in range(3)]  # same id, retries 0, 1, 2
        assert result.state == "SUCCESS"
    finally:
        worker.stop()


def test_a_retry_refused_by_a_full_queue_fails_the_task_with_queue_full(app, tmp_path):
    """Decided: the retry is a publish like any other and meets its queue's limit. Celery
    would turn the refusal into Reject(requeue=False): the message dropped and the result
    PENDING for ever, lost without a word. FloodgateTask fails the task instead, with the
    QueueFull (and its retry_after_s) as its error: visible to the caller, its error
    callbacks and on_failure run, the message is acked, nothing loops on the full queue."""
    full = "aggregation"  # no worker consumes it here; its limit is 50 (conftest)
    for _ in range(100):
        try:
            sig(app, "record", "filler", 0).apply_async(queue=full)
        except QueueFull:
            break
    else:
        pytest.fail(f"{full!r} never filled up")
    worker = workers.start(tmp_path, prefetch=None)
    try:
        k = key()
        result = sig(app, "retry_into", k, full).apply_async()
        wait_until(lambda: result.state == "FAILURE", 15, f"state stayed {result.state}")
        assert isinstance(result.result, QueueFull) and result.result.queue == full
        assert result.result.retry_after_s >= 1
        assert runs(k) == [f"{result.id}:0"]  # ran once, the retry never enqueued
        healthy = key()
        assert sig(app, "record", healthy, 1).apply_async().get(timeout=10) == 1
    finally:
        worker.stop()


# (d) ---------------------------------------------------------------------------------


def test_revoking_a_scheduled_task_keeps_it_from_running_on_floodgates_pool(app, tmp_path):
    """A task the worker holds for its countdown is dropped when revoked. (Revoking a task
    queued right behind a running one is not reliable on Floodgate's pool: the worker may
    have fetched it already and runs it before its loop reads the revoke; docs/app/workers.md.)"""
    worker = workers.start(tmp_path, prefetch=None)
    try:
        k = key()
        scheduled = sig(app, "record", k, 1).apply_async(countdown=3)
        time.sleep(1)  # the worker holds it, waiting for its countdown
        app.control.revoke(scheduled.id)
        wait_until(lambda: scheduled.state == "REVOKED", 10, f"state stayed {scheduled.state}")
        after = key()
        assert sig(app, "record", after, 1).apply_async().get(timeout=10) == 1
        assert runs(k) == []
    finally:
        worker.stop()


# (e) ---------------------------------------------------------------------------------


def test_a_message_past_its_expires_is_discarded_as_revoked(app, tmp_path):
    worker = workers.start(tmp_path, prefetch=None)
    try:
        busy, k = key(), key()
        blocker = sig(app, "slow_effect", busy, 2).apply_async()
        wait_until(lambda: counter("attempts", busy) == 1, 10, "the blocker never started")
        expiring = sig(app, "record", k, 1).apply_async(expires=0.5)
        fresh = sig(app, "record", k, 2).apply_async(expires=60)
        assert blocker.get(timeout=10) == busy
        assert fresh.get(timeout=10) == 2
        wait_until(lambda: expiring.state == "REVOKED", 10, f"state stayed {expiring.state}")
        assert runs(k) == [f"{fresh.id}:2"]
    finally:
        worker.stop()
