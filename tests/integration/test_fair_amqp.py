"""Fair admission on RabbitMQ (celery_floodgate.tenants): the broker bounds the total,
the meter each tenant's share. The counts follow the queue through concurrent
submitters, a real worker's drain, a worker killed holding a prefetched batch
(SIGKILL by its PID; RabbitMQ requeues what it held) and a purge.

Run with FLOODGATE_TEST_BROKER=amqp; skipped on the other brokers.
"""
from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter

import amqp
import pytest
from amqp.exceptions import NotFound

from celery_floodgate import QueueFull, guard_for
from celery_floodgate.fairness import TENANT_HEADER, submitting_as
from celery_floodgate.tenants import tenancy_of
from config.settings import get_settings
from tests import support
from tests.integration import workers
from tests.integration.workers import counter, wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(support.broker_kind() != "amqp",
                                 reason="fair admission through the meter is RabbitMQ's and SQS's")]
QUEUE = "fanout"  # limit 200 (tests/integration/conftest.py)
LIMITS = {"TASK_SOFT_TIME_LIMIT_S": 6, "TASK_TIME_LIMIT_S": 8}


@pytest.fixture(autouse=True)
def fair_admission(monkeypatch):
    """The integration suite turns fair admission off (support.api_env); these tests and
    the workers they start share queues fairly."""
    monkeypatch.setenv("FAIR_ADMISSION", "true")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def fair_app(fair_admission):
    """Floodgate's app on the 'faults' namespace, with an empty tenant hash for 'default'."""
    support.reset_namespace("faults")
    app = workers.faults_app()
    guard = app._floodgate_guard
    tenancy = tenancy_of(guard)
    assert tenancy is not None, "the app's fair admission is off"
    guard.meter.client.delete(tenancy.key("default"))  # the meter outlives the vhost
    yield app
    app.close()


def ready(app, queue: str = QUEUE) -> int:
    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).message_count
        except NotFound:
            return 0


def submit(app, tenant: str, outcomes: list) -> None:
    with submitting_as(tenant, "default"):
        try:
            app.send_task("tests.fault_tasks.nothing", queue=QUEUE)
            outcomes.append((tenant, None))
        except QueueFull as exc:
            outcomes.append((tenant, exc))


def send(app, tenant: str, seconds: float) -> str:
    k = uuid.uuid4().hex
    app.send_task("tests.fault_tasks.slow_effect", args=(k, seconds), queue="default",
                  headers={"tenant": tenant, "criticality": "critical"})
    return k


def queued_by_tenant(namespace: str, queue: str = "default") -> Counter:
    """The tenants of the messages ready in ``queue``, read from the broker (py-amqp, not
    the guarded channel): each is taken and published again, in order, as it was (headers,
    properties; not flagged redelivered). Only while nothing else consumes or publishes."""
    seen: Counter = Counter()
    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                           virtual_host=support.NAMESPACES[namespace][1])
    conn.connect()
    try:
        channel = conn.channel()
        channel.confirm_select()
        taken = []
        while (message := channel.basic_get(queue, no_ack=False)) is not None:
            taken.append(message)
        for message in taken:
            seen[(message.headers or {}).get(TENANT_HEADER)] += 1
            channel.basic_publish_confirm(amqp.Message(message.body, **message.properties),
                                          exchange="", routing_key=queue)
        if taken:
            channel.basic_ack(taken[-1].delivery_tag, multiple=True)
    finally:
        conn.close()
    return seen


def test_concurrent_tenants_never_exceed_the_limit_and_the_noisy_one_is_held_to_its_share(
        idle_app):
    guard = guard_for(idle_app)
    tenancy = tenancy_of(guard)
    assert tenancy is not None, "the app's fair admission is off"
    guard.meter.client.delete(tenancy.key(QUEUE))  # the meter outlives the vhost's reset
    outcomes: list = []
    for tenant in ("p1", "p2", "p3"):  # the polite tenants hold a message each
        submit(idle_app, tenant, outcomes)
    noisy = [threading.Thread(target=lambda: [submit(idle_app, "noisy", outcomes)
                                              for _ in range(60)]) for _ in range(4)]
    for thread in noisy:
        thread.start()
    for thread in noisy:
        thread.join()
    polite = [threading.Thread(target=lambda t=t: [submit(idle_app, t, outcomes)
                                                   for _ in range(19)])
              for t in ("p1", "p2", "p3")]
    for thread in polite:
        thread.start()
    for thread in polite:
        thread.join()
    assert ready(idle_app) <= 200
    held = tenancy.held(QUEUE)
    assert sum(held.values()) == ready(idle_app)  # every admission counted once
    refused_noisy = [e for t, e in outcomes if t == "noisy" and e is not None]
    assert refused_noisy and {e.reason for e in refused_noisy} <= {"share", "class"}
    polite_refused = [(t, e.reason, str(e)) for t, e in outcomes if t != "noisy" and e]
    assert not polite_refused, (held, polite_refused[:3])
    # below the watermark (100) anyone is admitted; above it, its share (200 // 4) refuses it
    assert held["noisy"] == 100 - 3
    assert queued_by_tenant("guard", QUEUE) == held  # the broker holds what was counted


def test_a_purge_is_reconciled_to_zero(idle_app):
    tenancy = tenancy_of(guard_for(idle_app))
    tenancy.guard.meter.client.delete(tenancy.key(QUEUE))
    outcomes: list = []
    for _ in range(30):
        submit(idle_app, "t1", outcomes)
    assert tenancy.held(QUEUE) == {"t1": 30}
    with idle_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)
    tenancy.quiet_s = 0.0  # no publish is on its way: compare now
    before = tenancy.snapshot(QUEUE)
    tenancy.reconcile(QUEUE, ready(idle_app), before)
    assert tenancy.held(QUEUE) == {}


def test_counts_are_exactly_zero_once_a_real_worker_drained_the_queue(fair_app, tmp_path):
    guard = fair_app._floodgate_guard
    keys = [send(fair_app, "tenant-a", 0) for _ in range(6)]
    keys += [send(fair_app, "tenant-b", 0) for _ in range(4)]
    assert guard.tenant_held("default") == queued_by_tenant("faults") == {
        "tenant-a": 6, "tenant-b": 4}

    worker = workers.start(tmp_path, "drainer", prefetch=4, pool="threads", **LIMITS)
    try:
        wait_until(lambda: all(counter("effects", k) == 1 for k in keys), 30,
                   "not every task ran")
        wait_until(lambda: guard.tenant_held("default") == {}, 5,
                   "places still counted after the drain")
        assert ready(fair_app, "default") == 0
    finally:
        worker.stop()
    # The receipts took every place back; the reconcile's reset of an empty queue had
    # nothing to remove (it would log the drift it repaired).
    assert "drifted" not in worker.log_path.read_text(errors="replace")


def test_counts_after_a_worker_killed_holding_a_prefetched_batch(fair_app, tmp_path):
    guard = fair_app._floodgate_guard
    a_keys = [send(fair_app, "tenant-a", 3) for _ in range(4)]
    b_keys = [send(fair_app, "tenant-b", 0) for _ in range(4)]
    assert guard.tenant_held("default") == {"tenant-a": 4, "tenant-b": 4}

    # Prefetch 4 and acks_late: the worker holds tenant-a's four (the oldest), unacked.
    first = workers.start(tmp_path, "first", prefetch=4, pool="threads", **LIMITS)
    wait_until(lambda: counter("attempts", a_keys[0]) == 1, 20, "no task started")
    wait_until(lambda: guard.tenant_held("default") == {"tenant-b": 4}, 10,
               "tenant-a's received messages still counted")
    first.kill(signal.SIGKILL)
    first.stop()

    # RabbitMQ requeues the four it held. They were taken back at their receipt, so
    # tenant-a is counted low by exactly what the dead worker held (its prefetch window):
    # the one error that lets a tenant past its share, until those messages are drained.
    wait_until(lambda: ready(fair_app, "default") == 8, 10, "the held batch was not requeued")
    held = guard.tenant_held("default")
    assert held == {"tenant-b": 4}
    truth = Counter({"tenant-a": 4, "tenant-b": 4})  # what was sent, none finished
    assert all(0 <= truth[t] - held.get(t, 0) <= 4 for t in truth)

    # The next worker reads the depth once a second (reconcile: a count below the depth
    # is kept) and drains: the redelivered four are not taken back a second time.
    second = workers.start(tmp_path, "second", **LIMITS)
    try:
        wait_until(lambda: all(counter("effects", k) == 1 for k in a_keys + b_keys), 60,
                   "not every task ran after the requeue")
        wait_until(lambda: ready(fair_app, "default") == 0, 10, "the queue was not emptied")
        wait_until(lambda: guard.tenant_held("default") == {}, 5, "places still counted")
    finally:
        second.stop()

    # Nothing of the killed batch is still counted: a fresh fill counts exactly.
    for _ in range(3):
        send(fair_app, "tenant-a", 0)
    send(fair_app, "tenant-b", 0)
    assert guard.tenant_held("default") == queued_by_tenant("faults") == {
        "tenant-a": 3, "tenant-b": 1}
