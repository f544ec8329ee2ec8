"""A population of clients that obey Retry-After through celery_floodgate.call_with_backoff.

Each client is a thread that loops: think, then submit one job with
``call_with_backoff`` (bounded by ``max_attempts`` and ``max_total_s``).
With ``n`` clients and mean think time ``think_s`` the unthrottled offered
load is ``n / think_s``; the population is sized so that is 3x capacity.
Sleeps are tracked (how many clients are waiting on a Retry-After right now)
and interruptible when the run ends.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from celery_floodgate.client import call_with_backoff
from celery_floodgate import QueueFull


class RunOver(Exception):
    """Raised inside a client when the run ends; not retryable, ends the client."""


@dataclass
class Tally:
    accepted: list = field(default_factory=list)   # (task_id, t_first_try, t_accepted, attempts)
    gave_up: list = field(default_factory=list)    # (t_first_try, t_gave_up, attempts)
    attempts: int = 0
    first_attempts: int = 0                        # jobs that made at least one attempt
    hints: list = field(default_factory=list)      # (t, retry_after_s)
    sleeps: list = field(default_factory=list)     # seconds actually asked to sleep
    in_flight_at_end: int = 0


class Population:
    def __init__(self, send, n: int, think_s: float, max_attempts: int, max_total_s: float):
        self.send, self.n, self.think_s = send, n, think_s
        self.bounds = {"max_attempts": max_attempts, "max_total_s": max_total_s}
        self.tally = Tally()
        self.waiting = 0
        self._lock = threading.Lock()
        self._over = threading.Event()

    def run(self, duration_s: float) -> None:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.n)]
        for t in threads:
            t.start()
        self._over.wait(duration_s)
        self._over.set()
        for t in threads:
            t.join(10)

    def _client(self) -> None:
        while not self._over.is_set():
            if self._over.wait(random.uniform(0.5, 1.5) * self.think_s):
                return
            self._one_job()

    def _one_job(self) -> None:
        first, tries = time.time(), [0]
        try:
            task_id = call_with_backoff(lambda: self._attempt(tries), sleep=self._sleep,
                                        **self.bounds)
        except QueueFull:
            with self._lock:
                self.tally.gave_up.append((first, time.time(), tries[0]))
        except RunOver:
            with self._lock:
                self.tally.in_flight_at_end += 1
        else:
            with self._lock:
                self.tally.accepted.append((task_id, first, time.time(), tries[0]))

    def _attempt(self, tries: list) -> str:
        if self._over.is_set():
            raise RunOver()
        tries[0] += 1
        with self._lock:
            self.tally.attempts += 1
            self.tally.first_attempts += tries[0] == 1
        try:
            return self.send()
        except QueueFull as full:
            with self._lock:
                self.tally.hints.append((time.time(), full.retry_after_s))
            raise

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            self.waiting += 1
            self.tally.sleeps.append(seconds)
        try:
            self._over.wait(seconds)
        finally:
            with self._lock:
                self.waiting -= 1
