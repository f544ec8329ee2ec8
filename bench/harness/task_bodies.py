"""The bench tasks, registered on any app (Floodgate's or the plain one) under the same names.

Each run records ``id sent_at start end`` in Redis db 10, so the driver can
compute wait-to-start (start - fg_sent_at) and worker busy time.
"""
from __future__ import annotations

import functools
import os
import socket
import time

import redis

RUNS_KEY = "bench:runs"
EDGES_KEY = "bench:edges"
PROBE_KEY = "bench:probe"
SENT_AT = "fg_sent_at"


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


def sent_at(request) -> float | None:
    value = request.get(SENT_AT) or (request.headers or {}).get(SENT_AT)
    return float(value) if value else None


def record_run(request, start: float, end: float) -> None:
    line = f"{request.id} {sent_at(request) or 0:.6f} {start:.6f} {end:.6f} {socket.gethostname()}"
    _client().rpush(RUNS_KEY, line)


def register(app) -> dict:
    """Define bench.sleep, bench.noop and bench.probe on ``app``."""

    @app.task(name="bench.sleep", bind=True, ignore_result=True)
    def sleep(self, ms: float) -> None:
        start = time.time()
        time.sleep(ms / 1000)
        record_run(self.request, start, time.time())

    @app.task(name="bench.noop", bind=True, ignore_result=True)
    def noop(self, i: int, n: int, edge: int) -> None:
        """Does nothing; the first and last ``edge`` of ``n`` record when they ran."""
        if i < edge or i >= n - edge:
            now = time.time()
            _client().rpush(EDGES_KEY, f"{i} {now:.6f}")

    @app.task(name="bench.probe", ignore_result=True)
    def probe(token: str) -> None:
        _client().rpush(PROBE_KEY, token)

    return {"sleep": sleep, "noop": noop, "probe": probe}
