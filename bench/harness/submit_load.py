"""One process, many concurrent submitters of one system, for a bounded time (bench (submit)).

    python -m bench.harness.submit_load '<spec as JSON>'

The spec: ``system`` (``submit_async``: coroutines on one event loop awaiting
``celery_floodgate.aio.submit_async``; ``delay_threads``: threads calling ``.delay()`` on
a Floodgate-guarded Celery app; ``dramatiq_threads``: threads calling Dramatiq's
``send``), ``broker`` (redis|amqp), ``broker_url``, ``meter_url``, ``limit``,
``concurrency``, ``warmup_s``, ``duration_s`` and ``server_pids`` (the broker's
processes, whose CPU is read around the measured window). Every submitter loops until
told to stop; the count is read after ``warmup_s`` (connections made, queues declared)
and again ``duration_s`` later. Prints one line of JSON (`bench.harness.submit_counts.Window`):
tasks submitted in the window, its wall time, this process's CPU seconds in it, errors.
The arq submitter (bench/harness/arq_submit.py) prints the same from its own venv.
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

from bench.harness.submit_counts import Window

QUEUE = "bench_submit"
#: Dramatiq declares its queue without Floodgate's arguments (RabbitMQ would refuse the
#: redeclaration of ours), so it has a queue of its own.
DRAMATIQ_QUEUE = "bench_submit_dramatiq"
TASK = "bench.submit.noop"


def noop(i: int) -> None:
    """The task; never run (no worker): the bench measures submission only."""


def guarded_app(spec: dict):
    """A user's Celery project with Floodgate's two lines: one bounded queue."""
    from celery import Celery

    from celery_floodgate import install

    app = Celery("bench_submit", set_as_current=False)
    app.conf.update(broker_url=spec["broker_url"], task_default_queue=QUEUE,
                    task_routes={TASK: {"queue": QUEUE}},
                    broker_connection_retry_on_startup=True)
    install(app, limits={QUEUE: spec["limit"]}, meter_url=spec["meter_url"])
    task = app.task(name=TASK, ignore_result=True)(noop)
    return app, task


def dramatiq_actor(spec: dict):
    import dramatiq

    if spec["broker"] == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=spec["broker_url"])
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=spec["broker_url"], confirm_delivery=True)
    dramatiq.set_broker(broker)
    return dramatiq.actor(noop, actor_name="bench_submit_noop", queue_name=DRAMATIQ_QUEUE,
                          max_retries=0), broker


def in_threads(send, spec: dict) -> dict:
    n = spec["concurrency"]
    counts, errors, halt = [0] * n, {}, threading.Event()

    def loop(i: int) -> None:
        while not halt.is_set():
            try:
                send(i)
                counts[i] += 1
            except Exception as exc:  # noqa: BLE001 - counted, and reported by type
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                time.sleep(0.01)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    window = Window(lambda: sum(counts), spec.get("server_pids", []))
    time.sleep(spec["warmup_s"])
    window.open()
    time.sleep(spec["duration_s"])
    out = window.close()
    halt.set()
    for thread in threads:
        thread.join(30)
    return {**out, "errors": errors}


async def in_coroutines(spec: dict) -> dict:
    from celery_floodgate.aio import close_async, submit_async

    app, _ = guarded_app(spec)
    n = spec["concurrency"]
    counts, errors, halt = [0] * n, {}, asyncio.Event()

    async def loop(i: int) -> None:
        while not halt.is_set():
            try:
                await submit_async(app, TASK, (i,))
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
    await close_async(app)
    return {**out, "errors": errors}


def measure(spec: dict) -> dict:
    system = spec["system"]
    if system == "submit_async":
        return asyncio.run(in_coroutines(spec))
    if system == "delay_threads":
        app, task = guarded_app(spec)
        return in_threads(task.delay, spec)
    if system == "dramatiq_threads":
        actor, broker = dramatiq_actor(spec)
        try:
            return in_threads(actor.send, spec)
        finally:
            broker.close()
    raise SystemExit(f"unknown system {system!r}: submit_async, delay_threads or "
                     "dramatiq_threads (arq runs from bench/harness/arq_submit.py)")


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
