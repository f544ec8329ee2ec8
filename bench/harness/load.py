"""Load generators and samplers that run inside a phase driver."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from celery_floodgate import QueueFull


class Sampler(threading.Thread):
    """Every ``interval_s``, record (t, *probe values) until stopped."""

    def __init__(self, probes: dict[str, Callable[[], float | None]], interval_s: float = 0.25):
        super().__init__(daemon=True, name="sampler")
        self.probes, self.interval_s = probes, interval_s
        self.rows: list[dict] = []
        self._halt = threading.Event()

    def run(self) -> None:
        next_t = time.time()
        while not self._halt.is_set():
            row = {"t": time.time()}
            for name, probe in self.probes.items():
                try:
                    row[name] = probe()
                except Exception:  # noqa: BLE001 - a missed sample is a gap, not a crash
                    row[name] = None
            self.rows.append(row)
            next_t += self.interval_s
            self._halt.wait(max(0.0, next_t - time.time()))

    def stop(self) -> list[dict]:
        self._halt.set()
        self.join()
        return self.rows


class OpenLoop:
    """Offer ``rate`` submissions/s for ``duration_s`` whatever happens; refusals are dropped."""

    def __init__(self, submit: Callable[[], str], rate: float, duration_s: float,
                 threads: int = 3) -> None:
        self.submit, self.rate, self.duration_s, self.threads = submit, rate, duration_s, threads
        self.accepted: list[tuple[str, float]] = []
        self.refused: list[float] = []
        self.errors = 0
        self.behind_s = 0.0
        self._lock = threading.Lock()

    def run(self, t0: float | None = None) -> None:
        t0 = t0 or time.time()
        workers = [threading.Thread(target=self._lane, args=(t0, k), daemon=True)
                   for k in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _lane(self, t0: float, lane: int) -> None:
        total = int(self.rate * self.duration_s)
        for i in range(lane, total, self.threads):
            due = t0 + i / self.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            self._one(due)

    def _one(self, due: float) -> None:
        t = time.time()
        try:
            task_id = self.submit()
        except QueueFull:
            with self._lock:
                self.refused.append(t)
            return
        except Exception:  # noqa: BLE001 - counted, reported
            with self._lock:
                self.errors += 1
            return
        with self._lock:
            self.accepted.append((task_id, t))
            self.behind_s = max(self.behind_s, t - due)

    @property
    def offered(self) -> int:
        return len(self.accepted) + len(self.refused) + self.errors
