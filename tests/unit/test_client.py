"""The backoff helper: bounded attempts and time, never sooner than Retry-After."""
import time

import httpx
import pytest

from celery_floodgate import QueueFull
from celery_floodgate.client import call_with_backoff, post_with_backoff
from celery_floodgate.throttle import THROTTLES


@pytest.fixture(autouse=True)
def fresh_throttles():
    """No destination's history leaks between tests through the default registry."""
    THROTTLES.clear()
    yield
    THROTTLES.clear()


class Refuser:
    def __init__(self, refusals: int, retry_after_s: int = 0):
        self.calls, self.refusals, self.retry_after_s = [], refusals, retry_after_s

    def __call__(self):
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.refusals:
            raise QueueFull("fanout", 10, 10, self.retry_after_s)
        return "accepted"


def test_it_returns_once_admitted_and_waits_at_least_retry_after_between_calls():
    fn = Refuser(refusals=2, retry_after_s=1)
    assert call_with_backoff(fn, hint_jitter=0.1) == "accepted"
    gaps = [b - a for a, b in zip(fn.calls, fn.calls[1:])]
    assert len(gaps) == 2
    assert all(1.0 <= gap <= 1.1 + 0.3 for gap in gaps), gaps


def test_attempts_are_bounded_and_the_last_refusal_is_raised():
    fn = Refuser(refusals=100)
    with pytest.raises(QueueFull):
        call_with_backoff(fn, max_attempts=4, base_s=0.01, cap_s=0.02)
    assert len(fn.calls) == 4


def test_total_time_is_bounded():
    fn = Refuser(refusals=100, retry_after_s=1)
    start = time.monotonic()
    with pytest.raises(QueueFull):
        call_with_backoff(fn, max_attempts=100, max_total_s=1.5, hint_jitter=0)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed <= 1.5 and len(fn.calls) == 2


def test_a_hint_beyond_the_total_bound_gives_up_at_once_instead_of_oversleeping():
    waits = []
    fn = Refuser(refusals=100, retry_after_s=60)
    with pytest.raises(QueueFull):
        call_with_backoff(fn, max_total_s=30, sleep=waits.append)
    assert waits == [] and len(fn.calls) == 1


def test_full_jitter_backoff_stays_under_its_cap():
    waits = []
    fn = Refuser(refusals=6)
    call_with_backoff(fn, max_attempts=10, base_s=0.05, cap_s=0.1, sleep=waits.append)
    assert len(waits) == 6 and all(0 <= w <= 0.1 for w in waits)
    assert len(set(waits)) > 1  # jittered, not constant


def test_http_503_is_retried_as_the_header_says_and_other_answers_return():
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(202)])
    waits = []
    transport = httpx.MockTransport(lambda request: next(answers))
    with httpx.Client(transport=transport, base_url="http://floodgate") as client:
        response = post_with_backoff(client, "/posts", {"text": "t"},
                                     sleep=waits.append, hint_jitter=0.5)
    assert response.status_code == 202
    assert len(waits) == 1 and 2.0 <= waits[0] <= 3.0


def test_a_client_posting_to_a_refusing_api_stops_sending_most_of_its_attempts():
    sent = []

    def busy(request):
        sent.append(request)
        return httpx.Response(503, headers={"Retry-After": "1"})

    with httpx.Client(transport=httpx.MockTransport(busy), base_url="http://floodgate") as client:
        answers = [post_with_backoff(client, "/posts", {"text": "t"}, max_attempts=1)
                   for _ in range(500)]
    assert all(a.status_code == 503 for a in answers)
    assert 20 <= len(sent) < 60  # about 36: each sent with p = 1/(sent + 1) past the floor
    assert sum("floodgate_throttled" in a.extensions for a in answers) == 500 - len(sent)
