"""Helpers for a phase driver process: the apps, readiness, and the tasks' records."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from bench.harness.broker import redis_client
from bench.harness.task_bodies import EDGES_KEY, PROBE_KEY, RUNS_KEY


def floodgate_app():
    """Floodgate's app (its guarded transport stamps fg_sent_at) with the bench tasks."""
    from bench.harness.tasks import app

    return app


def wait_ready(app, queue: str, timeout_s: float = 60) -> float:
    """Send a probe to ``queue`` and wait until a worker ran it; returns seconds waited."""
    token = uuid.uuid4().hex
    start = time.monotonic()
    app.send_task("bench.probe", args=(token,), queue=queue, ignore_result=True)
    client = redis_client()
    while time.monotonic() - start < timeout_s:
        if token.encode() in client.lrange(PROBE_KEY, 0, -1):
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"no worker ran a probe on {queue!r} within {timeout_s} s")


@dataclass(frozen=True)
class Run:
    id: str
    sent: float
    start: float
    end: float
    host: str

    @property
    def wait(self) -> float:
        return self.start - self.sent


def read_runs(clear: bool = False) -> list[Run]:
    client = redis_client()
    raw = client.lrange(RUNS_KEY, 0, -1)
    if clear:
        client.delete(RUNS_KEY)
    out = []
    for line in raw:
        tid, sent, start, end, host = line.decode().split(" ", 4)
        out.append(Run(tid, float(sent), float(start), float(end), host))
    return out


def clear_runs() -> None:
    redis_client().delete(RUNS_KEY, EDGES_KEY)


def read_edges() -> dict[int, float]:
    return {int(i): float(t) for i, t in (l.decode().split() for l in
                                          redis_client().lrange(EDGES_KEY, 0, -1))}


def prefill(app, queue: str, name: str, args_for, n: int, threads: int = 4) -> float:
    """Publish ``n`` tasks from a few threads; returns seconds taken."""
    from concurrent.futures import ThreadPoolExecutor

    def lane(k: int) -> None:
        for i in range(k, n, threads):
            app.send_task(name, args=args_for(i), queue=queue, ignore_result=True)

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lane, range(threads)))
    return time.monotonic() - start
