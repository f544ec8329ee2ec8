"""MeterTenancy (celery_floodgate.tenants) on a real Redis, under a private key prefix:
the share rule matches fairness.decide, reservations are atomic, and counts are taken
back and reconciled without ever going negative."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_floodgate.fairness import CLASSES, Fairness, decide
from celery_floodgate.guard import Guard
from celery_floodgate.limits import Keys, Limit
from celery_floodgate.meter import Meter
from celery_floodgate.tenants import MeterTenancy, tenancy_of

from conftest import meter_url

QUEUE = "bounded"
WEIGHTS = {"heavy": 2.0, "light": 0.5}


@pytest.fixture
def tenancy():
    prefix = f"test-tenants-{uuid.uuid4().hex[:8]}"
    guard = Guard({QUEUE: Limit(QUEUE, length=100)}, Meter(meter_url(), Keys(prefix)), "amqp",
                  fairness=Fairness(weights=WEIGHTS))
    found = tenancy_of(guard)
    assert found is not None
    found.quiet_s = 0.0
    found.guard_ref = guard  # type: ignore[attr-defined]  # keeps the guard alive
    yield found
    client = redis.Redis.from_url(meter_url())
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def fill(tenancy: MeterTenancy, counts: dict[str, int]) -> None:
    client = tenancy.guard.meter.client
    client.delete(tenancy.key(QUEUE))
    held = {f"t:{t}": n for t, n in counts.items() if n}
    if held:
        client.hset(tenancy.key(QUEUE), mapping=held)


holdings = st.dictionaries(st.sampled_from(["a", "b", "c", "heavy", "light"]),
                           st.integers(0, 60), max_size=5)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=holdings, tenant=st.sampled_from(["a", "heavy", "light", "new"]),
       criticality=st.sampled_from(CLASSES), bound=st.integers(1, 200))
def test_a_reservation_decides_as_fairness_decide_and_counts_only_what_it_admits(
        tenancy, counts, tenant, criticality, bound):
    fill(tenancy, counts)
    policy = tenancy.guard.fairness
    holders = {t for t, n in counts.items() if n > 0}
    active = sum(policy.weight(t) for t in holders | {tenant})
    expected = decide(policy, bound, sum(counts.values()), criticality, counts.get(tenant, 0),
                      policy.weight(tenant), active)
    got = tenancy.reserve(QUEUE, tenant, criticality, bound)
    assert (got.admit, got.reason, got.excess) == (expected.admit, expected.reason,
                                                   expected.excess)
    if expected.reason == "share" or (expected.admit and expected.share):
        assert got.share == expected.share
    assert tenancy.held(QUEUE).get(tenant, 0) == counts.get(tenant, 0) + int(expected.admit)


def test_concurrent_submitters_never_take_a_tenant_past_its_share(tenancy):
    fill(tenancy, {"other": 50, "c": 1})  # above the watermark: shares apply
    results: list[bool] = []

    def submit(tenant: str) -> None:
        for _ in range(30):
            results.append(tenancy.reserve(QUEUE, tenant, "default", 100).admit)

    threads = [threading.Thread(target=submit, args=(t,)) for t in ("a", "b") * 6]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = tenancy.held(QUEUE)
    share = 100 // 3  # a's or b's share is at most that of three tenants of weight 1
    assert held["a"] <= share and held["b"] <= share
    assert held["a"] + held["b"] == 90 - 51  # default work is refused from 90 % of 100
    assert sum(results) == 39


def test_a_batch_reserves_up_to_its_share_and_refuses_the_rest(tenancy):
    fill(tenancy, {"other": 50, "b": 1})
    got = tenancy.reserve(QUEUE, "a", "default", 100, n=40)
    assert (got.admit, got.reserved, got.reason, got.share) == (False, 33, "share", 33)


def test_received_messages_are_taken_back_within_a_flush_and_never_below_zero(tenancy):
    epoch = tenancy.reserve(QUEUE, "a", "default", 100).epoch
    tenancy.reserve(QUEUE, "a", "default", 100)
    for _ in range(3):  # one more than reserved (say, a message counted twice)
        tenancy.consumed(QUEUE, "a", epoch)
    assert tenancy.held(QUEUE) == {"a": 2}  # not yet: batched
    tenancy.flush()
    assert tenancy.held(QUEUE) == {}


def test_a_nacked_publish_gives_its_place_back(tenancy):
    got = tenancy.reserve(QUEUE, "a", "default", 100)
    tenancy.release(QUEUE, "a", got.epoch)
    assert tenancy.held(QUEUE) == {}


def test_an_empty_queue_resets_counts_and_ignores_late_take_backs_of_older_messages(tenancy):
    old = tenancy.reserve(QUEUE, "a", "default", 100, n=5).epoch
    tenancy.reconcile(QUEUE, 0, tenancy.snapshot(QUEUE))  # purged
    assert tenancy.held(QUEUE) == {}
    new = tenancy.reserve(QUEUE, "a", "default", 100, n=2).epoch
    assert new == old + 1
    tenancy.consumed(QUEUE, "a", old)  # a worker's late flush for a purged message
    tenancy.flush()
    assert tenancy.held(QUEUE) == {"a": 2}


def test_a_reservation_made_during_a_reading_stops_the_reset(tenancy):
    before = tenancy.snapshot(QUEUE)
    tenancy.reserve(QUEUE, "a", "default", 100, n=3)  # on its way to the broker
    assert tenancy.reconcile(QUEUE, 0, before) == (0, 3)
    assert tenancy.held(QUEUE) == {"a": 3}


def test_counts_above_the_depth_in_two_readings_are_trimmed_in_proportion(tenancy):
    tenancy.reserve(QUEUE, "a", "critical", 100, n=30)
    tenancy.reserve(QUEUE, "b", "critical", 100, n=10)
    assert tenancy.reconcile(QUEUE, 20, tenancy.snapshot(QUEUE)) == (0, 40)  # first reading
    time.sleep(1.05)
    removed, after = tenancy.reconcile(QUEUE, 20, tenancy.snapshot(QUEUE))
    assert (removed, after) == (20, 20)
    assert tenancy.held(QUEUE) == {"a": 15, "b": 5}


def test_places_taken_back_between_readings_are_not_trimmed_again(tenancy):
    epoch = tenancy.reserve(QUEUE, "a", "critical", 100, n=30).epoch
    tenancy.reconcile(QUEUE, 20, tenancy.snapshot(QUEUE))  # 10 over: receipts not flushed
    for _ in range(10):
        tenancy.consumed(QUEUE, "a", epoch)
    tenancy.flush()
    time.sleep(1.05)
    assert tenancy.reconcile(QUEUE, 20, tenancy.snapshot(QUEUE)) == (0, 20)
    assert tenancy.held(QUEUE) == {"a": 20}


def test_a_share_refusal_draws_its_ticket_in_the_tenants_own_line(tenancy, monkeypatch):
    monkeypatch.setattr(tenancy.guard, "drain_rate", lambda queue: 10.0)
    fill(tenancy, {"other": 50, "b": 1, "a": 33})
    got = tenancy.reserve(QUEUE, "a", "default", 100)
    assert got.reason == "share" and got.wait_s is not None and got.wait_s > 0
    client, keys = tenancy.guard.meter.client, tenancy.guard.meter.keys
    assert client.exists(keys.line(QUEUE, "tenant:a"))
    assert not client.exists(keys.ticket(QUEUE))
    error = tenancy.refusal(QUEUE, got, 100, "a", "default")
    assert (error.reason, error.tenant, error.share) == ("share", "a", 33)
