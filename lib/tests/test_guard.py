"""Retry-After: clamped to 1..60 s, and drawn from a virtual waiting line that hands each
refused caller the next slot the drain rate frees, so refusals come back spread out at the
pace the queue drains. The line lives in Redis (the suite's database 8, under keys of each
test's own); the drain rate is given, as workers would have measured it."""
from __future__ import annotations

import math
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_floodgate import EtaTooFar, Guard, QueueFull, parse_limits
from celery_floodgate import memo as memo_module
from celery_floodgate.guard import TICKET, clamp, room, wait_bound
from celery_floodgate.limits import (
    MAX_LENGTH,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    RETRY_AFTER_UNMEASURED_S,
    WAIT_LIMIT_BOOTSTRAP_LENGTH,
    Keys,
)
from celery_floodgate.memo import RefusalMemo
from celery_floodgate.meter import Meter, busy_rate
from conftest import meter_url

SLOW = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- clamping, bounds, room: pure arithmetic --------------------------------------------

@given(wait_s=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False))
def test_retry_after_is_whole_seconds_between_the_minimum_and_the_maximum(wait_s) -> None:
    retry_after_s = clamp(wait_s)
    assert isinstance(retry_after_s, int)
    assert RETRY_AFTER_MIN_S <= retry_after_s <= RETRY_AFTER_MAX_S
    if RETRY_AFTER_MIN_S <= wait_s <= RETRY_AFTER_MAX_S:  # never sooner than the wait
        assert wait_s <= retry_after_s < wait_s + 1


@given(a=st.floats(min_value=-100, max_value=1000), b=st.floats(min_value=-100, max_value=1000))
def test_a_longer_wait_never_gets_a_shorter_retry_after(a, b) -> None:
    assert (clamp(a) <= clamp(b)) if a <= b else (clamp(a) >= clamp(b))


def test_retry_after_clamps_at_its_ends() -> None:
    assert (clamp(0.0001), clamp(1.0), clamp(4.2), clamp(60.0), clamp(1e9)) == (
        1, 1, 5, 60, RETRY_AFTER_MAX_S)


@given(wait_s=st.floats(min_value=0.01, max_value=3600),
       rate=st.floats(min_value=1e-6, max_value=1e6))
def test_a_wait_limit_allows_wait_times_rate_within_1_and_the_ceiling(wait_s, rate) -> None:
    bound = wait_bound(wait_s, rate)
    assert 1 <= bound <= MAX_LENGTH
    assert bound == max(1, min(MAX_LENGTH, math.floor(wait_s * rate)))
    assert wait_bound(wait_s, rate * 2) >= bound  # drains faster: may hold more


@pytest.mark.parametrize("rate", [None, 0, 0.0])
def test_a_wait_limit_admits_the_bootstrap_length_until_a_rate_is_measured(rate) -> None:
    assert wait_bound(30, rate) == WAIT_LIMIT_BOOTSTRAP_LENGTH


@given(bound=st.integers(min_value=1, max_value=MAX_LENGTH),
       held=st.integers(min_value=0, max_value=2 * MAX_LENGTH))
def test_prefetched_messages_take_room_but_never_more_than_half(bound, held) -> None:
    left = room(bound, held)
    assert math.ceil(bound / 2) <= left <= bound
    if held <= bound // 2:
        assert left == bound - held


# --- a guard with a given drain rate and the real line in Redis -------------------------

def fresh_keys() -> Keys:
    return Keys(f"lib-test-guard-{uuid.uuid4().hex}")


class GivenRate(Meter):
    """The real meter (its Redis and keys) with the drain rate workers would have measured."""

    def __init__(self, rate: float | None, url: str | None = None) -> None:
        super().__init__(url if url is not None else meter_url(), fresh_keys())
        self.rate = rate

    def drain_rate(self, queue: str, window_s: int = 5, lookback_s: int = 60) -> float | None:
        return self.rate


def guard_at(rate: float | None, limits=None, url: str | None = None, **options) -> Guard:
    return Guard(parse_limits(limits or {"q": 100}), GivenRate(rate, url), "redis", **options)


@pytest.fixture
def line() -> redis.Redis:
    client = redis.Redis.from_url(meter_url())
    yield client
    for key in client.scan_iter("lib-test-guard-*"):
        client.delete(key)
    client.close()


def test_while_the_drain_rate_is_unknown_retry_after_is_short(line) -> None:
    assert guard_at(None).retry_after_s("q", depth=150, bound=100) == RETRY_AFTER_UNMEASURED_S
    no_meter = guard_at(10.0, url="")  # a rate but no Redis to keep the line in
    assert no_meter.retry_after_s("q", 150, 100) == RETRY_AFTER_UNMEASURED_S


def test_a_refusal_given_the_brokers_ticket_carries_it_clamped(line) -> None:
    full = guard_at(None).refuse("q", 100, 100, wait_s=7.2)
    assert isinstance(full, QueueFull)
    assert (full.queue, full.depth, full.limit, full.retry_after_s) == ("q", 100, 100, 8)


def tickets(client: redis.Redis, key: str, n: int, rate: float, max_s: float = 1e6,
            horizon_s: float = 1e6, excess: int = 1, pending: int = 0) -> tuple[list[float], float]:
    """n refused callers' waits in one line (as the brokers' scripts draw them), and how
    long drawing them took."""
    start = time.monotonic()
    waits = [float(TICKET(client, [key], (excess, rate, max_s, horizon_s, pending if i == 0 else 0)))
             for i in range(n)]
    return waits, time.monotonic() - start


@SLOW
@given(rate=st.floats(min_value=0.5, max_value=500), n=st.integers(min_value=2, max_value=25))
def test_each_refused_caller_gets_the_next_slot_the_drain_rate_frees(line, rate, n) -> None:
    waits, took_s = tickets(line, fresh_keys().ticket("q"), n, rate)
    assert waits[0] == pytest.approx(1 / rate, abs=1e-4)  # Redis' clock: µs, as floats
    for k, wait in enumerate(waits):
        # slot k is k / rate after slot 0; the caller asked up to took_s later
        assert waits[0] + k / rate - took_s - 1e-3 <= wait <= waits[0] + k / rate + 1e-3


@SLOW
@given(rate=st.floats(min_value=1, max_value=100), excess=st.integers(min_value=1, max_value=500))
def test_the_first_ticket_is_never_sooner_than_the_excess_drains(line, rate, excess) -> None:
    (wait,), _ = tickets(line, fresh_keys().ticket("q"), 1, rate, excess=excess)
    assert wait == pytest.approx(excess / rate, abs=1e-4)


@SLOW
@given(rate=st.floats(min_value=1, max_value=100), horizon_s=st.floats(min_value=0.5, max_value=5))
def test_the_line_never_reaches_past_one_turnover_of_the_queue(line, rate, horizon_s) -> None:
    n = math.ceil(horizon_s * rate) + 5  # more callers than one turnover holds
    waits, took_s = tickets(line, fresh_keys().ticket("q"), n, rate, horizon_s=horizon_s)
    cap_s = max(horizon_s, 1 / rate)
    assert max(waits) <= cap_s + 1e-3
    # unbounded, the last slot would be n / rate > cap_s away: it was cut back to the cap
    # (less the time the later callers took to ask)
    assert waits[-1] >= cap_s - took_s - 1e-3


def test_the_line_never_reaches_past_the_longest_retry_after(line) -> None:
    waits, _ = tickets(line, fresh_keys().ticket("q"), 8, rate=0.1, max_s=RETRY_AFTER_MAX_S)
    assert waits[0] == pytest.approx(10, abs=1e-4) and waits[1] == pytest.approx(20, abs=0.05)
    assert waits[-2:] == pytest.approx([RETRY_AFTER_MAX_S] * 2, abs=0.05)


def test_slots_handed_out_in_process_are_skipped_by_the_next_ticket(line) -> None:
    key = fresh_keys().ticket("q")
    start = time.monotonic()
    (first,), _ = tickets(line, key, 1, rate=10)
    (after_pending,), _ = tickets(line, key, 1, rate=10, pending=3)
    took_s = time.monotonic() - start
    expected = first + 4 / 10  # 3 skipped, then its own
    assert expected - took_s - 1e-3 <= after_pending <= expected + 1e-3


def test_refused_callers_are_told_to_come_back_at_the_pace_the_queue_drains(line) -> None:
    """100 callers refused by a queue draining 10/s are spread over 10 s; at 20/s over 5 s."""
    def last_of(refusals: int, rate: float) -> list[int]:
        guard = guard_at(rate, {"q": 500})
        return [guard.retry_after_s("q", depth=500, bound=500) for _ in range(refusals)]

    slow, fast = last_of(100, 10.0), last_of(100, 20.0)
    assert slow == sorted(slow) and fast == sorted(fast)  # each later than the one before
    assert slow[0] == 1 and 10 <= slow[-1] <= 11
    assert fast[0] == 1 and 5 <= fast[-1] <= 6
    assert len(set(slow)) >= 10  # spread out, not all told the same second


def test_a_short_queue_never_sends_callers_past_its_own_turnover(line) -> None:
    guard = guard_at(10.0, {"q": 20})  # 20 messages at 10/s: the queue turns over in 2 s
    assert max(guard.retry_after_s("q", 20, 20) for _ in range(100)) == 2


def test_a_slow_queue_never_answers_more_than_the_maximum(line) -> None:
    guard = guard_at(0.1, {"q": 1000})
    waits = [guard.retry_after_s("q", 1000, 1000) for _ in range(10)]
    assert waits[0] == 10 and waits[-1] == RETRY_AFTER_MAX_S


# --- the in-process memo of a refusal --------------------------------------------------

def test_without_a_measured_rate_a_refusal_is_not_remembered() -> None:
    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=2.0, rate=None)
    assert memo.refusal("q") is None and memo.take_pending("q") == 0


def test_a_remembered_refusal_hands_out_tickets_further_down_the_line() -> None:
    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=2.0, rate=50)  # one slot every 20 ms
    first, second = memo.refusal("q"), memo.refusal("q")
    if first is None or second is None:
        pytest.skip("the machine stalled past the memo's 50 ms")
    assert first[:2] == (100, 100) and 2.0 < first[2] <= 2.03
    assert second[2] - first[2] == pytest.approx(0.02, abs=0.005)
    assert memo.take_pending("q") == 2 and memo.take_pending("q") == 0


def test_a_refusal_is_remembered_only_for_one_drain_interval_at_most() -> None:
    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=1.0, rate=1)
    time.sleep(memo_module.MEMO_MAX_S + 0.01)
    assert memo.refusal("q") is None  # ask the broker again


def test_an_admission_forgets_a_remembered_refusal_at_once() -> None:
    memo = RefusalMemo()
    memo.remember("q", 100, 100, wait_s=1.0, rate=1)
    memo.admitted("q")
    assert memo.refusal("q") is None


def test_refusals_answered_in_process_keep_the_shared_line_honest(
        line, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker refusal at 1/s, three answered from the memo, then the broker again: the
    callers are told 1, 2, 3, 4 and 5 s - one slot each, none handed out twice."""
    monkeypatch.setattr(memo_module, "MEMO_MAX_S", 30.0)  # a slow machine stays in the memo
    guard = guard_at(1.0)
    told = [guard.refuse("q", 100, 100).retry_after_s]
    for _ in range(3):
        remembered = guard.recent_refusal("q")
        assert remembered is not None and remembered.queue == "q"
        told.append(remembered.retry_after_s)
    told.append(guard.retry_after_s("q", 100, 100))
    assert told == [1, 2, 3, 4, 5]
    guard.admitted("q")
    assert guard.recent_refusal("q") is None


# --- the drain rate the line is drawn from -----------------------------------------------

def test_the_drain_rate_believes_a_drop_at_once_and_a_rise_once_it_lasts() -> None:
    assert busy_rate([100, 100, 100, 100, 100]) == 100
    assert busy_rate([100, 100, 100, 50, 50]) == 50
    assert busy_rate([50, 50, 50, 100, 100]) == 70
    assert busy_rate([0, 1, 0, 0, 0, 0, 0]) == pytest.approx(1 / 7)  # long tasks
    assert busy_rate([0, 0, 0]) is None


def test_a_meter_reads_the_rate_of_backlogged_seconds_only(line) -> None:
    meter = Meter(meter_url(), fresh_keys())
    now = int(time.time())
    for s in range(now - 10, now):
        line.set(meter.keys.drained("q", s), 30 if s >= now - 5 else 2, ex=60)
        if s >= now - 5:
            line.set(meter.keys.backlog("q", s), 1, ex=60)
    assert meter.drain_rate("q") == 30  # the quiet seconds say how much arrived, not how fast
    assert meter.drain_rate("never-drained") is None
    assert Meter(None, fresh_keys()).drain_rate("q") is None


# --- countdowns ---------------------------------------------------------------------------

def test_a_countdown_the_broker_would_deliver_twice_is_refused_before_sending() -> None:
    guard = guard_at(None, max_countdown_s=600)
    now = datetime.now(timezone.utc)
    guard.check_eta("q", (now + timedelta(seconds=60)).isoformat())
    guard.check_eta("q", None)
    with pytest.raises(EtaTooFar, match="would be delivered twice") as refused:
        guard.check_eta("q", (now + timedelta(seconds=900)).isoformat())
    assert refused.value.max_countdown_s == 600 and 890 < refused.value.delay_s <= 900
    guard_at(None).check_eta("q", (now + timedelta(days=30)).isoformat())  # no bound set
