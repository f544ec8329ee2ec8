"""The public /healthz reuses its checks (api/health.py CachedChecks): polling it costs
one run of the checks per HEALTH_CACHE_S, and callers arriving together share one run."""
from __future__ import annotations

import asyncio
import threading
import time

from api.health import CachedChecks


class CountingChecks:
    """A fake run of the checks that counts its calls and takes ``duration_s``."""

    def __init__(self, duration_s: float = 0.0) -> None:
        self.runs = 0
        self.duration_s = duration_s
        self.result = {"broker": "ok", "result_backend": "ok", "database": "ok"}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self._lock:
            self.runs += 1
        time.sleep(self.duration_s)
        return dict(self.result)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fifty_calls_within_the_cache_window_run_the_checks_once():
    checks, clock = CountingChecks(), Clock()
    cached = CachedChecks(checks, max_age_s=5, clock=clock)

    async def poll():
        for _ in range(50):
            assert (await cached.get())["broker"] == "ok"
            clock.now += 0.09  # 50 calls over 4.5 s

    asyncio.run(poll())
    assert checks.runs == 1


def test_a_stale_result_is_refreshed_and_the_new_state_is_shown():
    checks, clock = CountingChecks(), Clock()
    cached = CachedChecks(checks, max_age_s=5, clock=clock)

    async def scenario():
        assert (await cached.get())["broker"] == "ok"
        checks.result["broker"] = "down: ConnectionRefusedError"
        clock.now += 4.9
        assert (await cached.get())["broker"] == "ok"  # still within the window
        clock.now += 0.2
        assert (await cached.get())["broker"] == "down: ConnectionRefusedError"

    asyncio.run(scenario())
    assert checks.runs == 2


def test_callers_arriving_together_share_one_run():
    checks = CountingChecks(duration_s=0.2)
    cached = CachedChecks(checks, max_age_s=5)

    async def burst():
        return await asyncio.gather(*(cached.get() for _ in range(30)))

    results = asyncio.run(burst())
    assert checks.runs == 1
    assert all(r == results[0] for r in results)


def test_a_caller_that_goes_away_leaves_the_run_to_the_others():
    checks = CountingChecks(duration_s=0.2)
    cached = CachedChecks(checks, max_age_s=5)

    async def scenario():
        first = asyncio.ensure_future(cached.get())
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(cached.get())
        first.cancel()  # e.g. its client disconnected
        assert (await second)["database"] == "ok"

    asyncio.run(scenario())
    assert checks.runs == 1


def test_a_failed_run_is_not_cached_and_the_next_call_tries_again():
    clock = Clock()
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("thread pool gone")
        return {"broker": "ok"}

    cached = CachedChecks(flaky, max_age_s=5, clock=clock)

    async def scenario():
        try:
            await cached.get()
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failure was swallowed")
        assert await cached.get() == {"broker": "ok"}

    asyncio.run(scenario())
    assert len(calls) == 2
