"""Submitting from a service: exponential backoff with full jitter, honouring Retry-After,
and a client that throttles itself when a destination keeps refusing.

    from celery_floodgate.client import call_with_backoff
    result = call_with_backoff(lambda: fanout_post.delay(job_id, post_id),
                               destination="fanout")

A refusal tells the caller when the queue will have room (``retry_after_s``, or
the HTTP ``Retry-After`` header); the helper never comes back sooner than that,
and otherwise backs off exponentially with full jitter. Both the number of
attempts and the total time are bounded (no sleep runs past ``max_total_s``);
the last refusal is re-raised.

Each attempt first asks the destination's `Throttle`
(`celery_floodgate.throttle`): while the destination refuses most of what this
process sends, the attempt is refused here, at no round trip, raising
`QueueFullLocally` / `ServerBusyLocally` (a `QueueFull` / `ServerBusy` as the
server would have); and a retry past the retry budget is not made at all (the last
refusal is raised). ``throttle=None`` turns both off.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Literal, NoReturn, TypedDict, TypeVar, Unpack

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

from celery_floodgate.errors import BackpressureError, BrokerUnavailable, QueueFull
from celery_floodgate.throttle import OVER_BUDGET, THROTTLED, THROTTLES, Throttle, Throttles

__all__ = ["QueueFullLocally", "ServerBusy", "ServerBusyLocally", "Throttle",
           "ThrottledLocally", "Throttles", "call_with_backoff", "destination_of",
           "post_with_backoff"]

T = TypeVar("T")

#: ``throttle=`` for "the default registry's throttle of ``destination``".
DEFAULT: Literal["default"] = "default"


class ServerBusy(BackpressureError):
    """An HTTP 503 from an API that refused a submission, with its ``Retry-After``.

    :param response: the 503 response; ``retry_after_s`` is read from its
        ``Retry-After`` header (seconds; 1 if absent or not a number).
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.retry_after_s = _retry_after(response)
        super().__init__(f"server busy (503); retry in {self.retry_after_s} s")


class ThrottledLocally(BackpressureError):
    """Refused by this client's own throttle, not by the server: nothing was sent.

    The destination refused most of what this process sent it lately, so this
    attempt was refused here, at no round trip (see `celery_floodgate.throttle`).
    Retry after ``retry_after_s``, or pass ``throttle=None`` to turn it off.
    """


class QueueFullLocally(ThrottledLocally, QueueFull):
    """A `QueueFull` raised by this client's throttle; the data is the queue's last refusal's.

    Takes `QueueFull`'s arguments; ``depth`` and ``limit`` are 0 when the queue
    never said them.
    """

    def __init__(self, queue: str, depth: int, limit: int, retry_after_s: int,
                 reason: str = "full", tenant: str | None = None,
                 criticality: str | None = None, share: int = 0) -> None:
        super().__init__(queue, depth, limit, retry_after_s, reason, tenant, criticality, share)
        seen = f" (last seen {depth}/{limit})" if limit else ""
        self.message = (f"not sent: queue {queue!r} refused most of this client's recent "
                        f"submissions{seen}, so the client refused this one itself; retry in "
                        f"{retry_after_s} s, or pass throttle=None to turn self-throttling off")


class ServerBusyLocally(ThrottledLocally, ServerBusy):
    """A `ServerBusy` raised by this client's throttle: ``response`` is a 503 made here.

    :param response: the 503 the client made, with the ``Retry-After`` it asks for.
    """

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response)
        self.message = (f"not sent: {response.request.url} answered 503 to most of this "
                        "client's recent requests, so the client refused this one itself; "
                        f"retry in {self.retry_after_s} s, or pass throttle=None to turn "
                        "self-throttling off")


_RETRYABLE = (QueueFull, BrokerUnavailable, ServerBusy)
#: Outcomes that are no accept: the server refused, or never answered.
_NOT_ACCEPTED = (*_RETRYABLE, httpx.TransportError)


class Bounds(TypedDict, total=False):
    """`call_with_backoff`'s keyword arguments, as `post_with_backoff` takes them."""

    max_attempts: int
    max_total_s: float
    base_s: float
    cap_s: float
    hint_jitter: float
    sleep: Callable[[float], None]
    throttle: Throttle | None | Literal["default"]
    destination: str | None


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


class _OverBudget(Exception):
    """A retry ``throttle``'s budget does not allow: ends the retrying with ``refusal``."""

    def __init__(self, refusal: BaseException, throttle: Throttle) -> None:
        self.refusal, self.throttle = refusal, throttle

    def reraise(self) -> NoReturn:
        self.refusal.add_note(
            f"not retried: this client's retry budget for the destination is spent (retries "
            f"at most {self.throttle.retry_ratio:.0%} of what it sends, plus "
            f"{self.throttle.retry_allowance} a window); pass throttle=None to retry anyway")
        raise self.refusal


class _Throttled:
    """``fn``, each attempt first asked of ``throttle``, its outcome recorded there."""

    def __init__(self, fn: Callable[[], T], throttle: Throttle,
                 refuse_locally: Callable[[Throttle], BaseException]) -> None:
        self.fn, self.throttle, self.refuse_locally = fn, throttle, refuse_locally
        self.refused: BaseException | None = None  # the server's last refusal in this call

    def __call__(self) -> Any:
        verdict = self.throttle.decide(retry=self.refused is not None)
        if verdict == OVER_BUDGET:
            raise _OverBudget(self.refused, self.throttle)  # type: ignore[arg-type]
        if verdict == THROTTLED:
            raise self.refuse_locally(self.throttle)
        try:
            result = self.fn()
        except _NOT_ACCEPTED as refused:
            self.refused = refused
            self.throttle.record(False, getattr(refused, "retry_after_s", None), refused)
            if isinstance(refused, _RETRYABLE) and not self.throttle.may_retry():
                raise _OverBudget(refused, self.throttle) from None  # and wait for nothing
            raise
        except Exception:
            self.throttle.record(True)  # answered: an error, but not back pressure
            raise
        self.throttle.record(True)
        return result


def _queue_refused_locally(queue: str) -> Callable[[Throttle], QueueFullLocally]:
    def refusal(throttle: Throttle) -> QueueFullLocally:
        last = throttle.last_refusal
        if isinstance(last, QueueFull):
            return QueueFullLocally(last.queue, last.depth, last.limit, throttle.retry_after_s(),
                                    last.reason, last.tenant, last.criticality, last.share)
        return QueueFullLocally(queue, 0, 0, throttle.retry_after_s())
    return refusal


def _resolve(throttle: Throttle | None | Literal["default"],
             destination: str | None) -> Throttle | None:
    if throttle == DEFAULT:
        return THROTTLES.get(destination) if destination is not None else None
    return throttle


def call_with_backoff(fn: Callable[[], T], *, max_attempts: int = 6, max_total_s: float = 120.0,
                      base_s: float = 0.2, cap_s: float = 30.0, hint_jitter: float = 0.2,
                      sleep: Callable[[float], None] = time.sleep,
                      throttle: Throttle | None | Literal["default"] = DEFAULT,
                      destination: str | None = None) -> T:
    """Call ``fn`` until it is admitted, within the bounds; re-raise the last refusal.

    Retries `celery_floodgate.QueueFull`,
    `celery_floodgate.BrokerUnavailable` and `ServerBusy`, never
    sooner than their ``retry_after_s`` (plus up to ``hint_jitter`` of it), else
    after a full-jitter exponential backoff. Any other exception propagates at once.

    With a throttle, each attempt is first asked of it: one it refuses raises
    `QueueFullLocally` (retried like any refusal; it counts as an attempt), and a
    retry past its retry budget is not made (the server's last refusal is raised).

    :param fn: the submission, e.g. ``lambda: task.delay(x)``.
    :param max_attempts: calls at most, the first included.
    :param max_total_s: give up rather than sleep past this many seconds in all.
    :param base_s: the first backoff's upper bound; doubled per attempt.
    :param cap_s: the largest backoff's upper bound.
    :param hint_jitter: a fraction of the server's wait added at random, so
        refused callers do not all come back at once.
    :param sleep: how to wait (a test passes a fake).
    :param throttle: the `Throttle` to ask; by default `THROTTLES`' throttle of
        ``destination`` (none without a destination); ``None`` turns throttling off.
    :param destination: what ``fn`` submits to, e.g. its queue's name.
    :returns: what ``fn`` returned once it was admitted.
    :raises QueueFull: (or the other refusals) the last refusal, once the bounds are spent.
    """
    gate = _resolve(throttle, destination)
    if gate is not None:
        fn = _Throttled(fn, gate, _queue_refused_locally(destination or ""))
    retrying = Retrying(
        retry=retry_if_exception_type(_RETRYABLE),
        # stop_before_delay: give up rather than sleep past max_total_s (a 60 s hint
        # against a 30 s bound fails now, not after 60 s).
        stop=stop_after_attempt(max_attempts) | stop_before_delay(max_total_s),
        wait=_HonourRetryAfter(base_s, cap_s, hint_jitter),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except _OverBudget as over:
        over.reraise()


def destination_of(client: Any, url: str) -> str:
    """An HTTP destination: scheme, host, port and path of ``url`` resolved against
    ``client``'s ``base_url`` (the query is not part of it)."""
    if hasattr(client, "build_request"):
        full = client.build_request("POST", url).url
    else:
        full = httpx.URL(url)
    port = full.port or {"http": 80, "https": 443}.get(full.scheme, 0)
    return f"{full.scheme}://{full.host}:{port}{full.path}"


def post_with_backoff(client: httpx.Client, url: str, json: Any,
                      **bounds: Unpack[Bounds]) -> httpx.Response:
    """POST ``json`` to ``url``, retrying 503s as the server's ``Retry-After`` asks.

    Throttled per destination (scheme, host, port and path; see `destination_of`)
    unless ``throttle=None``: a 503 counts as a request without an accept, and an
    attempt the throttle refuses is not sent.

    :param client: the httpx client to post with.
    :param url: where to post.
    :param json: the body, encoded as JSON.
    :param bounds: `call_with_backoff`'s keyword arguments (``max_attempts``...).
    :returns: the first answer that is not a 503 (2xx or other errors alike), or
        the last 503 once the bounds are spent; when the throttle refused that last
        attempt, a 503 made here (its error, `ServerBusyLocally`, is in ``.extensions``
        under ``"floodgate_throttled"``).
    :raises httpx.HTTPError: when the request itself fails (not retried).
    """
    destination = bounds.get("destination") or destination_of(client, url)
    gate = _resolve(bounds.get("throttle", DEFAULT), destination)
    bounds["throttle"] = None  # the attempt itself asks the gate

    def attempt() -> httpx.Response:
        response = client.post(url, json=json)
        if response.status_code == 503:
            raise ServerBusy(response)
        return response

    def refuse_locally(throttle: Throttle) -> ServerBusyLocally:
        request = httpx.Request("POST", destination)
        made = httpx.Response(503, headers={"Retry-After": str(throttle.retry_after_s())},
                              request=request)
        busy = ServerBusyLocally(made)
        made.extensions["floodgate_throttled"] = busy
        return busy

    if gate is not None:
        attempt = _Throttled(attempt, gate, refuse_locally)
    try:
        return call_with_backoff(attempt, **bounds)
    except ServerBusy as busy:
        return busy.response
