"""Fair admission on RabbitMQ (celery_floodgate.tenants): the broker bounds the total,
the meter each tenant's share; counts are repaired after a purge.

Run with FLOODGATE_TEST_BROKER=amqp; skipped on the other brokers.
"""
from __future__ import annotations

import threading

import pytest
from amqp.exceptions import NotFound

from celery_floodgate import QueueFull, guard_for
from celery_floodgate.fairness import submitting_as
from celery_floodgate.tenants import tenancy_of
from tests import support

pytestmark = pytest.mark.skipif(support.broker_kind() != "amqp",
                                reason="fair admission through the meter is RabbitMQ's and SQS's")
QUEUE = "fanout"  # limit 200 (tests/integration/conftest.py)


def ready(app) -> int:
    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(QUEUE, passive=True).message_count
        except NotFound:
            return 0


def submit(app, tenant: str, outcomes: list) -> None:
    with submitting_as(tenant, "default"):
        try:
            app.send_task("tests.fault_tasks.nothing", queue=QUEUE)
            outcomes.append((tenant, None))
        except QueueFull as exc:
            outcomes.append((tenant, exc))


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
