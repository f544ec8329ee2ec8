"""arq's ``enqueue_job`` from many coroutines on one event loop, for a bounded time.

    /tmp/arq-venv/bin/python -m bench.harness.arq_submit '<spec as JSON>'

Run from the project's root with a venv that has arq (arq pins redis<6, which the
project's venv cannot hold: ``python -m venv /tmp/arq-venv && /tmp/arq-venv/bin/pip
install arq``). The spec is bench/harness/submit_load.py's (``redis_url``,
``concurrency``, ``warmup_s``, ``duration_s``, ``server_pids``); prints its JSON line.
"""
from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import urlsplit

from bench.harness.submit_counts import Window

QUEUE = "bench_submit"


async def measure(spec: dict) -> dict:
    from arq import create_pool
    from arq.connections import RedisSettings

    url = urlsplit(spec["broker_url"])
    pool = await create_pool(RedisSettings(host=url.hostname, port=url.port or 6379,
                                           database=int(url.path.strip("/") or 0)),
                             default_queue_name=f"arq:{QUEUE}")
    n = spec["concurrency"]
    counts, errors, halt = [0] * n, {}, asyncio.Event()

    async def loop(i: int) -> None:
        while not halt.is_set():
            try:
                await pool.enqueue_job("noop", i)
                counts[i] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and reported by type
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(loop(i)) for i in range(n)]
    window = Window(lambda: sum(counts), spec.get("server_pids", []))
    await asyncio.sleep(spec["warmup_s"])
    window.open()
    await asyncio.sleep(spec["duration_s"])
    out = window.close()
    halt.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pool.aclose()
    return {**out, "errors": errors}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(json.loads(sys.argv[1])))), flush=True)
