"""A clean stop: SIGTERM makes a worker finish its running task, hand back what it
had prefetched, and exit within a bound; nothing is lost and nothing runs twice.

Floodgate's default pool (tasks/runtime/pool.py: the solo pool with time limits) and,
to exercise the hand-back where that pool holds nothing extra, the threads pool;
``--prefetch-multiplier 4``. On RabbitMQ the broker requeues a closed connection's
unacked messages. On Redis kombu restores them when the worker closes its channel
(``Channel.close`` -> ``QoS.restore_unacked_once``) rather than after the visibility
timeout (600 s here). Both are checked, not assumed: the queue is back to N - 1
ready messages (and Redis's ``unacked`` hash empty) the moment the worker has
exited, before a second worker starts.

Bound: the worker is gone within FIRST_S + 10 s of SIGTERM.
"""
import os
import signal
import time
import uuid

import pytest
import redis
from kombu import Connection
from kombu.exceptions import ChannelError

from tests import support
from tests.integration import workers
from tests.integration.workers import counter, wait_until

pytestmark = pytest.mark.timeout(240)

TASKS = 6
PREFETCH = 4          # RabbitMQ: the worker holds 1 running + 3 prefetched
TASK_S = 2.0          # each task sleeps this long
FIRST_S = 3 * TASK_S  # the task running when SIGTERM comes
EXIT_BOUND_S = FIRST_S + 10  # SIGTERM -> process gone


def ready(queue: str = "default") -> int:
    """Messages waiting in the queue, not held by any worker (stock kombu, no guard)."""
    if support.broker_kind() == "redis":
        db = redis.Redis.from_url(support.broker_url("faults"))
        # kombu's priority sub-lists: "default", "default\x06\x163", ...
        return sum(db.llen(k) for k in db.scan_iter(match=f"{queue}*") if db.type(k) == b"list")
    with Connection(support.broker_url("faults"),
                    transport="kombu.transport.pyamqp:Transport") as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).message_count
        except ChannelError:
            return 0


def held_unacked() -> int | None:
    """On Redis, the messages delivered to a worker and not acked yet (kombu's 'unacked')."""
    if support.broker_kind() != "redis":
        return None
    return redis.Redis.from_url(support.broker_url("faults")).hlen("unacked")


@pytest.mark.parametrize("pool", [None, "threads"], ids=["floodgate-pool", "threads-pool"])
def test_sigterm_finishes_the_running_task_hands_back_the_prefetched_ones_and_loses_none(
        app, tmp_path, pool):
    keys = [uuid.uuid4().hex for _ in range(TASKS)]
    first = workers.start(tmp_path, "first", prefetch=PREFETCH, pool=pool)
    # What the worker holds while its first task runs. Floodgate's pool on Redis holds
    # only that task: the pool runs it inline, so nothing more is fetched until it ends
    # (a fetch may take a batch, so the rest are sent once it runs). RabbitMQ pushes
    # the whole window; the threads pool reads ahead on both brokers.
    held = 1 if pool is None and support.broker_kind() == "redis" else PREFETCH
    try:
        _stop_mid_batch(app, first, keys, held)
    finally:
        first.stop()  # SIGKILL only if it is still running

    second = workers.start(tmp_path, "second")
    try:
        wait_until(lambda: all(counter("effects", k) == 1 for k in keys),
                   TASKS * TASK_S + 30, "not every task ran after the second worker started")
        time.sleep(TASK_S + 1)  # a duplicate would show up now
        assert {k: counter("attempts", k) for k in keys} == {k: 1 for k in keys}
        assert {k: counter("effects", k) for k in keys} == {k: 1 for k in keys}
        assert ready() == 0
    finally:
        second.stop()


def _stop_mid_batch(app, first, keys, held: int) -> None:
    # The first task runs alone until it has started, and longer than the rest: a worker
    # that fetches in batches (Floodgate's Redis channel pops up to its free prefetch
    # slots in one call) could otherwise take several at its first fetch, and a test
    # process descheduled for a moment (a busy CI machine) still finds it running.
    app.send_task("tests.fault_tasks.slow_effect", args=(keys[0], FIRST_S), queue="default")
    wait_until(lambda: counter("attempts", keys[0]), 15, "no task started")
    for k in keys[1:]:
        app.send_task("tests.fault_tasks.slow_effect", args=(k, TASK_S), queue="default")
    running = [k for k in keys if counter("attempts", k)]
    assert running == [keys[0]], running
    seen: list[tuple[int, int | None]] = []  # (ready, unacked) as polled: said if it fails
    try:
        wait_until(lambda: seen.append((ready(), held_unacked())) or seen[-1][0] == TASKS - held,
                   10, f"the worker never held {held} messages")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; (ready, unacked) seen: {seen[-8:]}") from None
    time.sleep(0.5)
    assert ready() == TASKS - held  # and no more
    if support.broker_kind() == "redis":
        assert held_unacked() == held

    os.kill(first.pid, signal.SIGTERM)
    sent_at = time.monotonic()
    try:
        first.proc.wait(EXIT_BOUND_S)
    except Exception:  # noqa: BLE001 - report below with the log
        pass
    exited_after = time.monotonic() - sent_at
    log = first.output()
    assert exited_after < EXIT_BOUND_S, f"still running {EXIT_BOUND_S} s after SIGTERM:\n{log}"
    assert first.proc.returncode == 0, log
    print(f"\nworker exited {exited_after:.1f} s after SIGTERM (bound {EXIT_BOUND_S:g} s)")

    # The running task completed, once.
    (k_running,) = running
    assert counter("effects", k_running) == 1, log
    assert counter("attempts", k_running) == 1
    # Nothing else started on the stopping worker; the rest is back in the queue now,
    # not after a visibility timeout (600 s here) or a redelivery.
    assert sum(counter("attempts", k) for k in keys) == 1, log
    assert ready() == TASKS - 1, f"ready: {ready()}, unacked: {held_unacked()}\n{log}"
    if support.broker_kind() == "redis":
        assert held_unacked() == 0
