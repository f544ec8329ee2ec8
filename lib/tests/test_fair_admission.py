"""Fair admission on the real Redis broker (no worker): shares per tenant and criticality
classes, checked in the admission's Lua call, and each tenant's holding exact through
consumption and a purge. The pure rule is `celery_floodgate.fairness.decide`; the
property-based test drives random submissions, consumptions and purges and holds every
answer of the broker to the rule applied to a model of the queue."""
from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_floodgate import QueueFull, install
from celery_floodgate.fairness import CLASSES, Fairness, decide, submitting_as
from celery_floodgate.stats import depth
from conftest import PREFIX, broker_kind, broker_url, meter_url, reset_broker

pytestmark = pytest.mark.skipif(broker_kind() != "redis",
                                reason="Redis counts shares in its Lua call; RabbitMQ's "
                                       "meter counts are tested in test_tenants.py")
QUEUE = "fair"
KEY_PREFIX = f"{PREFIX}-fair"


def fair_app(limit: int, policy: Fairness) -> Celery:
    app = Celery("fairapp", broker=broker_url(), set_as_current=False)
    app.conf.update(task_default_queue=QUEUE, broker_connection_retry_on_startup=False)

    @app.task(name="fair.job")
    def job() -> None:
        """Never run here: the tests read the queue."""

    install(app, {QUEUE: limit}, meter_url=meter_url(), key_prefix=KEY_PREFIX,
            fairness=policy)
    return app


@pytest.fixture
def make_app() -> Iterator[object]:
    made: list[Celery] = []

    def make(limit: int, **policy: object) -> Celery:
        reset_broker()
        app = fair_app(limit, Fairness(**policy))  # type: ignore[arg-type]
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def submit(app: Celery, tenant: str | None, criticality: str | None = None) -> QueueFull | None:
    """Send one job named as ``tenant`` and ``criticality`` (None: as the context says)."""
    headers = {k: v for k, v in (("tenant", tenant), ("criticality", criticality)) if v}
    try:
        app.send_task("fair.job", headers=headers)
    except QueueFull as full:
        return full
    return None


def queued_tenants(app: Celery) -> Counter[str]:
    """The tenant header of every message waiting, read without taking any."""
    import json

    client = redis.Redis.from_url(broker_url())
    return Counter(json.loads(raw)["headers"]["tenant"] for raw in client.lrange(QUEUE, 0, -1))


def take(app: Celery, n: int) -> None:
    with app.connection_for_write() as conn:
        bound = app.amqp.queues[QUEUE].bind(conn.default_channel)
        for _ in range(n):
            assert bound.get(no_ack=True) is not None


def test_a_tenant_over_its_share_is_refused_while_the_others_are_admitted(make_app) -> None:
    app = make_app(100, class_fractions={"default": 1.0})
    guard = app._floodgate_guard
    assert [submit(app, "noisy") for _ in range(60)] == [None] * 60  # alone: the whole queue
    assert [submit(app, "polite-a") for _ in range(30)] == [None] * 30  # under its share, 50
    full = submit(app, "noisy")
    assert full is not None and (full.reason, full.tenant, full.share) == ("share", "noisy", 50)
    assert "already holds its share" in str(full) and full.retry_after_s >= 1
    # A third tenant's share is 33 of 100; the queue has 10 left, and it gets them.
    assert [submit(app, "polite-b") for _ in range(10)] == [None] * 10
    last = submit(app, "polite-b")
    assert last is not None and last.reason == "full"
    assert depth(app, QUEUE) == 100
    assert guard.tenant_held(QUEUE) == queued_tenants(app) == {
        "noisy": 60, "polite-a": 30, "polite-b": 10}


def test_classes_are_shed_in_order_and_critical_only_at_the_limit(make_app) -> None:
    app = make_app(20)
    with submitting_as("t1", "sheddable"):
        outcomes = [submit(app, None) for _ in range(11)]  # the context names them
    assert outcomes[:10] == [None] * 10
    shed = outcomes[10]
    assert shed is not None and (shed.reason, shed.criticality, shed.depth) == (
        "class", "sheddable", 10)
    assert [submit(app, f"d{i}") for i in range(8)] == [None] * 8  # default: up to 18
    refused = submit(app, "d9")
    assert refused is not None and (refused.reason, refused.criticality) == ("class", "default")
    assert [submit(app, "ops", "critical") for _ in range(2)] == [None, None]
    full = submit(app, "ops", "critical")
    assert full is not None and full.reason == "full" and depth(app, QUEUE) == 20


def test_a_consumed_or_purged_message_leaves_its_tenants_count(make_app) -> None:
    app = make_app(40)
    guard = app._floodgate_guard
    for tenant, n in (("a", 15), ("b", 5)):
        for _ in range(n):
            assert submit(app, tenant) is None
    take(app, 7)  # the oldest seven: a's
    assert guard.tenant_held(QUEUE) == queued_tenants(app) == {"a": 8, "b": 5}
    with app.connection_for_write() as conn:
        app.amqp.queues[QUEUE].bind(conn.default_channel).purge()
    assert guard.tenant_held(QUEUE) == {} and depth(app, QUEUE) == 0
    # Nothing of the purged messages is still counted against a's share.
    assert [submit(app, "a") for _ in range(36)] == [None] * 36


def test_concurrent_tenants_never_exceed_the_limit_and_counts_match_the_queue(make_app) -> None:
    limit, tenants, threads_each, attempts = 60, ("x", "y", "z"), 3, 20
    app = make_app(limit, class_fractions={"default": 1.0})
    barrier = threading.Barrier(len(tenants) * threads_each)

    def submitter(tenant: str) -> int:
        barrier.wait()
        return sum(submit(app, tenant) is None for _ in range(attempts))

    with ThreadPoolExecutor(len(tenants) * threads_each) as pool:
        jobs = [(t, pool.submit(submitter, t)) for t in tenants for _ in range(threads_each)]
        admitted = Counter({t: 0 for t in tenants})
        for tenant, job in jobs:
            admitted[tenant] += job.result()
    assert sum(admitted.values()) == limit == depth(app, QUEUE)
    assert queued_tenants(app) == admitted == app._floodgate_guard.tenant_held(QUEUE)
    # Above the watermark (30) a tenant is admitted only under its share (20 of 3).
    assert max(admitted.values()) <= 30


# A noisy "a" (most submissions), a weighted "heavy", and classes mostly default.
SUBMIT = st.tuples(st.just("submit"), st.sampled_from(["a"] * 5 + ["b", "c", "heavy"]),
                   st.sampled_from([*CLASSES, "default", "critical"]))
# Mostly submissions, so queues reach their watermark and bounds; a purge is rare.
STEP = st.sampled_from(["submit"] * 16 + ["take"] * 3 + ["purge"]).flatmap(
    lambda kind: SUBMIT if kind == "submit" else st.tuples(st.just(kind), st.integers(1, 6)))
STEPS = st.lists(STEP, min_size=30, max_size=80)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=STEPS, limit=st.integers(4, 30), watermark=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
       fractions=st.sampled_from([(0.5, 0.9), (0.3, 0.6), (1.0, 1.0), (0.25, 1.0)]))
def test_every_answer_of_the_broker_is_the_rule_applied_to_the_queue(
        steps: list[tuple], limit: int, watermark: float, fractions: tuple[float, float]) -> None:
    policy = Fairness(watermark=watermark, weights={"heavy": 3},
                      class_fractions={"sheddable": fractions[0], "default": fractions[1]})
    reset_broker()
    app = fair_app(limit, policy)
    model: deque[str] = deque()  # the queue's tenants, oldest on the right
    try:
        for step in steps:
            if step[0] == "submit":
                _, tenant, criticality = step
                held = Counter(model)
                active = sum(policy.weight(t) for t in held) + (
                    0 if held[tenant] else policy.weight(tenant))
                expected = decide(policy, limit, len(model), criticality, held[tenant],
                                  policy.weight(tenant), active)
                refused = submit(app, tenant, criticality)
                assert (refused is None) == expected.admit, (step, held, expected)
                if refused is None:
                    model.appendleft(tenant)
                else:
                    assert refused.reason == expected.reason
            elif step[0] == "take":
                n = min(step[1], len(model))
                take(app, n)
                for _ in range(n):
                    model.pop()
            else:
                with app.connection_for_write() as conn:
                    app.amqp.queues[QUEUE].bind(conn.default_channel).purge()
                model.clear()
        assert app._floodgate_guard.tenant_held(QUEUE) == Counter(model)
    finally:
        app.close()


def test_a_tenants_refusals_queue_in_its_own_line_and_push_back_no_one_else(make_app) -> None:
    import time

    app = make_app(100, class_fractions={"default": 1.0})
    guard = app._floodgate_guard
    guard._rates[QUEUE] = (time.monotonic() + 3600, 10.0)  # as if measured: 10 msg/s
    for _ in range(60):
        assert submit(app, "noisy") is None
    assert [submit(app, "polite") for _ in range(10)] == [None] * 10
    # Each share refusal takes the next slot of noisy's own line, which moves at its part
    # of the drain (60 of 70 waiting: about 8.6/s), so its waits grow...
    full = submit(app, "noisy")
    assert full is not None and full.reason == "share"
    # Remembered in-process for a moment, for noisy alone, as the same refusal.
    again = guard.recent_refusal(QUEUE, "noisy", "default")
    if again is not None:  # None only if this machine stalled past memo.MEMO_MAX_S
        assert (again.reason, again.share, again.tenant) == ("share", 50, "noisy")
    assert guard.recent_refusal(QUEUE, "polite", "default") is None
    time.sleep(0.06)
    waits = []
    for _ in range(40):
        full = submit(app, "noisy")
        assert full is not None and full.reason == "share"
        waits.append(full.retry_after_s)
        time.sleep(0.06)  # past the in-process memory of the refusal (memo.MEMO_MAX_S)
    assert waits[-1] >= 4 > waits[0]
    # ...while the queue's line, where the others wait once it is full, is untouched.
    assert [submit(app, "polite") for _ in range(30)] == [None] * 30
    full = submit(app, "polite")
    assert full is not None and full.reason == "full" and full.retry_after_s == 1
