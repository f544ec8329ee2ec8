"""The errors a user catches: each carries its data, reads as a sentence naming the cause
and the fix, and survives crossing a process (pickle, as Celery's result backend does)."""
from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_floodgate import (
    BackpressureError,
    BrokerUnavailable,
    EtaTooFar,
    NotInstalled,
    QueueFull,
    Refused,
)

QUEUES = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="._-"),
                 min_size=1, max_size=20)
COUNTS = st.integers(min_value=0, max_value=10**6)
WAITS = st.integers(min_value=1, max_value=60)


@given(queue=QUEUES, depth=COUNTS, limit=COUNTS, retry_after_s=WAITS)
def test_queue_full_carries_its_data_and_says_what_is_full_and_when_to_retry(
        queue, depth, limit, retry_after_s) -> None:
    full = QueueFull(queue=queue, depth=depth, limit=limit, retry_after_s=retry_after_s)
    assert (full.queue, full.depth, full.limit, full.retry_after_s) == (
        queue, depth, limit, retry_after_s)
    assert str(full) == f"queue {queue!r} is full ({depth}/{limit}); retry in {retry_after_s} s"


@given(queue=QUEUES, depth=COUNTS, limit=COUNTS, retry_after_s=WAITS)
def test_queue_full_is_whole_again_after_pickling(queue, depth, limit, retry_after_s) -> None:
    full = pickle.loads(pickle.dumps(QueueFull(queue, depth, limit, retry_after_s)))
    assert isinstance(full, QueueFull)
    assert (full.queue, full.depth, full.limit, full.retry_after_s) == (
        queue, depth, limit, retry_after_s)
    assert str(full) == str(QueueFull(queue, depth, limit, retry_after_s))


def test_queue_full_rebuilt_from_its_args_is_the_same_error() -> None:
    full = QueueFull("emails", 500, 500, 7)
    again = QueueFull(*full.args)
    assert (again.queue, again.depth, again.limit, again.retry_after_s) == ("emails", 500, 500, 7)
    assert str(again) == str(full)


def test_broker_unavailable_names_the_queue_the_cause_and_when_to_retry() -> None:
    down = BrokerUnavailable("emails", "ConnectionRefusedError: [Errno 111]")
    assert (down.queue, down.retry_after_s) == ("emails", 5)
    assert str(down) == ("broker unavailable while submitting to 'emails': "
                         "ConnectionRefusedError: [Errno 111]; retry in 5 s")
    again = pickle.loads(pickle.dumps(BrokerUnavailable("emails", "timeout", retry_after_s=2)))
    assert (again.queue, again.cause, again.retry_after_s) == ("emails", "timeout", 2)
    assert str(again).endswith("timeout; retry in 2 s")


@given(delay_s=st.floats(min_value=0, max_value=10**6, allow_nan=False),
       max_countdown_s=st.integers(min_value=1, max_value=10**6))
def test_eta_too_far_says_why_it_would_run_twice_and_what_to_use_instead(
        delay_s, max_countdown_s) -> None:
    far = EtaTooFar("reports", delay_s, max_countdown_s)
    assert (far.queue, far.delay_s, far.max_countdown_s) == ("reports", delay_s, max_countdown_s)
    sentence = str(far)
    assert sentence.startswith(f"a countdown of {delay_s:.0f} s on 'reports' exceeds")
    assert f"({max_countdown_s} s:" in sentence and "delivered twice" in sentence
    assert "use a shorter countdown or a beat schedule" in sentence
    again = pickle.loads(pickle.dumps(far))
    assert (again.delay_s, again.max_countdown_s, str(again)) == (delay_s, max_countdown_s, sentence)


def test_not_installed_is_a_value_error_with_the_problem_in_its_sentence() -> None:
    problem = "the app routes to 'reports' without a limit"
    refused = NotInstalled(problem)
    assert isinstance(refused, ValueError)
    assert str(refused) == f"back pressure not installed: {problem}"
    assert str(pickle.loads(pickle.dumps(refused))) == str(refused)


@pytest.mark.parametrize("error, parents", [
    (QueueFull("q", 1, 1, 1), (Refused, BackpressureError)),
    (EtaTooFar("q", 900.0, 600), (Refused, BackpressureError)),
    (BrokerUnavailable("q", "down"), (BackpressureError,)),
    (NotInstalled("bad"), (BackpressureError, ValueError)),
])
def test_one_except_clause_catches_each_family(error, parents) -> None:
    for parent in parents:
        with pytest.raises(parent):
            raise error


def test_a_broker_outage_is_not_a_refusal() -> None:
    """Callers that treat Refused as "nothing was enqueued, the connection is fine" must not
    catch an outage with it."""
    assert not isinstance(BrokerUnavailable("q", "down"), Refused)
    assert not isinstance(NotInstalled("bad"), Refused)
