"""Clients that throttle themselves, against a real guarded queue (FLOODGATE_TEST_BROKER).

A queue that refuses: the client stops sending most of its attempts, so the broker
and the guard see a fraction of them. The queue drains: within one window the client
sends everything again. The throttle's clock is a fake (two minutes pass in a second);
the broker, the guard and their refusals are real. The queue admits first come, first
served (FAIR_ADMISSION=false): the client's behaviour, not the shares, is under test,
and a purge is then seen at once on both brokers.
"""
import random
import time

import pytest
from prometheus_client import REGISTRY

from celery_floodgate import QueueFull
from celery_floodgate.client import QueueFullLocally, Throttle, call_with_backoff
from celery_floodgate.memo import MEMO_MAX_S
from tests.integration.test_back_pressure import FANOUT, LIMIT, depth

WINDOW_S = 120


class Clock:
    def __init__(self) -> None:
        self.now_s = 10_000.0

    def __call__(self) -> float:
        return self.now_s


class Submitter:
    """Submits to fanout through the real guard, counting what reaches it."""

    def __init__(self, app) -> None:
        self.app, self.sent, self.refused_by_broker, self.accepted = app, 0, 0, 0

    def __call__(self):
        self.sent += 1
        try:
            result = self.app.send_task(FANOUT, args=("00000000-0000-0000-0000-000000000000", 0))
        except QueueFull as full:
            assert not isinstance(full, QueueFullLocally)
            self.refused_by_broker += 1
            raise
        self.accepted += 1
        return result


def fill_to_the_limit(app) -> int:
    """Fill fanout until the guard refuses, as critical work (admitted up to the very limit
    when fair admission is on; plain first come, first served otherwise)."""
    for sent in range(LIMIT + 1):
        try:
            app.send_task(FANOUT, args=("00000000-0000-0000-0000-000000000000", 0),
                          headers={"criticality": "critical"})
        except QueueFull:
            return sent
    raise AssertionError(f"fanout admitted more than its limit of {LIMIT}")


def guard_refusals() -> float:
    """What the guard in this process counted as refused on fanout (its Prometheus counter)."""
    return REGISTRY.get_sample_value("floodgate_refused_total", {"queue": "fanout"}) or 0.0


def attempt(throttle: Throttle, submit: Submitter, max_attempts: int) -> str:
    try:
        call_with_backoff(submit, max_attempts=max_attempts, throttle=throttle,
                          destination="fanout", sleep=lambda s: None)
    except QueueFullLocally:
        return "refused here"
    except QueueFull:
        return "refused by the broker"
    return "accepted"


@pytest.fixture
def idle(monkeypatch, request):
    """``idle_app`` (a guarded namespace no worker drains), first come, first served."""
    monkeypatch.setenv("FAIR_ADMISSION", "false")
    return request.getfixturevalue("idle_app")


@pytest.fixture
def throttle():
    clock = Clock()
    return Throttle(window_s=WINDOW_S, clock=clock, rng=random.Random(20).random), clock


def test_a_client_facing_a_full_queue_sends_a_fraction_of_its_attempts(idle, throttle):
    gate, clock = throttle
    held = fill_to_the_limit(idle)
    submit, before = Submitter(idle), guard_refusals()
    outcomes = []
    for _ in range(300):  # 300 submissions in 30 s, each tried up to 3 times
        outcomes.append(attempt(gate, submit, max_attempts=3))
        clock.now_s += 0.1
    attempts = gate.counts().attempts
    assert attempts >= 300
    assert submit.sent == submit.refused_by_broker == guard_refusals() - before
    assert submit.sent < attempts / 4, (submit.sent, attempts)  # ~50 of 300+
    assert outcomes.count("refused here") > 200
    assert gate.counts().retries <= 0.1 * gate.counts().sent + 10  # the retry budget
    assert gate.probability() > 0.9
    assert held == depth(idle) == LIMIT  # nothing slipped past the limit


def test_once_the_queue_drains_the_client_recovers_within_one_window(idle, throttle):
    gate, clock = throttle
    fill_to_the_limit(idle)
    submit = Submitter(idle)
    for _ in range(300):
        attempt(gate, submit, max_attempts=1)
        clock.now_s += 0.1
    refusing_until = clock.now_s
    assert gate.probability() > 0.9
    with idle.connection_for_write() as conn:  # the workers catch up at once
        conn.default_channel.queue_purge("fanout")
    # The guard refuses in-process for a moment after the broker's last refusal, when a
    # drain rate is measured (lib/src/celery_floodgate/memo.py): past that moment.
    time.sleep(MEMO_MAX_S + 0.01)
    submit.accepted = 0

    recovered_at, outcomes = None, []
    for _ in range(160):  # one a second: fewer than the limit of 200
        outcomes.append(attempt(gate, submit, max_attempts=1))
        if recovered_at is None and gate.probability() == 0:
            recovered_at = clock.now_s
        clock.now_s += 1
    assert "refused by the broker" not in outcomes  # the queue had room throughout
    assert recovered_at is not None and recovered_at - refusing_until <= WINDOW_S
    probes = outcomes[:int(recovered_at - refusing_until)]
    assert "accepted" in probes and "refused here" in probes  # a few sent, and accepted
    assert outcomes[-20:] == ["accepted"] * 20  # everything sent again
    assert gate.probability() == 0
    assert depth(idle) == submit.accepted
