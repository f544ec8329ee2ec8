"""Clients that throttle themselves: adaptive throttling and a retry budget, per destination.

The "Handling Overload" chapter of Google's SRE book. A refusal is cheap for the
server, not free: a client that keeps submitting to a queue that keeps refusing
spends the server's time on refusals. So each client keeps, per destination (a
queue, or an HTTP endpoint), over the last ``window_s`` seconds

* ``requests``: the attempts it sent,
* ``accepts``: the attempts the server did not refuse,

and refuses an attempt itself, without a round trip, with probability

    p = max(0, (requests - k * accepts) / (requests + 1))

With ``k = 2`` a server that accepts half of what it is sent is never spared; below
that, the client sends less and less while the server refuses.

The book counts in ``requests`` the attempts refused here as well
(``count_local_refusals=True``). A Floodgate queue at its limit refuses *everything*, so
that count drives p to ``attempts / (attempts + 1)``, a hair under 1, and once the
queue drains the client needs minutes of window turnover to send again (simulated: 7
to 13 minutes after a minute of refusals at 10 attempts a second). Counting what was
sent, the first accepted attempts bring p down within a minute, at the cost of
sending more under partial overload (at 10x the queue's drain: 4.5x the drain
reaches the server instead of the book's 2x; still a tenth of the attempts).

Nothing is refused here until the window holds ``min_requests``: a handful of
refusals says little, and a lone patient caller keeps its turn.

A retry budget bounds what retries add: a retry is sent only while the retries sent
in the window stay within ``retry_ratio`` of everything sent, plus
``retry_allowance`` (so a lone caller may always retry a little).

Counts live in one bucket per second, a ring of ``window_s`` buckets: memory does not
grow with the request rate. Every method is thread-safe.
"""
from __future__ import annotations

import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

#: The window the counts cover, in seconds (the SRE book's two minutes).
WINDOW_S = 120
#: How many times its accepts a client may send before it refuses any itself.
K = 2.0
#: The largest share of what is sent to a destination that may be retries.
RETRY_RATIO = 0.1
#: Retries a window always allows, whatever the ratio.
RETRY_ALLOWANCE = 10
#: Requests the window must hold before any attempt is refused here.
MIN_REQUESTS = 20
#: Destinations the default registry remembers; the least recently used is forgotten.
MAX_DESTINATIONS = 1024

#: `Throttle.decide`'s verdicts.
SEND, THROTTLED, OVER_BUDGET = "send", "throttled", "over budget"

_ATTEMPTS, _ACCEPTS, _SENT, _RETRIES = range(4)


class Counts(NamedTuple):
    """What a throttle counted over its window."""

    attempts: int  # attempts made, refused here or not
    accepts: int   # attempts the server did not refuse
    sent: int      # attempts that went to the server
    retries: int   # of those sent, the retries


def refusal_probability(requests: int, accepts: int, k: float = K) -> float:
    """The SRE book's ``max(0, (requests - k * accepts) / (requests + 1))``; below 1."""
    return max(0.0, (requests - k * accepts) / (requests + 1))


class Throttle:
    """One destination's adaptive throttle and retry budget.

    :param window_s: seconds of history the counts cover (whole seconds, at least 1).
    :param k: sends allowed per accept before refusing here (``k`` ≥ 1; 2 by default).
    :param retry_ratio: the share of sent attempts that may be retries.
    :param retry_allowance: retries a window always allows.
    :param min_requests: requests the window must hold before any attempt is refused here.
    :param count_local_refusals: count the attempts refused here as requests, as the
        SRE book does (fewer sent under overload, much slower recovery); else only
        the attempts sent count.
    :param clock: seconds, monotonic (a test passes a fake).
    :param rng: uniform on [0, 1) (a test passes a fake).
    """

    def __init__(self, window_s: int = WINDOW_S, k: float = K, retry_ratio: float = RETRY_RATIO,
                 retry_allowance: int = RETRY_ALLOWANCE, min_requests: int = MIN_REQUESTS,
                 count_local_refusals: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        if window_s < 1 or k < 1 or not 0 <= retry_ratio <= 1 or retry_allowance < 0:
            raise ValueError(f"Throttle(window_s={window_s}, k={k}, retry_ratio={retry_ratio}, "
                             f"retry_allowance={retry_allowance}): need window_s >= 1, k >= 1, "
                             "0 <= retry_ratio <= 1 and retry_allowance >= 0")
        self.window_s, self.k = int(window_s), k
        self.retry_ratio, self.retry_allowance = retry_ratio, retry_allowance
        self.min_requests, self.count_local_refusals = min_requests, count_local_refusals
        self._clock, self._rng = clock, rng
        self._buckets = [[0, 0, 0, 0] for _ in range(self.window_s)]
        self._totals = [0, 0, 0, 0]
        self._second: int | None = None
        self._hint_until: float | None = None
        self._last_refusal: object = None
        self._lock = threading.Lock()

    def decide(self, retry: bool = False) -> str:
        """Whether to send this attempt: `SEND`, `THROTTLED` (refuse it here) or
        `OVER_BUDGET` (a retry past the budget: do not make it at all).

        Counts the attempt, except one over budget; one sent must then be `record`-ed.
        """
        with self._lock:
            now = self._advance()
            if retry and not self._within_budget():
                return OVER_BUDGET
            p = self._probability()
            self._add(now, _ATTEMPTS)
            if p and self._rng() < p:
                return THROTTLED
            self._add(now, _SENT)
            if retry:
                self._add(now, _RETRIES)
            return SEND

    def record(self, accepted: bool, retry_after_s: float | None = None,
               refusal: object = None) -> None:
        """A sent attempt's outcome: ``accepted`` unless the server refused it.

        :param retry_after_s: the server's Retry-After with a refusal; a local refusal
            waits for what remains of it.
        :param refusal: the server's refusal, kept as `last_refusal`.
        """
        with self._lock:
            now = self._advance()
            if accepted:
                self._add(now, _ACCEPTS)
                return
            self._last_refusal = refusal
            if retry_after_s:
                self._hint_until = self._clock() + retry_after_s

    def may_retry(self) -> bool:
        """Whether a retry now would be within the budget (`decide` counts it; this does not)."""
        with self._lock:
            self._advance()
            return self._within_budget()

    def probability(self) -> float:
        """The probability that an attempt now is refused here."""
        with self._lock:
            self._advance()
            return self._probability()

    def counts(self) -> Counts:
        """The window's counts."""
        with self._lock:
            self._advance()
            return Counts(*self._totals)

    def retry_after_s(self) -> int:
        """Whole seconds a local refusal asks to wait: what remains of the server's last
        Retry-After, else 1."""
        with self._lock:
            left_s = (self._hint_until or 0) - self._clock()
        return max(1, math.ceil(left_s))

    @property
    def last_refusal(self) -> object:
        """The server's last refusal recorded (a local refusal is shaped like it)."""
        return self._last_refusal

    def _probability(self) -> float:
        requests = self._totals[_ATTEMPTS if self.count_local_refusals else _SENT]
        accepts = self._totals[_ACCEPTS]
        if requests < self.min_requests:
            return 0.0
        return refusal_probability(requests, accepts, self.k)

    def _within_budget(self) -> bool:
        sent, retries = self._totals[_SENT], self._totals[_RETRIES]
        return retries + 1 <= self.retry_ratio * (sent + 1) + self.retry_allowance

    def _advance(self) -> int:
        """Empty the buckets of the seconds that left the window; return this second."""
        now = math.floor(self._clock())
        last = self._second
        if last is None or now - last >= self.window_s:
            self._buckets = [[0, 0, 0, 0] for _ in range(self.window_s)]
            self._totals = [0, 0, 0, 0]
        elif now > last:
            for second in range(last + 1, now + 1):
                bucket = self._buckets[second % self.window_s]
                for field in range(4):
                    self._totals[field] -= bucket[field]
                    bucket[field] = 0
        if last is not None and now < last:  # a clock stepped back: count in the newest
            return last
        self._second = now
        return now

    def _add(self, second: int, field: int) -> None:
        self._buckets[second % self.window_s][field] += 1
        self._totals[field] += 1


class Throttles:
    """Throttles by destination, created on first use; thread-safe.

    :param max_destinations: how many it keeps; the least recently used is forgotten.
    :param make: builds a destination's throttle (a test passes one with a fake clock).
    """

    def __init__(self, max_destinations: int = MAX_DESTINATIONS,
                 make: Callable[[], Throttle] = Throttle) -> None:
        self.max_destinations, self._make = max_destinations, make
        self._throttles: OrderedDict[str, Throttle] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, destination: str) -> Throttle:
        """The throttle of ``destination`` (a queue's name, or an endpoint's URL)."""
        with self._lock:
            throttle = self._throttles.get(destination)
            if throttle is None:
                throttle = self._throttles[destination] = self._make()
                while len(self._throttles) > self.max_destinations:
                    self._throttles.popitem(last=False)
            else:
                self._throttles.move_to_end(destination)
            return throttle

    def clear(self) -> None:
        """Forget every destination's counts."""
        with self._lock:
            self._throttles.clear()

    def __len__(self) -> int:
        return len(self._throttles)

    def __contains__(self, destination: object) -> bool:
        return destination in self._throttles


THROTTLES = Throttles()
"""The registry `call_with_backoff` and `post_with_backoff` use unless told otherwise."""
