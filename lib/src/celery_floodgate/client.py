"""Submitting from a service: exponential backoff with full jitter, honouring Retry-After.

    from celery_floodgate import call_with_backoff
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
from typing import TypeVar

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from celery_floodgate.errors import BackpressureError, BrokerUnavailable, QueueFull

T = TypeVar("T")


class ServerBusy(BackpressureError):
    """An HTTP 503 from Floodgate's API, with its Retry-After."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_after_s = _retry_after(response)
        super().__init__(f"server busy (503); retry in {self.retry_after_s} s")


RETRYABLE = (QueueFull, BrokerUnavailable, ServerBusy)


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


class HonourRetryAfter:
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
    """Call ``fn`` until it is admitted, within the bounds; re-raise the last refusal."""
    retrying = Retrying(
        retry=retry_if_exception_type(RETRYABLE),
        # stop_before_delay: give up rather than sleep past max_total_s (a 60 s hint
        # against a 30 s bound fails now, not after 60 s).
        stop=stop_after_attempt(max_attempts) | stop_before_delay(max_total_s),
        wait=HonourRetryAfter(base_s, cap_s, hint_jitter),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


def post_with_backoff(client: httpx.Client, url: str, json: dict, **bounds) -> httpx.Response:
    """POST to Floodgate's API, retrying 503s as the server asks; other answers return."""

    def attempt() -> httpx.Response:
        response = client.post(url, json=json)
        if response.status_code == 503:
            raise ServerBusy(response)
        return response

    try:
        return call_with_backoff(attempt, **bounds)
    except ServerBusy as busy:
        return busy.response
