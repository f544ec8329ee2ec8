"""The client's own throttle: the SRE book's refusal probability, a retry budget, a
sliding window of whole seconds, and a bounded registry. Clock and RNG are fakes."""
from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_floodgate.throttle import (
    OVER_BUDGET,
    SEND,
    THROTTLED,
    Counts,
    Throttle,
    Throttles,
    refusal_probability,
)


class Clock:
    def __init__(self, now_s: float = 1000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def throttle(clock: Clock, draw: float = 0.5, **options: float) -> Throttle:
    """A throttle whose RNG always draws ``draw``: it refuses exactly when p > draw."""
    return Throttle(clock=clock, rng=lambda: draw, **options)  # type: ignore[arg-type]


def refused(t: Throttle, n: int) -> None:
    """``n`` attempts, each sent and refused by the server (if the throttle sends it)."""
    for _ in range(n):
        if t.decide() == SEND:
            t.record(False, retry_after_s=3)


# --- the formula ------------------------------------------------------------------------

@given(requests=st.integers(0, 10**6), accepts=st.integers(0, 10**6),
       k=st.floats(1, 10, allow_nan=False))
def test_the_probability_is_the_books_formula_and_stays_below_one(requests, accepts, k) -> None:
    p = refusal_probability(requests, accepts, k)
    assert 0 <= p < 1
    assert p == max(0.0, (requests - k * accepts) / (requests + 1))
    assert (p == 0) == (requests <= k * accepts)


@given(requests=st.integers(0, 10**5), accepts=st.integers(0, 10**5),
       more=st.integers(1, 1000), k=st.floats(1, 10, allow_nan=False))
def test_more_refusals_never_lower_it_and_more_accepts_never_raise_it(requests, accepts, more,
                                                                      k) -> None:
    p = refusal_probability(requests, accepts, k)
    assert refusal_probability(requests + more, accepts, k) >= p
    assert refusal_probability(requests, accepts + more, k) <= p


def test_a_server_accepting_half_or_more_is_never_throttled_with_k_2() -> None:
    assert refusal_probability(1000, 500) == 0
    assert refusal_probability(1000, 499) == pytest.approx(2 / 1001)


# --- the throttle, deterministic --------------------------------------------------------

def test_nothing_is_refused_here_until_the_window_holds_min_requests() -> None:
    t = throttle(Clock(), draw=0.0)  # refuses whenever p > 0
    refused(t, 19)
    assert t.counts() == Counts(attempts=19, accepts=0, sent=19, retries=0)
    assert t.probability() == 0  # the formula would say 19/20: too few to judge
    refused(t, 1)
    assert t.counts().sent == 20 and t.probability() == pytest.approx(20 / 21)
    assert t.decide() == THROTTLED


def test_an_attempt_is_refused_here_exactly_when_the_draw_falls_under_p() -> None:
    p = 30 / 31  # after 30 refusals and no accept
    under, at = throttle(Clock(), draw=p - 1e-9), throttle(Clock(), draw=p)
    for t in (under, at):
        refused(t, 30)  # each earlier p, i / (i + 1), was below either draw: all sent
        assert t.counts().sent == 30 and t.probability() == pytest.approx(p)
    assert under.decide() == THROTTLED
    assert at.decide() == SEND


def test_a_refusal_here_counts_as_an_attempt_but_not_as_a_request() -> None:
    t = throttle(Clock(), draw=0.0)
    refused(t, 20)
    p = t.probability()
    assert t.decide() == THROTTLED
    assert t.counts() == Counts(attempts=21, accepts=0, sent=20, retries=0)
    assert t.probability() == p == pytest.approx(20 / 21)


def test_counting_local_refusals_as_the_book_does_pins_p_under_one_and_slows_recovery() -> None:
    """A queue refusing everything for a minute at 10 attempts a second, then accepting:
    the book's count needs minutes more of window turnover to send again."""
    def recovery_s(book: bool) -> float:
        clock = Clock(0.0)
        t = Throttle(clock=clock, rng=random.Random(1).random,
                     count_local_refusals=book)
        while clock.now_s < 60:
            refused(t, 1)
            clock.now_s += 0.1
        start = clock.now_s
        while t.probability() >= 0.1:
            if t.decide() == SEND:
                t.record(True)
            clock.now_s += 1
        return clock.now_s - start

    assert recovery_s(book=False) < 120
    assert recovery_s(book=True) > 300


def test_the_books_count_refuses_by_every_attempt_made() -> None:
    t = Throttle(clock=Clock(), rng=lambda: 0.0, count_local_refusals=True)
    refused(t, 20)
    refused(t, 10)  # refused here: they count
    assert t.counts() == Counts(attempts=30, accepts=0, sent=20, retries=0)
    assert t.probability() == pytest.approx(30 / 31)


def test_accepts_bring_the_probability_back_to_zero() -> None:
    t = throttle(Clock(), draw=0.0)
    refused(t, 20)
    assert t.probability() > 0.9
    for _ in range(10):
        t.record(True)
    assert t.probability() == 0  # 20 <= 2 x 10


def test_the_window_forgets_whole_seconds_as_they_leave_it() -> None:
    clock = Clock(1000.5)
    t = throttle(clock, draw=1.0, window_s=120)  # draw 1.0: never refused here
    refused(t, 25)
    clock.now_s = 1060.0
    t.record(True)
    clock.now_s = 1119.99  # second 1119: 1000 is still the window's oldest
    assert t.counts() == Counts(attempts=25, accepts=1, sent=25, retries=0)
    clock.now_s = 1120.0  # second 1000 has left
    assert t.counts() == Counts(attempts=0, accepts=1, sent=0, retries=0)
    assert t.probability() == 0
    clock.now_s = 1180.0
    assert t.counts() == Counts(0, 0, 0, 0)


def test_many_requests_in_one_second_take_one_bucket() -> None:
    clock = Clock()
    t = throttle(clock, draw=1.0, window_s=5)
    for _ in range(10_000):
        t.decide()
    clock.now_s += 5
    assert t.counts() == Counts(0, 0, 0, 0)
    assert len(t._buckets) == 5  # memory bounded by the window, not by the rate


def test_a_local_refusal_waits_what_remains_of_the_servers_last_retry_after() -> None:
    clock = Clock(50.0)
    t = throttle(clock)
    assert t.retry_after_s() == 1  # never told: 1 s
    t.record(False, retry_after_s=10, refusal="the refusal")
    assert t.last_refusal == "the refusal"
    clock.now_s = 53.5
    assert t.retry_after_s() == 7  # 6.5 s left, rounded up
    clock.now_s = 70.0
    assert t.retry_after_s() == 1


@pytest.mark.parametrize("options", [{"window_s": 0}, {"k": 0.5}, {"retry_ratio": 1.5},
                                     {"retry_allowance": -1}])
def test_settings_that_cannot_work_are_refused_with_what_is_needed(options) -> None:
    with pytest.raises(ValueError, match="need window_s >= 1, k >= 1"):
        Throttle(**options)


# --- the retry budget --------------------------------------------------------------------

def test_a_lone_caller_may_retry_its_allowance_then_ten_percent_of_what_it_sends() -> None:
    t = throttle(Clock(), draw=1.0, retry_allowance=3)  # draw 1.0: never refused here
    for _ in range(3):
        assert t.decide(retry=True) == SEND
    assert t.decide(retry=True) == OVER_BUDGET
    assert t.counts().attempts == 3  # a retry over budget is not even attempted
    for _ in range(7):
        assert t.decide() == SEND  # 10 sent: a 4th retry fits in 10 % of 11, plus 3
    assert t.decide(retry=True) == SEND
    assert t.decide(retry=True) == OVER_BUDGET


@settings(max_examples=200)
@given(steps=st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0, 30)), max_size=300),
       ratio=st.sampled_from([0.0, 0.1, 0.25]), allowance=st.integers(0, 5),
       draw=st.floats(0, 0.999))
def test_retries_sent_never_exceed_the_budget_within_the_window(steps, ratio, allowance,
                                                                draw) -> None:
    clock = Clock()
    t = throttle(clock, draw=draw, retry_ratio=ratio, retry_allowance=allowance, window_s=60)
    for retry, accepted, advance_s in steps:
        clock.now_s += advance_s
        if t.decide(retry=retry) == SEND:
            counts = t.counts()
            if retry:  # as it is sent; older sends leaving the window may tip it later
                assert counts.retries <= ratio * counts.sent + allowance + 1e-9
            t.record(accepted, retry_after_s=2)
        counts = t.counts()
        assert counts.accepts <= counts.sent <= counts.attempts


@settings(max_examples=100)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=400),
       draw=st.floats(0, 0.999))
def test_what_is_refused_here_follows_the_formula_at_each_attempt(outcomes, draw) -> None:
    t = throttle(Clock(), draw=draw)
    for accepted in outcomes:
        counts = t.counts()
        p = refusal_probability(counts.sent, counts.accepts)  # what was sent, by default
        expected = THROTTLED if counts.sent >= 20 and draw < p else SEND
        assert t.decide() == expected
        if expected == SEND:
            t.record(accepted)


def test_it_counts_exactly_under_many_threads() -> None:
    t = Throttle(rng=lambda: 1.0)

    def attempts() -> None:
        for _ in range(2000):
            t.decide()
            t.record(True)

    threads = [threading.Thread(target=attempts) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert t.counts() == Counts(attempts=16000, accepts=16000, sent=16000, retries=0)


# --- the registry -------------------------------------------------------------------------

def test_a_destination_keeps_its_throttle_and_the_least_recently_used_is_forgotten() -> None:
    registry = Throttles(max_destinations=2)
    fanout = registry.get("fanout")
    registry.get("emails")
    assert registry.get("fanout") is fanout  # used again: now the most recent
    registry.get("reports")
    assert len(registry) == 2 and "emails" not in registry and "fanout" in registry
    registry.clear()
    assert len(registry) == 0


def test_the_registry_builds_throttles_as_told() -> None:
    clock = Clock(7.0)
    registry = Throttles(make=lambda: Throttle(clock=clock, window_s=10))
    assert registry.get("fanout").window_s == 10


def test_threads_asking_for_one_destination_share_one_throttle() -> None:
    registry = Throttles()
    got: list[Throttle] = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("fanout")))
               for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(t) for t in got}) == 1
