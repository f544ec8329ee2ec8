"""Dependency checks: fresh for ``/healthz/details``, cached for the public ``/healthz``.

Each check is bounded to about a second; on RabbitMQ the broker check makes a
confirmed publish. The public route reuses one result for HEALTH_CACHE_S per process
(:class:`CachedChecks`), so polling it, however often, runs the checks at most once
per that time; ``floodgate_health_checks_total`` counts the runs.
"""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from amqp import Message
from prometheus_client import Counter
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from config import app
from config.settings import get_settings
from tasks.demo.db import engine

TIMEOUT_S = 1.0
_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="healthz")
CHECK_RUNS = Counter("floodgate_health_checks", "Runs of the dependency checks (each checks "
                     "every dependency once), by the route that ran them", ["route"])
ROUTES = ("/healthz", "/healthz/details")
for _route in ROUTES:  # exported as 0 from the start
    CHECK_RUNS.labels(_route)


def _broker() -> None:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT_S)
        if conn.transport.driver_type == "amqp":
            _confirmed_ping(conn)


def _confirmed_ping(conn) -> None:
    """A blocked RabbitMQ (memory or disk alarm) still accepts connections; only a
    confirmed publish shows it takes messages. The unroutable ping is discarded."""
    channel = conn.channel()
    try:
        channel.basic_publish_confirm(Message(b"", delivery_mode=1), exchange="",
                                      routing_key="floodgate.healthz", confirm_timeout=TIMEOUT_S)
    except Exception:
        conn.connection.collect()
        raise
    channel.close()


def _result_backend() -> None:
    backend = app.backend
    client = getattr(backend, "client", None)
    if client is not None and hasattr(client, "ping"):
        client.ping()


def _database() -> None:
    with engine().connect() as conn:
        conn.execute(text("SELECT 1"))


CHECKS = {"broker": _broker, "result_backend": _result_backend, "database": _database}


def checks() -> dict[str, str]:
    """Each dependency's state: ``ok``, or ``down: <exception type>`` (never its message,
    which may name hosts and users)."""
    futures = {name: _pool.submit(fn) for name, fn in CHECKS.items()}
    results = {}
    for name, future in futures.items():
        try:
            future.result(timeout=TIMEOUT_S * 2)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means down
            results[name] = f"down: {type(exc).__name__}"
    return results


def run_checks(route: str) -> dict[str, str]:
    """:func:`checks`, counted in ``floodgate_health_checks_total{route=...}``."""
    CHECK_RUNS.labels(route).inc()
    return checks()


def down(results: dict[str, str]) -> list[str]:
    return sorted(name for name, state in results.items() if state != "ok")


class CachedChecks:
    """The latest results of ``run``, reused for ``max_age_s``.

    Single flight: callers that find the result stale while a refresh runs wait for
    that refresh instead of starting their own.
    """

    def __init__(self, run: Callable[[], dict[str, str]], max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run, self.max_age_s, self.clock = run, max_age_s, clock
        self._result: dict[str, str] | None = None
        self._taken_at = 0.0
        self._refresh: asyncio.Future | None = None

    async def get(self) -> dict[str, str]:
        if self._result is not None and self.clock() - self._taken_at < self.max_age_s:
            return self._result
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh.get_loop() is not loop:
            self._refresh = loop.create_task(self._refreshed())
        # Shielded: a caller that goes away does not cancel the others' refresh.
        return await asyncio.shield(self._refresh)

    async def _refreshed(self) -> dict[str, str]:
        try:
            result = await run_in_threadpool(self.run)
            self._result, self._taken_at = result, self.clock()
            return result
        finally:
            self._refresh = None


@functools.cache
def public_checks() -> CachedChecks:
    """This process's cache for ``GET /healthz``."""
    return CachedChecks(functools.partial(run_checks, "/healthz"), get_settings().health_cache_s)
