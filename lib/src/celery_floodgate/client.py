"""Submitting from a service: exponential backoff with full jitter, honouring Retry-After.

    from celery_floodgate.client import call_with_backoff
    result = call_with_backoff(lambda: fanout_post.delay(job_id, post_id))

A refusal tells the caller when the queue will have room (``retry_after_s``, or
the HTTP ``Retry-After`` header); the helper never comes back sooner than that,
and otherwise backs off exponentially with full jitter. Both the number of
attempts and the total time are bounded (no sleep runs past ``max_total_s``);
the last refusal is re-raised.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar, Unpack

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from celery_floodgate.errors import BackpressureError, BrokerUnavailable, QueueFull

__all__ = ["ServerBusy", "call_with_backoff", "post_with_backoff"]

T = TypeVar("T")


class ServerBusy(BackpressureError):
    """An HTTP 503 from an API that refused a submission, with its ``Retry-After``.

    :param response: the 503 response; ``retry_after_s`` is read from its
        ``Retry-After`` header (seconds; 1 if absent or not a number).
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_after_s = _retry_after(response)
        super().__init__(f"server busy (503); retry in {self.retry_after_s} s")


_RETRYABLE = (QueueFull, BrokerUnavailable, ServerBusy)


class Bounds(TypedDict, total=False):
    """`call_with_backoff`'s keyword arguments, as `post_with_backoff` takes them."""

    max_attempts: int
    max_total_s: float
    base_s: float
    cap_s: float
    hint_jitter: float
    sleep: Callable[[float], None]


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class _HonourRetryAfter:
    """Wait max(server's hint + a little jitter, full-jitter exponential backoff)."""

    def __init__(self, base_s: float, cap_s: float, hint_jitter: float) -> None:
        self.base_s, self.cap_s, self.hint_jitter = base_s, cap_s, hint_jitter

    def __call__(self, state: RetryCallState) -> float:
        backoff = random.uniform(0, min(self.cap_s, self.base_s * 2 ** (state.attempt_number - 1)))
        exc = state.outcome.exception() if state.outcome else None
        hint = getattr(exc, "retry_after_s", 0) or 0
        return max(backoff, hint * (1 + random.uniform(0, self.hint_jitter)))


def call_with_backoff(fn: Callable[[], T], *, max_attempts: int = 6, max_total_s: float = 120.0,
                      base_s: float = 0.2, cap_s: float = 30.0, hint_jitter: float = 0.2,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn`` until it is admitted, within the bounds; re-raise the last refusal.

    Retries `celery_floodgate.QueueFull`,
    `celery_floodgate.BrokerUnavailable` and `ServerBusy`, never
    sooner than their ``retry_after_s`` (plus up to ``hint_jitter`` of it), else
    after a full-jitter exponential backoff. Any other exception propagates at once.

    :param fn: the submission, e.g. ``lambda: task.delay(x)``.
    :param max_attempts: calls at most, the first included.
    :param max_total_s: give up rather than sleep past this many seconds in all.
    :param base_s: the first backoff's upper bound; doubled per attempt.
    :param cap_s: the largest backoff's upper bound.
    :param hint_jitter: a fraction of the server's wait added at random, so
        refused callers do not all come back at once.
    :param sleep: how to wait (a test passes a fake).
    :returns: what ``fn`` returned once it was admitted.
    :raises QueueFull: (or the other refusals) the last refusal, once the bounds are spent.
    """
    retrying = Retrying(
        retry=retry_if_exception_type(_RETRYABLE),
        # stop_before_delay: give up rather than sleep past max_total_s (a 60 s hint
        # against a 30 s bound fails now, not after 60 s).
        stop=stop_after_attempt(max_attempts) | stop_before_delay(max_total_s),
        wait=_HonourRetryAfter(base_s, cap_s, hint_jitter),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


def post_with_backoff(client: httpx.Client, url: str, json: Any,
                      **bounds: Unpack[Bounds]) -> httpx.Response:
    """POST ``json`` to ``url``, retrying 503s as the server's ``Retry-After`` asks.

    :param client: the httpx client to post with.
    :param url: where to post.
    :param json: the body, encoded as JSON.
    :param bounds: `call_with_backoff`'s keyword arguments (``max_attempts``...).
    :returns: the first answer that is not a 503 (2xx or other errors alike), or
        the last 503 once the bounds are spent.
    :raises httpx.HTTPError: when the request itself fails (not retried).
    """

    def attempt() -> httpx.Response:
        response = client.post(url, json=json)
        if response.status_code == 503:
            raise ServerBusy(response)
        return response

    try:
        return call_with_backoff(attempt, **bounds)
    except ServerBusy as busy:
        return busy.response
