"""(c) Honest Retry-After: the same overload, but clients obey Retry-After.

A population of client threads (bench.harness.clients) whose unthrottled demand is
3x the measured capacity submits through celery_floodgate.call_with_backoff.
Measured: how long the workers sat idle while refused clients were waiting
to retry, and retries per accepted job.
"""
from __future__ import annotations

import bisect
import os
import time

from bench.harness import broker as brokers
from bench.harness.clients import Population
from bench.harness.driver import clear_runs, floodgate_app, read_runs, wait_ready
from bench.experiments.exp_b import QUEUE, _worker
from bench.harness.load import Sampler
from bench.harness.procs import run_phase
from bench.harness.producers import Producers
from bench.harness.stats import merged, percentile, rnd
from celery_floodgate import QueueFull

LIMIT = 200
BURST = 800
MAX_ATTEMPTS = 8
MAX_TOTAL_S = 30.0
THINK_S = 1.0
IDLE_TARGET = 0.02
RETRY_TARGET = 3.0


def idle_while_waiting(runs, samples, t0: float, t1: float, dt: float) -> float:
    """Seconds (sampled every dt) in [t0, t1] when the queue was empty, no task was running
    on any worker slot, and at least one refused client was waiting to retry."""
    busy = merged([(r.start, r.end) for r in runs])
    starts = [a for a, _ in busy]
    idle = 0.0
    for s in samples:
        if not (t0 <= s["t"] < t1 and s["depth"] == 0 and s["waiting"]):
            continue
        i = bisect.bisect_right(starts, s["t"]) - 1
        if i < 0 or busy[i][1] < s["t"]:
            idle += dt
    return idle


def empty_while_waiting(samples, t0: float, t1: float, dt: float) -> float:
    """Seconds (sampled) when the queue held nothing and some client was waiting."""
    return dt * sum(1 for s in samples if t0 <= s["t"] < t1 and s["depth"] == 0 and s["waiting"])


def phase_clients(params: dict) -> dict:
    app, broker = floodgate_app(), os.environ["BENCH_BROKER"]
    clear_runs()
    brokers.purge(broker, QUEUE)
    producers = Producers(app, size=8)
    send = lambda: producers.send("bench.sleep", (params["task_ms"],), QUEUE)  # noqa: E731
    n = round(params["factor"] * params["capacity"] * THINK_S)
    population = Population(send, n, THINK_S, MAX_ATTEMPTS, MAX_TOTAL_S)
    depth = brokers.Depth(broker, QUEUE)
    with _worker("clients"):
        wait_ready(app, QUEUE)
        burst_hints = PRELUDES[params["prelude"]](producers, params["task_ms"], depth)
        clear_runs()
        sampler = Sampler({"depth": depth, "waiting": lambda: population.waiting}, 0.1)
        sampler.start()
        t0 = time.time()
        population.run(params["duration_s"])
        t1 = time.time()
        samples = sampler.stop()
        runs = read_runs()
    producers.close()
    brokers.purge(broker, QUEUE)
    out = summarise(population, runs, samples, t0, t1, params["capacity"], n)
    out.update(burst_refused=len(burst_hints), burst_retry_after_p50_s=percentile(burst_hints, 50),
               burst_retry_after_max_s=max(burst_hints, default=None))
    return out


def broker_room(app, limit: int) -> int:
    """The limit less what workers may hold prefetched (counted on Redis: the guard's room)."""
    from celery_floodgate import guard_for
    from celery_floodgate.transports import broker_id

    with app.connection_for_write() as conn:
        room = guard_for(app).room_in_broker(QUEUE, broker_id(conn), limit)
    return room if os.environ["BENCH_BROKER"] == "redis" else limit


def keep_full(producers, task_ms: float, depth, limit: int, seconds: float) -> None:
    """Hold the queue just under its limit, without a refusal, so the meter learns the rate."""
    end = time.time() + seconds
    while time.time() < end:
        for _ in range(max(0, broker_room(producers.app, limit) - 5 - depth())):
            producers.send("bench.sleep", (task_ms,), QUEUE)
        time.sleep(0.05)


def burst(producers, task_ms: float, n: int) -> list[int]:
    """``n`` one-shot submissions at once (a batch job); the Retry-After of each refusal."""
    from concurrent.futures import ThreadPoolExecutor

    hints: list[int] = []

    def one(_) -> None:
        try:
            producers.send("bench.sleep", (task_ms,), QUEUE)
        except QueueFull as full:
            hints.append(full.retry_after_s)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(n)))
    return hints


def trickle_then_burst(producers, task_ms: float, depth, seconds: int = 6) -> list[int]:
    """Light traffic (1 job/s), then a burst: the meter has seen demand, not capacity."""
    for _ in range(seconds):
        producers.send("bench.sleep", (task_ms,), QUEUE)
        time.sleep(1)
    return burst(producers, task_ms, BURST)


def warm(producers, task_ms: float, depth) -> list[int]:
    keep_full(producers, task_ms, depth, LIMIT, seconds=7)
    return []


#: What the queue saw before the clients arrive; each returns Retry-Afters it was handed.
PRELUDES = {"warm": warm, "trickle": trickle_then_burst}


def summarise(population, runs, samples, t0, t1, capacity, n) -> dict:
    tally, duration = population.tally, t1 - t0
    jobs = len(tally.accepted) + len(tally.gave_up) + tally.in_flight_at_end
    retries = tally.attempts - tally.first_attempts
    idle = idle_while_waiting(runs, samples, t0, t1, 0.1)
    hints = [h for _, h in tally.hints]
    done = [r for r in runs if t0 <= r.start < t1]
    return {
        "clients": n, "think_s": THINK_S, "max_attempts": MAX_ATTEMPTS,
        "max_total_s": MAX_TOTAL_S, "duration_s": rnd(duration, 1),
        "jobs_tried": jobs, "accepted": len(tally.accepted), "gave_up": len(tally.gave_up),
        "in_flight_at_end": tally.in_flight_at_end, "attempts": tally.attempts,
        "retries": retries, "retries_per_accepted": rnd(retries / max(1, len(tally.accepted))),
        "idle_while_waiting_s": rnd(idle), "idle_fraction": rnd(idle / duration, 4),
        "queue_empty_while_waiting_s": rnd(empty_while_waiting(samples, t0, t1, 0.1), 2),
        "throughput_per_s": rnd(len(done) / duration, 1),
        "goodput_vs_capacity": rnd(len(done) / duration / capacity),
        "retry_after_p50_s": percentile(hints, 50), "retry_after_p99_s": percentile(hints, 99),
        "retry_after_max_s": max(hints, default=None),
        "hints_at_max_60s": sum(1 for h in hints if h >= 60),
        "wait_p99_s": rnd(percentile([r.wait for r in done], 99)),
        "series": {
            "samples": [(rnd(s["t"] - t0, 2), s["depth"], s["waiting"]) for s in samples[::2]],
            "hints": [(rnd(t - t0, 2), h) for t, h in tally.hints][::5],
        },
    }


def run(broker: str = "redis", capacity: float | None = None, duration_s: float = 60,
        task_ms: float = 20, factor: float = 3, prelude: str = "warm") -> dict:
    brokers.reset(broker)
    if capacity is None:  # one worker's, measured alone with a full queue
        capacity = run_phase("b.capacity", broker, f"{QUEUE}=1000000",
                             {"task_ms": task_ms, "duration_s": 20})["capacity"]
    brokers.reset(broker)
    out = run_phase("c.clients", broker, f"{QUEUE}={LIMIT}",
                    {"capacity": capacity, "duration_s": duration_s, "task_ms": task_ms,
                     "factor": factor, "prelude": prelude})
    out.update(broker=broker, prelude=prelude, capacity_per_s=rnd(capacity, 1), limit=LIMIT,
               idle_target=IDLE_TARGET, retry_target=RETRY_TARGET,
               pass_idle=out["idle_fraction"] < IDLE_TARGET,
               pass_retries=out["retries_per_accepted"] < RETRY_TARGET)
    return out
