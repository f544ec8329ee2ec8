"""The shop's queue holds its limit, refuses with retry_after_s, and drains once a worker runs."""
import time

import pytest

from celery_floodgate import QueueFull, queue_stats


def wait_for(check, timeout_s=120.0, interval_s=0.2):
    """Poll ``check`` until it returns a true value; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s} s: {check}")


def fill(shop):
    """Submit exactly the limit's worth of emails; every one is accepted."""
    return {f"customer{n}@example.com": shop.send_email.delay(f"customer{n}@example.com")
            for n in range(shop.EMAILS_LIMIT)}


def admitted(shop, to):
    """The result of submitting ``to``, or None if it was refused."""
    try:
        return shop.send_email.delay(to)
    except QueueFull:
        return None


def test_a_full_queue_refuses_until_a_worker_drains_it_and_every_accepted_email_is_sent(
        shop, start_worker):
    accepted = fill(shop)
    with pytest.raises(QueueFull) as refused:
        shop.send_email.delay("one-too-many@example.com")
    assert (refused.value.queue, refused.value.limit) == ("emails", shop.EMAILS_LIMIT)
    assert refused.value.retry_after_s >= 1
    assert queue_stats(shop.app)["emails"]["depth"] == shop.EMAILS_LIMIT

    start_worker()
    sent = {to: result.get(timeout=120) for to, result in accepted.items()}
    assert sent == {to: f"sent to {to}" for to in accepted}
    again = wait_for(lambda: admitted(shop, "welcome-back@example.com"))
    assert again.get(timeout=120) == "sent to welcome-back@example.com"


def test_the_producer_script_prints_each_refusal_with_its_retry_after(shop, produce):
    limit = shop.EMAILS_LIMIT
    finished = produce("--count", str(limit + 3))
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    refusals = [line for line in lines if line.startswith("refused customer")]
    assert [r.split(":")[0] for r in refusals] == [
        f"refused customer{n}@example.com" for n in range(limit, limit + 3)]
    assert all("is full (" in r and "retry_after_s=" in r for r in refusals)
    assert lines[-1] == f"accepted {limit}, refused 3"


def test_a_patient_producer_waits_as_told_and_is_admitted_once_a_worker_drains(
        shop, start_worker):
    client = pytest.importorskip("celery_floodgate.client",
                                 reason="call_with_backoff needs celery-floodgate[client]")
    fill(shop)
    waits_s = []

    def sleep(wait_s):  # the first refusal is answered with no worker: start one then
        if not waits_s:
            start_worker()
        waits_s.append(wait_s)
        time.sleep(wait_s)

    first_hint_s = []

    def submit():
        try:
            return shop.send_email.delay("patient@example.com")
        except QueueFull as full:
            first_hint_s.append(full.retry_after_s)
            raise

    result = client.call_with_backoff(submit, max_attempts=30, max_total_s=300, sleep=sleep)
    assert result.get(timeout=120) == "sent to patient@example.com"
    assert waits_s and waits_s[0] >= first_hint_s[0] >= 1
